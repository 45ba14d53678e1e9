"""``cvae train --wandb``: a W&B run as W&B users expect, read back from its offline files.

Summaries follow each metric's goal, the media and the summary show the best epoch, the checkpoints are a
``model`` artifact with ``best`` and ``latest``, the console is captured, and a resumed training continues
the same run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cvae.core.cli import _train_overrides
from cvae.core.config import resolve_config

from cvae.cli import build_parser
from cvae.wandb_offline import OfflineRun, read_offline_runs_merged

pytestmark = pytest.mark.slow  # trainings with W&B end to end (the module's resumed run is one fixture)

SMALL = ["--train_vi_len", "4", "--val_vi_len", "24", "--batch_size", "2", "--F_dim", "16", "--L_dim", "8",
         "--N_dim", "4", "--D_out_dim", "16", "--frame_H", "32", "--frame_W", "64", "--no-progress",
         "--num_threads", "1", "--num_workers", "1", "--lr_scheduler", "none", "--kl_anneal_type", "none",
         "--tfr", "0"]


def train(dataset: Path, save_root: Path, wandb_dir: Path, *args: str, env: dict[str, str] | None = None):
    environ = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), **(env or {})}
    for key in ("WANDB_PROJECT", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        if key not in (env or {}):
            environ.pop(key, None)
    out = subprocess.run([sys.executable, "-m", "cvae", "train", "--DR", str(dataset), "--save_root",
                          str(save_root), *SMALL, *args], env=environ, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def table_psnr(run: OfflineRun, value: dict) -> list[float]:
    """The ``psnr`` column of a logged W&B table (its JSON file in one of the run's folders)."""
    for folder in run.paths:
        path = folder / "files" / value["path"]
        if path.is_file():
            table = json.loads(path.read_text())
            col = table["columns"].index("psnr")
            return [row[col] for row in table["data"]]
    raise AssertionError(f"table {value['path']} not found in {run.paths}")


@pytest.fixture(scope="module")
def resumed_run(tiny_dataset, tmp_path_factory) -> tuple[OfflineRun, Path, str]:
    """3 epochs, then the same training resumed to 5: one W&B run, both segments."""
    tmp = tmp_path_factory.mktemp("train-wandb")
    save_root, wandb_dir = tmp / "run", tmp / "wandb-dir"
    # The project from W&B's environment (WANDB_PROJECT), the tags from flags.
    first = train(tiny_dataset, save_root, wandb_dir, "--num_epoch", "3", "--wandb", "--wandb_tags", "lab", "small",
                  "--wandb_log_every_n_steps", "2", env={"WANDB_PROJECT": "from-env"})
    train(tiny_dataset, save_root, wandb_dir, "--num_epoch", "5", "--resume", "--wandb", "--wandb_tags", "lab",
          "small", "--wandb_log_every_n_steps=2", env={"WANDB_PROJECT": "from-env"})
    runs = read_offline_runs_merged(wandb_dir)
    assert len(runs) == 1, sorted(runs)
    return next(iter(runs.values())), save_root, first.stderr


def test_a_resumed_training_continues_its_run(resumed_run) -> None:
    run, save_root, _ = resumed_run
    assert (save_root / "wandb_run_id").read_text().strip() == run.run_id
    assert len(run.paths) == 2  # two offline segments, one run
    epochs = sorted({int(h["epoch"]) for h in run.history if "val/psnr" in h})
    assert epochs == [0, 1, 2, 3, 4]
    assert run.exit_code == 0 and run.summary["state"] == "complete"
    assert run.tags == ("lab", "small") and run.job_type == "train" and run.config["lr"] == 0.001
    # Its W&B settings are the run's own project and tags, not config (`wandb: true` there said nothing)
    assert not [k for k in run.config if k == "wandb" or k.startswith("wandb_")], sorted(run.config)
    # The closing lines are in the run's Logs tab (printed before the run ends)
    assert any(line.startswith("completed: 2 epoch(s) in") and "best val PSNR" in line for line in run.console), (
        run.console[-5:])


def test_summary_is_the_best_epoch_and_agrees_with_its_table(resumed_run) -> None:
    run, save_root, _ = resumed_run
    assert run.metrics["val/psnr"] == {"step_metric": "epoch", "summary": ["max"]}
    assert run.metrics["train/loss"]["summary"] == ["min"]
    scalars = {int(h["epoch"]): h["val/psnr"] for h in run.history if "val/psnr" in h}
    best_epoch = max(scalars, key=scalars.get)
    assert run.summary["val/psnr"]["max"] == pytest.approx(scalars[best_epoch])
    assert run.summary["best_epoch"] == best_epoch
    # The table the summary shows is the best epoch's: its mean is that epoch's validation PSNR.
    psnr = table_psnr(run, run.summary["val/psnr_per_frame"])
    assert len(psnr) == 23  # frames 1..23 of the 24-frame validation video
    assert sum(psnr) / len(psnr) == pytest.approx(scalars[best_epoch], abs=1e-4)
    # Every validation logged its table (the media slider), and best epochs their rollout.
    assert sum("val/psnr_per_frame" in h for h in run.history) >= 5
    assert any("val/rollout" in h for h in run.history) and (save_root / "best_rollout.gif").is_file()
    assert run.summary["val/rollout"]["_type"] == "video-file"


def test_the_training_loss_is_logged_per_step_against_the_global_step(resumed_run) -> None:
    run, save_root, _ = resumed_run
    assert run.metrics["train/loss_step"]["step_metric"] == "trainer/global_step"
    steps = [h for h in run.history if "train/loss_step" in h]
    x = [int(h["trainer/global_step"]) for h in steps]
    # Every second optimizer step of the 5 epochs, the resumed segment going on from the first one's count.
    assert len(x) >= 5 and x == list(range(2, x[-1] + 1, 2))
    assert all(math.isfinite(h["train/loss_step"]) and "epoch" not in h for h in steps)
    epoch_rows = [h for h in run.history if "train/loss" in h]
    assert len(epoch_rows) == 5 and not any("trainer/global_step" in h for h in epoch_rows)


def test_checkpoints_are_a_model_artifact_with_best_and_latest(resumed_run) -> None:
    run, save_root, _ = resumed_run
    models = [a for a in run.artifacts if a["type"] == "model"]
    assert models and {a["name"] for a in models} == {f"model-{run.run_id}"}
    aliases = [set(a["aliases"]) for a in models]
    assert any("best" in a for a in aliases) and any("latest" in a for a in aliases)
    best = next(a for a in reversed(models) if "best" in a["aliases"])
    assert best["metadata"]["val/psnr"] == pytest.approx(run.summary["val/psnr"]["max"])


def test_the_console_is_captured(resumed_run) -> None:
    run, _, stderr = resumed_run
    epoch_lines = [line for line in run.console if line.startswith("epoch ")]
    # numbered from 0 as the records are, with how far the run is
    assert [" ".join(line.split()[1:5]) for line in epoch_lines] == [
        "0 (1 of 3)", "1 (2 of 3)", "2 (3 of 3)", "3 (4 of 5)", "4 (5 of 5)"]
    assert epoch_lines[0] in stderr


def test_wandb_environment_names_the_project(resumed_run) -> None:
    run, _, stderr = resumed_run
    assert f"W&B offline run from-env/{run.run_id}" in stderr


def test_agent_arguments() -> None:
    # `wandb agent` passes --key=value for every swept parameter, booleans and lists included.
    args = build_parser().parse_args(["train", "--fast_train=false", "--shuffle=True", "--lr=0.01",
                                      "--lr_milestones=[3, 6]", "--no-channels_last", "--kl_anneal_type=cyclical"])
    cfg = resolve_config(None, _train_overrides(args))
    assert (cfg.data.fast_train, cfg.data.shuffle, cfg.optim.lr, cfg.optim.lr_milestones) == (False, True, 0.01, (3, 6))
    assert cfg.run.channels_last is False and cfg.schedule.kl_anneal_type == "cyclical"


def test_a_run_killed_after_its_second_epoch_has_its_model_in_w_and_b(tiny_dataset, tmp_path) -> None:
    """The model goes up as its checkpoints are written, not when the run finishes: a training killed (SIGKILL:
    nothing of it runs after) after its second epoch has a model version in its offline files."""
    import signal
    import time

    from cvae.schema import METRICS_CSV
    from cvae.wandb_offline import find_offline_runs, read_offline_run

    save_root, wandb_dir = tmp_path / "run", tmp_path / "wb"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}
    for key in ("WANDB_PROJECT", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "cvae", "train", "--DR", str(tiny_dataset), "--save_root",
                             str(save_root), *SMALL, "--num_epoch", "50", "--wandb"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def models() -> list[dict]:
        for folder in find_offline_runs(wandb_dir / "wandb") if (wandb_dir / "wandb").is_dir() else []:
            try:
                return [a for a in read_offline_run(folder).artifacts if a["type"] == "model"]
            except ValueError:  # caught mid-write of the file's header
                pass
        return []

    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            rows = (save_root / METRICS_CSV).read_text().count("\n") - 1 if (save_root / METRICS_CSV).is_file() else 0
            if rows >= 2 and models():
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (folder,) = find_offline_runs(wandb_dir / "wandb")
    run = read_offline_run(folder)
    assert run.exit_code is None  # never finished
    versions = [a for a in run.artifacts if a["type"] == "model"]
    assert versions and "best" in versions[0]["aliases"] and versions[0]["metadata"]["file"] == "best.ckpt"
    assert versions[0]["name"] == f"model-{run.run_id}"
