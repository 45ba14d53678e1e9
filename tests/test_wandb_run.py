"""``cvae.tracking.WandbRun``: real offline W&B runs fed fake epoch results, read back from disk with no login.

Nothing here mocks wandb. Each test points ``WANDB_DIR`` at its own temp folder; the online-failure test
runs in a subprocess against a closed port on 127.0.0.1, so nothing leaves the machine. ``cvae train
--wandb`` end to end is tests/test_tracking.py; the reader's edges are tests/test_wandb_offline.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from cvae.schema import WANDB_KEYS
from cvae.tracking import MODES, SUMMARIES, TrackingError, WandbRun, resolve_wandb_mode
from cvae.wandb_offline import OfflineRun, find_offline_runs, read_offline_run, read_offline_runs_merged

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {"lr": 1e-3, "batch_size": 2, "kl_anneal_type": "Cyclical", "param/lr": 1e-3, "study": "s1",
          "trial": 4, "nested": {"a": 1, "b": [1, 2]}}
FRAMES = 6


@pytest.fixture
def save_root(tmp_path: Path) -> Path:
    """The training run's folder (``EpochResult.save_root``): baselines, checkpoints, the best rollout."""
    folder = tmp_path / "run"
    folder.mkdir()
    return folder


def metrics_of(epoch: int, val_psnr: float) -> dict[str, float]:
    """A distinct value for every metrics column W&B logs (many digits: the JSON must keep them all)."""
    values = {col: (i + 1) / 7 / (epoch + 1) + 0.123456789012345 for i, col in enumerate(WANDB_KEYS)}
    values["val_psnr"] = val_psnr
    return values


def frames_of(val_psnr: float) -> list[float]:
    """A per-frame PSNR curve, falling over the rollout, whose mean is ``val_psnr``."""
    return [val_psnr + 1.25 - 0.5 * i for i in range(FRAMES)]


def video_of(epoch: int) -> torch.Tensor:
    """A (T, 3, H, W) float rollout in [0, 1], different for every epoch."""
    return torch.rand(4, 3, 8, 16, generator=torch.Generator().manual_seed(epoch))


def epoch_result(epoch: int, val_psnr: float, save_root: Path, *, per_frame: list | None = None,
                 is_best: bool = False, video: object = None, **overrides) -> types.SimpleNamespace:
    """A duck-typed :class:`cvae.core.trainer.EpochResult` with what WandbRun reads."""
    fields = {**metrics_of(epoch, val_psnr), "epoch": epoch, "save_root": str(save_root),
              "val_psnr_per_frame": frames_of(val_psnr) if per_frame is None else per_frame,
              "val_video": video, "is_best": is_best}
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


def wandb_run(run_id: str, **overrides) -> WandbRun:
    kwargs = dict(project="cvae-test", entity=None, group="study-a", name=f"study-a-{run_id}", run_id=run_id,
                  config=CONFIG, tags=["lr=0.001", "smoke"], mode="offline", job_type="trial")
    kwargs.update(overrides)
    return WandbRun(**kwargs)


def metric_rows(run: OfflineRun) -> list[dict]:
    """History rows of log_epoch calls (the final media row has no train/loss)."""
    return [row for row in run.history if "train/loss" in row]


def media_rows(run: OfflineRun) -> list[dict]:
    """The best epoch's media logged once more by finish: the row with the per-frame chart."""
    return [row for row in run.history if "val/psnr_per_frame_plot_table" in row]


def stored_json(run: OfflineRun, value: dict) -> dict:
    """A logged W&B table (its JSON under one of the run folders' files/)."""
    for folder in run.paths:
        path = folder / "files" / value["path"]
        if path.is_file():
            return json.loads(path.read_text())
    raise AssertionError(f"{value['path']} not found in {run.paths}")


def model_artifacts(run: OfflineRun) -> list[dict]:
    return [a for a in run.artifacts if a["type"] == "model"]


