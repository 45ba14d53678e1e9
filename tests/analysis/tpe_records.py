"""A TPE sweep's records as `cvae sweep run` leaves them, written without training (seconds): the analysis's tests
of a sampled search space (``tpe_records`` in conftest.py; :func:`write_tpe_records` for other sizes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

TPE_SPEC = {
    "name": "tpe-fixture",
    "method": "tpe",
    "metric": {"name": "val/psnr", "goal": "maximize"},
    "run_cap": 10,
    "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 0.0002, "max": 0.005},
        "tfr": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        "N_dim": {"values": [4, 8, 16]},
        "kl_anneal_type": {"values": ["cyclical", "monotonic", "none"]},
        "optim": {"values": ["Adam", "AdamW"]},  # the sampler gives every trial Adam (enqueued): one value
        "batch_size": {"value": 4},  # a constant: in each trial's params, not swept
    },
    "sampler": {"n_startup_trials": 4},
    "base": {"num_epoch": 4, "train_vi_len": 4, "val_vi_len": 12, "F_dim": 16, "L_dim": 8, "D_out_dim": 16},
}
TPE_PRUNED = 6
"""The trial of the TPE fixture pruned after its first epoch."""


@dataclass(frozen=True)
class TpeRecords:
    runs: Path
    storage: str
    study: str


def tpe_psnr(lr: float, tfr: float, n_dim: int, epoch: int) -> float:
    """The TPE fixture's validation PSNR: best near lr = 0.002, better with teacher forcing, rising per epoch."""
    return 20.0 + 3.0 * math.exp(-((math.log10(lr) + 2.7) ** 2) / 0.2) + tfr + 0.05 * n_dim + 0.5 * epoch


def write_tpe_records(root: Path, n_trials: int = 10) -> TpeRecords:
    """A TPE sweep of ``n_trials`` over :data:`TPE_SPEC` as `cvae sweep run` records it (``spec.yaml``, per trial
    ``config.yaml``, ``metrics.csv``, ``psnr_per_frame.csv``, ``trial.json``; the Optuna study in SQLite), its
    parameters sampled by Optuna's TPE sampler as the sweep asks them, its metric :func:`tpe_psnr`: no training."""
    import optuna
    from cvae.core.records import CsvLog, write_config

    from cvae.schema import SPEC, TrialRecord

    runs = root / "runs"
    runs.mkdir(parents=True)
    (runs / "spec.yaml").write_text(yaml.safe_dump(TPE_SPEC, sort_keys=False))
    storage = f"sqlite:///{root / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=TPE_SPEC["name"], storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(n_startup_trials=4, seed=0))
    study.set_user_attr(SPEC, {"metric": "val/psnr", "goal": "maximize", "method": "tpe"})
    spec_params = TPE_SPEC["parameters"]
    columns = ("epoch", "train_loss", "val_psnr", "val_psnr_copy_first", "val_psnr_mean_frame", "val_psnr_copy_prev",
               "val_psnr_margin", "beta", "tfr", "lr", "epoch_seconds")
    for i in range(n_trials):
        study.enqueue_trial({"optim": "Adam"})
        trial = study.ask()
        lr_spec = spec_params["lr"]
        params = {"lr": trial.suggest_float("lr", lr_spec["min"], lr_spec["max"], log=True),
                  "tfr": trial.suggest_float("tfr", 0.0, 1.0),
                  "N_dim": trial.suggest_categorical("N_dim", spec_params["N_dim"]["values"]),
                  "kl_anneal_type": trial.suggest_categorical("kl_anneal_type",
                                                              spec_params["kl_anneal_type"]["values"]),
                  "optim": trial.suggest_categorical("optim", spec_params["optim"]["values"]),
                  "batch_size": 4}
        folder = runs / f"t{i:04d}"
        folder.mkdir()
        write_config({**TPE_SPEC["base"], **params, "save_root": str(folder)}, folder / "config.yaml")
        n_epochs = 1 if i == TPE_PRUNED else TPE_SPEC["base"]["num_epoch"]
        psnr = [tpe_psnr(params["lr"], params["tfr"], params["N_dim"], e) for e in range(n_epochs)]
        CsvLog(folder / "metrics.csv", columns).append([
            {"epoch": e, "train_loss": 1.0 / (e + 1), "val_psnr": p, "val_psnr_copy_first": 21.0,
             "val_psnr_mean_frame": 20.5, "val_psnr_copy_prev": 30.0, "val_psnr_margin": p - 21.0, "beta": 1.0,
             "tfr": params["tfr"], "lr": params["lr"], "epoch_seconds": 2.5} for e, p in enumerate(psnr)])
        CsvLog(folder / "psnr_per_frame.csv", ("epoch", "frame", "psnr")).append(
            [{"epoch": e, "frame": f, "psnr": p - 0.1 * f} for e, p in enumerate(psnr) for f in range(1, 12)])
        for e, p in enumerate(psnr):
            trial.report(p, e)
        best = max(range(n_epochs), key=psnr.__getitem__)
        state = "pruned" if i == TPE_PRUNED else "complete"
        TrialRecord(study=TPE_SPEC["name"], trial_number=trial.number, run_key=trial.number, params=params,
                    state=state, value=psnr[best], best_epoch=best, epochs_done=n_epochs, duration_s=2.5 * n_epochs,
                    config_id=f"c{i}", val_psnr=psnr[best], val_psnr_copy_first=21.0).write(folder / "trial.json")
        if state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, psnr[best])
    return TpeRecords(runs, storage, TPE_SPEC["name"])


