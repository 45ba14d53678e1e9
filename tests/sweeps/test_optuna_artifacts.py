"""What a sweep shows in Optuna and optuna-dashboard: the metric's name, the description, where each trial's
W&B run is, and each trial's rollout GIF and PSNR plot as artifacts the dashboard serves."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from wsgiref.util import setup_testing_defaults

import optuna
from cvae.sweeps import artifacts as arts
from cvae.sweeps import dashboard as dash
from cvae.sweeps import queue
from cvae.sweeps.queue import open_study, requeue
from cvae.sweeps.runner import run_worker, wandb_attrs
from cvae.sweeps.spec import load_spec
from cvae.sweeps.storage import open_storage
from optuna.artifacts import get_all_artifact_meta, upload_artifact
from optuna.trial import TrialState

from cvae.schema import DESCRIPTION, RUN_DIR, RUN_ID, SAMPLE_GIF, WANDB_PATH, WANDB_URL

sys.path.insert(0, str(Path(__file__).parent))
from test_runner import BASE, write_spec  # noqa: E402

DESCRIPTION_TEXT = "Which **latent size** wins on the tiny set"


def _one_trial_spec(tmp_path: Path, dataset: Path, mode: str, **overrides):
    """A one-point grid of one epoch (validated: a rollout GIF and per-frame PSNR)."""
    settings = {"parameters": {"N_dim": {"values": [4]}}, "wandb": {"project": "test", "mode": mode},
                "description": DESCRIPTION_TEXT, "base": {"DR": str(dataset), **BASE, "num_epoch": 1, "tfr_sde": 0}}
    return load_spec(write_spec(tmp_path, dataset, **{**settings, **overrides}))


def _wsgi_get(app, path: str) -> tuple[str, bytes]:
    """GET ``path`` from a WSGI app in this process: (status line, body)."""
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING="")
    status: list[str] = []
    body = app(environ, lambda line, headers, exc_info=None: status.append(line))
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return status[0], data


def test_a_sweep_shows_its_metric_description_and_artifacts_in_the_dashboard(tiny_dataset, tmp_path,
                                                                              monkeypatch):
    spec = _one_trial_spec(tmp_path, tiny_dataset, "disabled")
    run_worker(spec)
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec))
    [trial] = study.get_trials()
    assert trial.state == TrialState.COMPLETE
    assert study.metric_names == ["val/psnr"]
    assert study.user_attrs[DESCRIPTION] == DESCRIPTION_TEXT
    assert WANDB_PATH not in trial.user_attrs  # W&B disabled: no run to point at

    folder = Path(trial.user_attrs[RUN_DIR])
    files = {name: (folder / name).read_bytes() for name in (SAMPLE_GIF, arts.PSNR_PLOT)}
    assert files[SAMPLE_GIF][:6] == b"GIF89a" and files[arts.PSNR_PLOT][:8] == b"\x89PNG\r\n\x1a\n"
    # Optuna's public API: the trial's artifacts, and their bytes in the store under output_dir/artifacts.
    metas = {m.filename: m for m in get_all_artifact_meta(trial, storage=study._storage)}  # noqa: SLF001
    assert set(metas) == set(files)
    assert metas[SAMPLE_GIF].mimetype == "image/gif" and metas[arts.PSNR_PLOT].mimetype == "image/png"
    assert queue.trial_artifacts(study, trial) == {name: m.artifact_id for name, m in metas.items()}
    for name, meta in metas.items():
        assert (spec.output_dir / "artifacts" / meta.artifact_id).read_bytes() == files[name]

    # `cvae sweep dashboard` hands optuna-dashboard the storage and that store; serve both in this process.
    import optuna_dashboard

    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: served.append((storage, kw)))
    out = io.StringIO()
    dash.serve_dashboard(spec, port=9999, out=out)
    storage, kw = served[0]
    assert str(spec.output_dir / "artifacts") in out.getvalue()
    app = optuna_dashboard.wsgi(storage, artifact_store=kw["artifact_store"])

    status, body = _wsgi_get(app, "/api/studies")
    assert status.startswith("200")
    [summary] = json.loads(body)["study_summaries"]
    status, body = _wsgi_get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200")
    detail = json.loads(body)
    assert detail["objective_names"] == ["val/psnr"]  # not "Objective 0"
    assert {"key": DESCRIPTION, "value": DESCRIPTION_TEXT} in detail["user_attrs"]
    assert detail["note"]["body"] == DESCRIPTION_TEXT
    [shown] = detail["trials"]
    listed = {a["filename"]: a for a in shown["artifacts"]}
    assert set(listed) == set(files)
    for name, artifact in listed.items():
        status, data = _wsgi_get(app, f"/artifacts/{summary['study_id']}/{shown['trial_id']}/{artifact['artifact_id']}")
        assert status.startswith("200")
        assert len(data) == len(files[name]) and data == files[name]


def test_offline_trials_name_their_local_wandb_run(tiny_dataset, tmp_path, env):
    spec = _one_trial_spec(tmp_path, tiny_dataset, "offline")
    run_worker(spec)
    [trial] = optuna.load_study(study_name=spec.name, storage=open_storage(spec)).get_trials()
    assert trial.state == TrialState.COMPLETE
    run_dir = Path(trial.user_attrs[WANDB_PATH])
    assert run_dir.is_dir() and run_dir.is_relative_to(tmp_path / "wandb")
    assert run_dir.name.startswith("offline-run-") and run_dir.name.endswith(trial.user_attrs[RUN_ID])
    assert any(run_dir.glob("*.wandb"))
    assert WANDB_URL not in trial.user_attrs


def test_online_trials_name_their_run_path_and_url():
    url = "https://wandb.ai/lab/cvae/runs/t-abc-t0"
    tracker = SimpleNamespace(run_id="t-abc-t0", run_dir=Path("/w/run-x-t-abc-t0"), url=url, path="lab/cvae/t-abc-t0")
    assert wandb_attrs(tracker, "online") == {WANDB_PATH: "lab/cvae/t-abc-t0", WANDB_URL: url}
    assert wandb_attrs(SimpleNamespace(path="lab/cvae/t-abc-t0", url=None), "online") == {WANDB_PATH: "lab/cvae/t-abc-t0"}
    assert wandb_attrs(tracker, "offline") == {WANDB_PATH: "/w/run-x-t-abc-t0"}
    assert wandb_attrs(SimpleNamespace(), "disabled") == {} and wandb_attrs(None, "offline") == {}


def test_an_existing_study_gets_its_metric_name_and_the_description_follows_the_spec(tiny_dataset, tmp_path):
    spec = _one_trial_spec(tmp_path, tiny_dataset, "disabled")
    storage = open_storage(spec)
    older = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize")
    assert older.metric_names is None  # a study made before metric names were set
    study = open_study(spec, storage, fill_queue=True)
    assert study.metric_names == ["val/psnr"]
    assert study.user_attrs[DESCRIPTION] == DESCRIPTION_TEXT

    from optuna_dashboard import get_note, save_note

    assert get_note(study) == DESCRIPTION_TEXT
    edited = _one_trial_spec(tmp_path, tiny_dataset, "disabled", description="second take")
    study = open_study(edited, storage, fill_queue=True)
    assert study.user_attrs[DESCRIPTION] == "second take" and get_note(study) == "second take"
    save_note(study, "notes written in the dashboard")
    study = open_study(_one_trial_spec(tmp_path, tiny_dataset, "disabled", description="third"), storage,
                       fill_queue=True)
    assert study.user_attrs[DESCRIPTION] == "third"
    assert get_note(study) == "notes written in the dashboard"  # a hand-written note is kept
    assert not arts.describe_study(study, "third")  # unchanged: nothing written


def test_a_retry_does_not_inherit_its_failed_trials_artifacts(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    gif = tmp_path / SAMPLE_GIF
    gif.write_bytes(b"GIF89a-first")
    assert arts.upload_trial_files(tmp_path, trial, [gif, tmp_path / "missing.png"]) == [SAMPLE_GIF]
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[0]
    assert [m.filename for m in get_all_artifact_meta(failed, storage=study._storage)] == [SAMPLE_GIF]  # noqa: SLF001
    requeue(study, failed)
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING
    assert get_all_artifact_meta(retry, storage=study._storage) == []  # noqa: SLF001
    assert retry.system_attrs["failed_trial"] == 0  # the rest of the chain's attributes still travel


def test_a_failed_upload_is_one_warning_and_the_trial_goes_on(tmp_path, monkeypatch, caplog):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    png, gif = tmp_path / arts.PSNR_PLOT, tmp_path / SAMPLE_GIF
    png.write_bytes(b"\x89PNG")
    gif.write_bytes(b"GIF89a")

    def broken(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(arts, "upload_artifact", broken)
    with caplog.at_level(logging.WARNING, logger="cvae"):
        assert arts.upload_trial_files(tmp_path, trial, [gif, png]) == []
    [record] = [r for r in caplog.records if r.name == "cvae"]  # one line for both files
    message = record.getMessage()
    assert message.startswith(f"trial {trial.number}: artifacts not uploaded: sample.gif (OSError: ")
    assert "psnr_per_frame.png (OSError: " in message and "No space left" in message
    study.tell(trial, 1.0)
    assert study.trials[0].state == TrialState.COMPLETE
    # A real upload after the fault works (the function itself is Optuna's).
    monkeypatch.setattr(arts, "upload_artifact", upload_artifact)
    again = study.ask()
    assert arts.upload_trial_files(tmp_path, again, [png]) == [arts.PSNR_PLOT]


def test_a_trials_psnr_plot_is_the_analysis_figure_of_its_epoch(tmp_path: Path) -> None:
    """One per-frame plot: a trial's psnr_per_frame.png is `cvae analysis figures`' psnr_per_frame, drawn from
    the epoch result in memory (SSIM panel, baselines, the run labelled by its rounded parameters)."""
    from cvae.analysis import figdata
    from cvae.analysis.load import one_run
    from cvae.sweeps.runner import _psnr_plot
    from PIL import Image

    n = 23
    curves = {"psnr": [20.0 + i / 10 for i in range(n)], "ssim": [0.6 + i / 100 for i in range(n)]}
    baselines = {name: [base] * n for name, base in (("copy_first", 19.0), ("mean_frame", 18.0), ("copy_prev", 30.0))}
    baselines |= {f"ssim_{name}": [0.5] * n for name in ("copy_first", "mean_frame", "copy_prev")}
    last = SimpleNamespace(epoch=2, val_psnr_per_frame=curves["psnr"], val_curves=curves, baseline_frames=baselines)
    trial = SimpleNamespace(number=3, params={"lr": 0.0022123402382, "kl_anneal_type": "none"})
    (tmp_path / "t0003").mkdir()
    path = _psnr_plot(SimpleNamespace(name="s"), trial, tmp_path / "t0003", last)
    assert path == tmp_path / "t0003" / arts.PSNR_PLOT
    with Image.open(path) as png:
        assert png.width > 1.5 * png.height  # two panels side by side: PSNR and SSIM
    frame = figdata.psnr_per_frame(one_run("t0003", 2, curves, baselines, params=trial.params))
    assert set(frame["panel"]) == {"PSNR", "SSIM"}
    model = frame[frame["kind"] == "metric"]
    assert set(model["line"]) == {"lr=0.00221, kl_anneal_type=none: 21.10 dB average PSNR, 0.710 SSIM"}
    assert list(model[model["panel"] == "PSNR"]["value"]) == curves["psnr"]
    assert {line.split(":")[0] for line in frame[frame["kind"] == "baseline"]["line"]} >= {"copy first frame"}