# -- resolve_wandb_mode ---------------------------------------------------------------------------------------
@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_auto_without_credentials_is_offline(no_credentials: Path) -> None:
    assert resolve_wandb_mode("auto") == "offline"


def test_auto_with_api_key_is_online(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_wandb_mode("auto") == "online"


def test_auto_with_identity_token_file_is_online(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_IDENTITY_TOKEN_FILE", str(no_credentials / "token"))
    assert resolve_wandb_mode("auto") == "online"


def test_auto_with_netrc_entry_is_online(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = no_credentials / ".netrc"
    netrc.write_text("machine example.org\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode("auto") == "offline"  # not W&B's host
    netrc.write_text(netrc.read_text() + "machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # a private server: its own entry
    assert resolve_wandb_mode("auto") == "offline"


def test_wandb_mode_env_wins_over_auto(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old name for offline
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "run")  # wandb's old name for online
    assert resolve_wandb_mode("auto") == "online"


@pytest.mark.parametrize("mode", MODES)
def test_explicit_modes_pass_through(mode: str, no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled" if mode != "disabled" else "online")
    assert resolve_wandb_mode(mode) == mode
    assert resolve_wandb_mode(mode.upper()) == mode


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="sometimes"):
        resolve_wandb_mode("sometimes")


def test_importing_the_modules_does_not_import_wandb() -> None:
    code = ("import sys, cvae.tracking as t, cvae.wandb_offline, cvae.sweeps.tracking; "
            "t.resolve_wandb_mode('offline'); print('wandb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- a run ----------------------------------------------------------------------------------------------------
def test_run_round_trip(wandb_dir: Path, save_root: Path) -> None:
    # Epoch 1 is the best; epoch 2, the last, is worse: the summary and the final media must show epoch 1.
    (save_root / "best.ckpt").write_bytes(b"weights of epoch 1")
    (save_root / "last.ckpt").write_bytes(b"weights of epoch 2")
    results = [epoch_result(0, 17.5, save_root, is_best=True, video=video_of(0)),
               epoch_result(1, 20.875, save_root, is_best=True, video=video_of(1)),
               epoch_result(2, 19.75, save_root, is_best=False, video=video_of(2))]
    t = wandb_run("trial-0001", notes="first trial")
    assert t.run_id == "trial-0001" and not t.finished
    assert t.run_dir is not None and t.run_dir.parent == wandb_dir / "wandb"
    assert t.url is None
    assert t.path.split("/")[-2:] == ["cvae-test", "trial-0001"]
    for result in results:
        t.log_epoch(result)
    best_gif = (save_root / "best_rollout.gif").read_bytes()
    t.finish(state="complete", summary={"epochs": 3, "trial": 4})
    assert t.finished

    folders = find_offline_runs(wandb_dir)
    assert folders == [t.run_dir] and folders[0].name.startswith("offline-run-")
    run = read_offline_run(folders[0])
    assert run.run_id == "trial-0001"
    assert run.path == t.run_dir
    assert (run.name, run.group, run.job_type) == ("study-a-trial-0001", "study-a", "trial")
    assert run.tags == ("lr=0.001", "smoke")
    assert run.config == CONFIG
    assert run.exit_code == 0
    assert run.start_time is not None and abs(run.start_time - time.time()) < 300

    rows = metric_rows(run)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    for row, result in zip(rows, results, strict=True):
        for col, key in WANDB_KEYS.items():
            assert row[key] == getattr(result, col), key  # exact: W&B's JSON keeps every digit of a float
    assert [row["_step"] for row in rows] == [0, 1, 2]
    # Every validation logs its table; only the best epochs so far their rollout.
    assert all(row["val/psnr_per_frame"]["_type"] == "table-file" for row in rows)
    assert ["val/rollout" in row for row in rows] == [True, True, False]
    first = stored_json(run, rows[0]["val/psnr_per_frame"])
    assert first["columns"] == ["frame", "psnr"]  # no baselines.csv: the model's column only
    assert first["data"] == [[i + 1, v] for i, v in enumerate(results[0].val_psnr_per_frame)]

    # Summaries follow each metric's goal (define_metric), and the rest keep W&B's last value.
    for key, goal in SUMMARIES.items():
        assert run.metrics[key] == {"step_metric": "epoch", "summary": [goal]}, key
    assert run.metrics["*"]["step_metric"] == "epoch"
    assert run.summary["val/psnr"] == {"max": 20.875}
    assert run.summary["train/loss"] == {"min": min(r.train_loss for r in results)}
    assert run.summary["val/loss"] == {"min": min(r.val_loss for r in results)}
    assert run.summary["lr"] == results[-1].lr
    assert run.summary["state"] == "complete"
    assert "fail_reason" not in run.summary
    assert run.summary["best_epoch"] == 1 and run.summary["epoch"] == 2  # best, and the last epoch run
    assert run.summary["epochs"] == 3 and run.summary["trial"] == 4

    # The last media row: pinned to the best epoch; its table, chart and rollout are that epoch's.
    (media,) = media_rows(run)
    assert media["epoch"] == 1 and media == run.history[-1]
    assert media["val/psnr_per_frame"]["nrows"] == FRAMES
    table = stored_json(run, media["val/psnr_per_frame"])
    assert table["data"] == [[i + 1, v] for i, v in enumerate(results[1].val_psnr_per_frame)]
    assert media["val/psnr_per_frame"]["path"] == rows[1]["val/psnr_per_frame"]["path"]
    assert "val/psnr_per_frame_plot_table" in media
    video = run.path / "files" / media["val/rollout"]["path"]
    assert media["val/rollout"]["_type"] == "video-file"
    assert video.is_file() and video.suffix == ".gif" and video.relative_to(run.path / "files" / "media")
    assert video.read_bytes() == best_gif
    assert video.read_bytes() != (run.path / "files" / rows[0]["val/rollout"]["path"]).read_bytes()
    with Image.open(video) as gif:
        assert gif.n_frames == 4 and gif.size == (16, 8)
    assert run.summary["val/rollout"]["path"] == media["val/rollout"]["path"]
    assert run.summary["val/psnr_per_frame"]["path"] == media["val/psnr_per_frame"]["path"]

    # The checkpoints: versions of model-<run id> as they were written: best.ckpt at each new best epoch, with
    # 'best' and its PSNR, then last.ckpt at the end (its epoch was not the best).
    models = model_artifacts(run)
    assert [a["name"] for a in models] == ["model-trial-0001"] * 3
    first_best, best, last = models
    assert first_best["metadata"]["epoch"] == 0 and {"best", "latest"} <= set(first_best["aliases"])
    assert "best" in best["aliases"] and best["metadata"] == {"file": "best.ckpt", "epoch": 1, "val/psnr": 20.875}
    assert "latest" in last["aliases"] and "best" not in last["aliases"]
    assert last["metadata"] == {"file": "last.ckpt", "epoch": 2}


def test_the_per_frame_table_and_chart_carry_the_baselines(wandb_dir: Path, save_root: Path) -> None:
    psnr = [30.0 - 0.25 * i for i in range(20)]
    refs = {"copy_first": [28.0 - 0.5 * i for i in range(20)], "mean_frame": [22.0] * 20, "copy_prev": [37.0] * 20}
    t = wandb_run("trial-refs")  # the baselines come with each epoch's result, as the trainer gives them
    t.log_epoch(epoch_result(0, 25.0, save_root, per_frame=psnr, is_best=True, baseline_frames=refs))
    t.log_epoch(epoch_result(1, 24.0, save_root, per_frame=psnr[:10], baseline_frames=refs))  # shorter: none
    t.finish(state="complete")
    run = read_offline_run(t.run_dir)
    rows = metric_rows(run)
    stored = stored_json(run, rows[0]["val/psnr_per_frame"])
    assert stored["columns"] == ["frame", "psnr", "psnr_copy_first", "psnr_mean_frame", "psnr_copy_prev"]
    assert stored["data"] == [[i + 1, psnr[i], refs["copy_first"][i], 22.0, 37.0] for i in range(20)]
    shorter = stored_json(run, rows[1]["val/psnr_per_frame"])
    assert shorter["columns"] == ["frame", "psnr"] and len(shorter["data"]) == 10
    # The chart: the model beside copy-first and the mean frame (copy-previous, an oracle, only in the table).
    (media,) = media_rows(run)
    assert stored_json(run, media["val/psnr_per_frame"]) == stored
    chart = stored_json(run, media["val/psnr_per_frame_plot_table"])
    keys = {row[chart["columns"].index("lineKey")] for row in chart["data"]}
    assert keys == {"model", "copy first frame", "mean frame (oracle)"}


def test_the_evaluation_is_logged_with_its_curves_latents_and_summaries(wandb_dir: Path, save_root: Path) -> None:
    psnr = [30.0 - 0.25 * i for i in range(6)]
    curves = {"psnr": psnr, "ssim": [0.9 - 0.01 * i for i in range(6)], "psnr_best_of_k": [31.0] * 6,
              "psnr_no_prev": [25.0] * 6}
    latents = [{"channel": c, "kl": 0.5 * c, "mean_var": 0.02 * c, "active": int(c > 0)} for c in range(3)]
    later = [{**c, "active": 0} for c in latents]
    refs = {**{name: [v] * 6 for name, v in (("copy_first", 20.0), ("mean_frame", 22.0), ("copy_prev", 37.0))},
            **{f"ssim_{name}": [v] * 6 for name, v in (("copy_first", 0.5), ("mean_frame", 0.6), ("copy_prev", 0.95))}}
    t = wandb_run("trial-eval")
    t.log_epoch(epoch_result(0, 25.0, save_root, per_frame=psnr, is_best=True, val_curves=curves,
                             val_latents=latents, val_ssim=0.85, val_psnr_no_prev=22.5, val_active_units=2.0,
                             val_psnr_z0=24.0, baseline_frames=refs))
    t.log_epoch(epoch_result(1, 24.0, save_root, per_frame=psnr, val_curves=curves, val_latents=later,
                             val_ssim=0.88, val_psnr_no_prev=23.9, val_active_units=0.0, val_psnr_z0=24.5,
                             baseline_frames=refs))
    t.finish(state="complete")
    run = read_offline_run(t.run_dir)
    rows = metric_rows(run)
    table = stored_json(run, rows[0]["val/psnr_per_frame"])
    assert table["columns"] == ["frame", "psnr", "ssim", "psnr_best_of_k", "psnr_no_prev", "psnr_copy_first",
                                "psnr_mean_frame", "psnr_copy_prev", "ssim_copy_first", "ssim_mean_frame",
                                "ssim_copy_prev"]
    assert table["data"][2] == [3, psnr[2], curves["ssim"][2], 31.0, 25.0, 20.0, 22.0, 37.0, 0.5, 0.6, 0.95]
    assert stored_json(run, rows[1]["val/latents"])["data"] == [[c["channel"], c["kl"], c["mean_var"], c["active"]]
                                                                for c in later]
    assert run.summary["val/ssim"] == {"max": 0.88}  # a score: its best epoch
    # A diagnostic: its value at the best epoch (0, by val/psnr), where best.ckpt and the media are.
    assert run.summary["val/psnr_no_prev"] == 22.5 and run.summary["val/active_units"] == 2.0
    assert run.summary["val/psnr_z0"] == 24.0
    (media,) = media_rows(run)
    assert stored_json(run, media["val/latents"])["data"][1][3] == 1  # the best epoch's posterior, not the last
    assert run.summary["val/latents"]["path"] == media["val/latents"]["path"]


def test_relogging_an_epoch_and_finishing_twice_do_not_raise(wandb_dir: Path, save_root: Path) -> None:
    t = wandb_run("trial-relog")
    t.log_epoch(epoch_result(0, 20.0, save_root, is_best=True))
    t.log_epoch(epoch_result(1, 19.0, save_root))
    t.log_epoch(epoch_result(1, 19.0, save_root))  # a resumed run repeating its crashed epoch
    t.finish(state="pruned", summary={"epochs": 2}, reason="pruned at epoch 1")
    t.finish(state="failed", summary={"epochs": 99})  # no-op
    t.log_epoch(epoch_result(2, 30.0, save_root, is_best=True))  # after finish: ignored
    run = read_offline_run(t.run_dir)
    assert [row["epoch"] for row in metric_rows(run)] == [0, 1, 1]
    assert [row["epoch"] for row in media_rows(run)] == [0]
    assert run.exit_code == 0  # pruned is a normal end
    assert run.summary["state"] == "pruned" and run.summary["epochs"] == 2
    assert run.summary["fail_reason"] == "pruned at epoch 1"
    assert run.summary["epoch"] == 1 and run.summary["best_epoch"] == 0
    assert run.summary["val/psnr"] == {"max": 20.0}


def test_failed_state_exits_1_with_reason(wandb_dir: Path, save_root: Path) -> None:
    nan = float("nan")
    t = wandb_run("trial-fail")
    t.log_epoch(epoch_result(0, 18.0, save_root, is_best=True))
    # The epoch that diverged: its NaN scalars are left out (a gap in the charts), a NaN curve gets no table.
    diverged = {col: nan for col in WANDB_KEYS if col != "val_psnr"}
    t.log_epoch(epoch_result(1, nan, save_root, per_frame=[nan] * FRAMES, **diverged))
    t.finish(state="failed", summary={"epochs": 2}, reason="diverged: loss is nan")
    run = read_offline_run(t.run_dir)
    assert run.exit_code == 1
    assert run.summary["state"] == "failed"
    assert run.summary["fail_reason"] == "diverged: loss is nan"
    rows = [row for row in run.history if "val/psnr_per_frame_plot_table" not in row]  # not the final media row
    assert [row["epoch"] for row in rows] == [0, 1]
    assert "train/loss" not in rows[1] and "val/psnr" not in rows[1]
    assert "val/psnr_per_frame" in rows[0] and "val/psnr_per_frame" not in rows[1]
    assert run.summary["best_epoch"] == 0 and run.summary["epoch"] == 1
    (media,) = media_rows(run)
    assert media["epoch"] == 0  # the best epoch's media, not the diverged one's


def test_a_diverged_epoch_does_not_replace_the_best_summaries(wandb_dir: Path, save_root: Path) -> None:
    nan = float("nan")
    t = wandb_run("trial-nan")
    t.log_epoch(epoch_result(0, 18.0, save_root, is_best=True))
    t.log_epoch(epoch_result(1, nan, save_root, **{col: nan for col in WANDB_KEYS if col != "val_psnr"}))
    t.finish(state="failed", reason="diverged: loss is nan")
    run = read_offline_run(t.run_dir)
    assert run.summary["val/psnr"] == {"max": 18.0}
    assert run.summary["train/loss"] == {"min": metrics_of(0, 18.0)["train_loss"]}


def test_bad_media_are_warnings_and_the_scalars_still_go(wandb_dir: Path, save_root: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    t = wandb_run("trial-badmedia")
    with caplog.at_level(logging.WARNING, logger="cvae"):
        # A per-frame curve that is not numbers: neither table nor rollout, the scalars still logged.
        t.log_epoch(epoch_result(0, 15.0, save_root, per_frame=[1.0, "not a number"], is_best=True,
                                 video=video_of(0)))
        # A video that is not (T, 3, H, W): the table is logged, the rollout is not.
        t.log_epoch(epoch_result(1, 16.0, save_root, is_best=True, video=torch.zeros(2, 3)))
        t.finish(state="complete", summary={"epochs": 2})
    messages = [r.getMessage() for r in caplog.records if r.name == "cvae"]
    assert any("trial-badmedia" in m and "epoch 0 media not logged" in m for m in messages), messages
    assert any("trial-badmedia" in m and "epoch 1 media not logged" in m for m in messages), messages
    run = read_offline_run(t.run_dir)
    assert run.exit_code == 0 and run.summary["state"] == "complete"
    rows = metric_rows(run)
    assert [row["val/psnr"] for row in rows] == [15.0, 16.0]
    assert "val/psnr_per_frame" not in rows[0] and "val/psnr_per_frame" in rows[1]
    assert not any("val/rollout" in row for row in run.history)
    (media,) = media_rows(run)
    assert media["epoch"] == 1 and "val/rollout" not in media
    assert stored_json(run, media["val/psnr_per_frame"])["data"][0][1] == frames_of(16.0)[0]


def test_model_artifacts(wandb_dir: Path, save_root: Path) -> None:
    # The best epoch is the last: one upload, best.ckpt with both aliases.
    (save_root / "best.ckpt").write_bytes(b"best")
    (save_root / "last.ckpt").write_bytes(b"best")
    t = wandb_run("trial-model")
    t.log_epoch(epoch_result(0, 18.0, save_root, is_best=True))
    t.log_epoch(epoch_result(1, 19.0, save_root, is_best=True))
    t.finish(state="complete")
    models = model_artifacts(read_offline_run(t.run_dir))
    assert {m["name"] for m in models} == {"model-trial-model"}
    assert all({"best", "latest"} <= set(m["aliases"]) for m in models)  # one version per new best
    assert [m["metadata"] for m in models] == [{"file": "best.ckpt", "epoch": 0, "val/psnr": 18.0},
                                               {"file": "best.ckpt", "epoch": 1, "val/psnr": 19.0}]

    # log_model="all": last.ckpt at every epoch (W&B Lightning's log_model="all"), 'best' on the best ones.
    every = wandb_run("trial-every", log_model="all")
    for epoch, psnr in enumerate((18.0, 17.0, 19.0)):
        every.log_epoch(epoch_result(epoch, psnr, save_root, is_best=epoch != 1))
    every.finish(state="complete")
    versions = model_artifacts(read_offline_run(every.run_dir))
    assert [(v["metadata"]["file"], v["metadata"]["epoch"]) for v in versions] == [("last.ckpt", e) for e in range(3)]
    assert [sorted(v["aliases"]) for v in versions] == [["best", "latest"], ["latest"], ["best", "latest"]]

    # log_model=False: the checkpoints stay on disk only.
    off = wandb_run("trial-nomodel", log_model=False)
    off.log_epoch(epoch_result(0, 18.0, save_root, is_best=True))
    off.finish(state="complete")
    off_run = read_offline_run(off.run_dir)
    assert off_run.exit_code == 0 and model_artifacts(off_run) == []

    # No checkpoints in save_root: nothing to upload, and no error.
    empty = save_root.parent / "empty"
    empty.mkdir()
    bare = wandb_run("trial-nockpt")
    bare.log_epoch(epoch_result(0, 18.0, empty, is_best=True))
    bare.finish(state="complete")
    bare_run = read_offline_run(bare.run_dir)
    assert bare_run.exit_code == 0 and model_artifacts(bare_run) == []


def test_a_new_attempt_closes_an_unfinished_one(wandb_dir: Path, save_root: Path) -> None:
    stale = wandb_run("trial-stale")
    stale.log_epoch(epoch_result(0, 18.0, save_root))
    retry = wandb_run("trial-stale")  # wandb refuses a second live run with one id; this must not
    assert stale.finished and not retry.finished
    retry.log_epoch(epoch_result(0, 18.5, save_root))
    retry.finish(state="complete")
    first, second = (read_offline_run(f) for f in find_offline_runs(wandb_dir))
    assert first.exit_code == 1 and first.summary["state"] == "failed"
    assert first.summary["fail_reason"] == "superseded by a new attempt"
    assert second.exit_code == 0 and second.summary["state"] == "complete"


# -- resume ---------------------------------------------------------------------------------------------------
def test_resumed_run_merges_into_one(wandb_dir: Path, save_root: Path) -> None:
    (save_root / "best.ckpt").write_bytes(b"best")
    (save_root / "last.ckpt").write_bytes(b"last")
    first = wandb_run("trial-resume", config={**CONFIG, "attempt": 1})
    for epoch in range(3):
        first.log_epoch(epoch_result(epoch, 18.0 + epoch, save_root, is_best=True))
    first.finish(state="failed", summary={"epochs": 3}, reason="worker lost")

    again = wandb_run("trial-resume", config={**CONFIG, "attempt": 2}, name="study-a-retry")
    for epoch in (3, 4):
        again.log_epoch(epoch_result(epoch, 24.0 - epoch, save_root, is_best=epoch == 3))
    again.finish(state="complete", summary={"epochs": 5})

    folders = find_offline_runs(wandb_dir)
    assert len(folders) == 2  # offline, a resume is a second folder with the same id
    assert {read_offline_run(f).run_id for f in folders} == {"trial-resume"}

    merged = read_offline_runs_merged(wandb_dir)
    assert list(merged) == ["trial-resume"]
    run = merged["trial-resume"]
    rows = metric_rows(run)
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["train/loss"] for row in rows] == [metrics_of(e, 0)["train_loss"] for e in range(5)]
    assert [row["epoch"] for row in media_rows(run)] == [2, 3]  # each segment's best epoch
    assert run.paths == (first.run_dir, again.run_dir) and run.path == again.run_dir
    assert run.config["attempt"] == 2 and run.name == "study-a-retry"
    assert run.summary["state"] == "complete" and run.summary["epochs"] == 5
    assert run.summary["fail_reason"] == "worker lost"  # a summary key is kept until overwritten, as online
    assert run.summary["epoch"] == 4 and run.summary["best_epoch"] == 3
    assert run.exit_code == 0
    # Both segments add versions to the one model artifact.
    assert {a["name"] for a in model_artifacts(run)} == {"model-trial-resume"}
    # Three new bests in the first segment; in the second one new best and the last epoch at the end.
    assert [a["metadata"]["epoch"] for a in model_artifacts(run)] == [0, 1, 2, 3, 4]


CRASHING_TRIAL = """
import os, sys, time, types
from cvae.schema import WANDB_KEYS
from cvae.tracking import WandbRun
from cvae.wandb_offline import read_offline_run
t = WandbRun(project="cvae-test", entity=None, group="study-a", name="crashy", run_id="trial-crash",
             config={"lr": 0.1}, tags=[], mode="offline", job_type="trial")
for epoch in range(3):
    t.log_epoch(types.SimpleNamespace(epoch=epoch, save_root=sys.argv[1], val_psnr_per_frame=[], val_video=None,
                                      is_best=False, **{col: 1.0 / (epoch + 1) for col in WANDB_KEYS}))
# Wait for wandb-core to flush the epochs to the .wandb file, then die without finishing (like SIGKILL/OOM).
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        if len(read_offline_run(t.run_dir).history) == 3:
            os._exit(17)
    except ValueError:  # caught mid-write of the file header
        pass
    time.sleep(0.1)
os._exit(3)
"""


def test_hard_crash_keeps_flushed_epochs_and_resume_continues(wandb_dir: Path, save_root: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHING_TRIAL, str(save_root)], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, f"epochs never reached the .wandb file:\n{proc.stdout}\n{proc.stderr}"
    (crashed,) = read_offline_runs_merged(wandb_dir).values()
    assert crashed.exit_code is None  # never finished
    assert [row["epoch"] for row in crashed.history] == [0, 1, 2]
    assert [row["train/loss"] for row in crashed.history] == [1.0, 0.5, 1.0 / 3]

    again = wandb_run("trial-crash")
    again.log_epoch(epoch_result(2, 20.0, save_root))  # the epoch that was running when it died
    again.log_epoch(epoch_result(3, 21.0, save_root))
    again.finish(state="complete")
    run = read_offline_runs_merged(wandb_dir)["trial-crash"]
    assert [row["epoch"] for row in metric_rows(run)] == [0, 1, 2, 2, 3]
    assert run.exit_code == 0 and len(run.paths) == 2


# -- online that cannot start ---------------------------------------------------------------------------------
ONLINE_TRIAL = """
import json, time
from cvae.tracking import TrackingError, WandbRun
t0 = time.monotonic()
try:
    WandbRun(project="cvae-test", entity=None, group="g", name="n", run_id="online-1", config={}, tags=[],
             mode="online")
except TrackingError as err:
    print(json.dumps({"error": str(err), "seconds": time.monotonic() - t0}))
else:
    print(json.dumps({"error": None}))
"""


def test_online_that_cannot_start_raises_tracking_error(wandb_dir: Path) -> None:
    # A subprocess: wandb reads its environment once per process, so WANDB_BASE_URL must be there from the
    # start. Port 9 on 127.0.0.1 is closed, so the connection is refused locally; WANDB_INIT_TIMEOUT bounds
    # wandb's retries (90 s by default).
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "WANDB_MODE"}
    env.update(WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="0123456789abcdef" * 2 + "01234567",
               WANDB_INIT_TIMEOUT="5", HOME=str(wandb_dir), NETRC=str(wandb_dir / "no-netrc"))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", ONLINE_TRIAL], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] is not None, "online W&B started against a closed port?"
    assert "online" in result["error"] and "offline" in result["error"]
    assert "\n" not in result["error"]
    assert elapsed < 60
    # No silent fallback to offline.
    assert not [f for f in find_offline_runs(wandb_dir) if f.name.startswith("offline-run-")]


def test_tracking_error_is_a_runtime_error() -> None:
    assert issubclass(TrackingError, RuntimeError)


INHERITED_SERVICE = """
import os, sys, types
from cvae.schema import WANDB_KEYS
from cvae.tracking import WandbRun
from cvae.wandb_offline import read_offline_run
inherited = os.environ["WANDB_SERVICE"]
t = WandbRun(project="cvae-test", entity=None, group="g", name="n", run_id="own-service", config={}, tags=[],
             mode="offline")
print("service", os.environ.get("WANDB_SERVICE") != inherited)
t.log_epoch(types.SimpleNamespace(epoch=0, save_root=sys.argv[1], val_psnr_per_frame=[], val_video=None,
                                  is_best=False, **{col: 1.0 for col in WANDB_KEYS}))
t.finish(state="complete")
print(read_offline_run(t.run_dir).exit_code)
"""


def test_a_worker_does_not_use_its_parents_wandb_service(wandb_dir: Path, save_root: Path) -> None:
    # A parent's service (here one whose owner, pid 1, is not us and whose socket does not exist) is left
    # alone: the worker starts its own, which dies with it and frees the run ids of a killed trial.
    env = {**os.environ, "WANDB_SERVICE": f"3-1-unix-{wandb_dir / 'no-such-socket'}"}
    proc = subprocess.run([sys.executable, "-c", INHERITED_SERVICE, str(save_root)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "service True" in lines
    assert lines[-1] == "0"


def test_disabled_run_writes_nothing(wandb_dir: Path, save_root: Path) -> None:
    (save_root / "best.ckpt").write_bytes(b"best")
    t = wandb_run("disabled-1", mode="disabled")
    assert t.run_dir is None and t.url is None
    t.log_epoch(epoch_result(0, 20.0, save_root, is_best=True, video=video_of(0)))
    t.finish(state="complete", summary={"x": 1})
    assert t.finished
    assert find_offline_runs(wandb_dir) == []
    assert not (wandb_dir / "wandb").exists()
