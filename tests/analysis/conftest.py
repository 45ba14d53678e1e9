"""Fixtures: one real sweep, recorded the way `cvae sweep run` records it.

- ``sweep_records`` (session): a grid sweep on the tiny dataset, run in-process by the real worker loop with
  W&B offline: named teacher-forcing choices TF1/TF3 x KL annealing cyclical/none x 2 replicates, 3 epochs
  of half the training clips (the lab's ``partial``), a 24-frame validation rollout. Returns a ``SweepRecords`` with the output folder, the SQLite storage URL,
  the study name and the W&B folder. Read-only: copy it before changing anything. Made once per test run:
  under pytest-xdist the first worker that needs it runs the sweep and the others wait for it (a file lock in
  the run's shared temp folder) instead of running the same sweep again.
- ``tpe_records`` (session): a TPE sweep's records, written without training by
  :func:`tpe_records.write_tpe_records` (10 trials, a log-uniform ``lr``); read-only too.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from tpe_records import TpeRecords, write_tpe_records


@dataclass(frozen=True)
class SweepRecords:
    runs: Path
    storage: str
    study: str
    wandb_dir: Path
    spec: Path


SPEC = {
    "name": "fixture",
    "method": "grid",
    "metric": {"name": "val/psnr", "goal": "maximize"},
    "parameters": {
        "tf": {"values": ["TF1", "TF3"], "sets": {"TF1": {"tfr": 1.0, "tfr_sde": 0, "tfr_d_step": 0.5},
                                                 "TF3": {"tfr": 0.0, "tfr_sde": 0, "tfr_d_step": 0.0}}},
        "kl_anneal_type": {"values": ["cyclical", "none"]},
    },
    "replicates": 2,
    "base": {"num_epoch": 3, "train_vi_len": 4, "batch_size": 4, "val_vi_len": 24, "F_dim": 16, "L_dim": 8,
             "N_dim": 4, "D_out_dim": 16, "num_workers": 1, "kl_anneal_cycle": 2, "kl_anneal_ratio": 0.5,
             "partial": 0.5, "val_eval_every": 1},  # every epoch evaluated in full: every source carries it
    "workers": 1,
    "wandb": {"project": "fixture", "mode": "offline"},
}


@pytest.fixture(scope="session")
def sweep_records(tiny_dataset, tmp_path_factory, worker_id) -> SweepRecords:
    from cvae.sweeps.spec import load_spec

    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "sweep-records"
    with FileLock(f"{root}.lock"):
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed half-way
            root.mkdir()
            _run_sweep(root, tiny_dataset)
            (root / "done").touch()
    spec = load_spec(root / "spec.yaml")
    return SweepRecords(root / "runs", spec.storage, spec.name, root / "wandb", root / "spec.yaml")


def _run_sweep(root: Path, tiny_dataset: Path) -> None:
    from cvae.sweeps.queue import open_study
    from cvae.sweeps.runner import run_worker
    from cvae.sweeps.spec import load_spec
    from cvae.sweeps.storage import open_storage

    spec_dict = {**SPEC, "base": {**SPEC["base"], "DR": str(tiny_dataset)}, "output_dir": str(root / "runs"),
                 "storage": f"sqlite:///{root / 'study.db'}"}
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict, sort_keys=False))
    old = {k: os.environ.get(k) for k in ("WANDB_DIR", "WANDB_MODE")}
    os.environ.update(WANDB_DIR=str(root), WANDB_MODE="offline")
    try:
        spec = load_spec(spec_path)
        open_study(spec, open_storage(spec), fill_queue=True)
        (root / "runs").mkdir(exist_ok=True)
        (root / "runs" / "spec.yaml").write_text(spec_path.read_text())  # as `cvae sweep run` copies it
        stats = run_worker(spec)  # torch's threads (fit() restores the process's count afterwards)
        assert stats.complete == 8, stats
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def tpe_records(tmp_path_factory) -> TpeRecords:
    """:func:`write_tpe_records` once (read-only: copy it before changing anything)."""
    return write_tpe_records(tmp_path_factory.mktemp("tpe-records"))
