"""W&B tracking of trials: real offline runs written by wandb, read back from disk with no login.

Nothing here mocks wandb. Each test points ``WANDB_DIR`` at its own temp folder; the online-failure test
runs in a subprocess against a closed port on 127.0.0.1, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cvae.sweeps.tracking import WandbTrialTracker, log_sweep_summary, resolve_wandb_mode
from PIL import Image

from cvae.wandb_offline import OfflineRun, find_offline_runs, read_offline_run, read_offline_runs_merged

ROOT = Path(__file__).resolve().parents[2]

EPOCHS = [
    {"train/loss": 0.123456789012345, "train/mse": 0.01, "train/kl": 1.5e-4, "train/psnr": 18.25,
     "val/psnr": 17.5, "val/loss": 0.2, "schedule/beta": 0.0, "schedule/tfr": 1.0, "lr": 1e-3,
     "perf/frames_per_s": 812.5},
    {"train/loss": 0.0987654321, "train/mse": 0.008, "train/kl": 2.5e-4, "train/psnr": 20.125,
     "val/psnr": 19.75, "val/loss": 0.15, "schedule/beta": 0.5, "schedule/tfr": 0.9, "lr": 1e-3,
     "perf/frames_per_s": 820.0},
    {"train/loss": 0.0712, "train/mse": 0.007, "train/kl": 3.25e-4, "train/psnr": 21.5,
     "val/psnr": 20.875, "val/loss": 0.125, "schedule/beta": 1.0, "schedule/tfr": 0.8, "lr": 5e-4,
     "perf/frames_per_s": 815.25},
]
CONFIG = {"lr": 1e-3, "batch_size": 2, "kl_anneal_type": "Cyclical", "param/lr": 1e-3, "study": "s1",
          "trial": 4, "nested": {"a": 1, "b": [1, 2]}}


@pytest.fixture
def wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh WANDB_DIR, offline and silent; W&B's staging and cache folders kept out of $HOME."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    # Offline tables are staged for a later `wandb sync` under WANDB_DATA_DIR (default ~/.local/share).
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def tracker(run_id: str, **overrides) -> WandbTrialTracker:
    kwargs = dict(project="cvae-test", entity=None, group="study-a", name=f"study-a-{run_id}", run_id=run_id,
                  config=CONFIG, tags=["lr=0.001", "smoke"], mode="offline")
    kwargs.update(overrides)
    return WandbTrialTracker(**kwargs)


def write_gif(path: Path, frames: int = 5) -> Path:
    images = [Image.new("RGB", (16, 8), (40 * i, 255 - 40 * i, 0)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def metric_rows(run: OfflineRun) -> list[dict]:
    """History rows of log_epoch calls (the final media row has no train/loss)."""
    return [row for row in run.history if "train/loss" in row]


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


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_explicit_modes_pass_through(mode: str, no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled" if mode != "disabled" else "online")
    assert resolve_wandb_mode(mode) == mode
    assert resolve_wandb_mode(mode.upper()) == mode


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="sometimes"):
        resolve_wandb_mode("sometimes")


def test_importing_the_module_does_not_import_wandb() -> None:
    code = "import sys, cvae.sweeps.tracking as t; t.resolve_wandb_mode('offline'); print('wandb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- a trial run ----------------------------------------------------------------------------------------------
def test_trial_run_round_trip(wandb_dir: Path) -> None:
    gif = write_gif(wandb_dir / "rollout.gif")
    psnr = [30.0 - 0.25 * i for i in range(20)]
    t = tracker("trial-0001", notes="first trial")
    assert t.run_dir is not None and t.run_dir.parent == wandb_dir / "wandb"
    assert t.url is None
    for epoch, metrics in enumerate(EPOCHS):
        t.log_epoch(epoch, metrics)
    t.finish(state="complete", summary={"val/psnr": 20.875, "best_epoch": 2, "epochs": 3, "trial": 4},
             psnr_per_frame=psnr, video=gif)
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
    for row, metrics in zip(rows, EPOCHS, strict=True):
        for key, value in metrics.items():
            assert row[key] == value, key  # exact: W&B's JSON keeps every digit of a float
    assert [row["_step"] for row in rows] == [0, 1, 2]

    assert run.summary["state"] == "complete"
    assert "fail_reason" not in run.summary
    assert run.summary["val/psnr"] == 20.875 and run.summary["best_epoch"] == 2
    assert run.summary["epoch"] == 2 and run.summary["train/loss"] == EPOCHS[-1]["train/loss"]

    # The media row: pinned to the last epoch; table, line chart's table and GIF stored in the run's files.
    (media,) = [row for row in run.history if "val/rollout" in row]
    assert media["epoch"] == 2
    assert media["val/rollout"]["_type"] == "video-file"
    assert media["val/psnr_per_frame"]["_type"] == "table-file"
    assert media["val/psnr_per_frame"]["nrows"] == 20
    assert "val/psnr_per_frame_plot_table" in media
    video = run.path / "files" / media["val/rollout"]["path"]
    table = run.path / "files" / media["val/psnr_per_frame"]["path"]
    assert video.is_file() and video.suffix == ".gif" and video.relative_to(run.path / "files" / "media")
    assert video.read_bytes() == gif.read_bytes()
    assert table.is_file() and table.relative_to(run.path / "files" / "media")
    stored = json.loads(table.read_text())
    assert stored["columns"] == ["frame", "psnr"]
    assert stored["data"] == [[i + 1, v] for i, v in enumerate(psnr)]
    assert run.summary["val/rollout"]["path"] == media["val/rollout"]["path"]


def test_the_per_frame_table_and_chart_carry_the_baselines(wandb_dir: Path) -> None:
    psnr = [30.0 - 0.25 * i for i in range(20)]
    refs = {"copy_first": [28.0 - 0.5 * i for i in range(20)], "mean_frame": [22.0] * 20, "copy_prev": [37.0] * 20}
    t = tracker("trial-refs")
    t.log_epoch(0, EPOCHS[0])
    t.finish(state="complete", summary={"val/psnr": 25.0}, psnr_per_frame=psnr, baselines=refs)
    run = read_offline_run(t.run_dir)
    (media,) = [row for row in run.history if "val/psnr_per_frame" in row]
    stored = json.loads((run.path / "files" / media["val/psnr_per_frame"]["path"]).read_text())
    assert stored["columns"] == ["frame", "psnr", "psnr_copy_first", "psnr_mean_frame", "psnr_copy_prev"]
    assert stored["data"] == [[i + 1, psnr[i], refs["copy_first"][i], 22.0, 37.0] for i in range(20)]
    # The chart: the model beside copy-first and the mean frame (copy-previous, an oracle, only in the table).
    chart = json.loads((run.path / "files" / media["val/psnr_per_frame_plot_table"]["path"]).read_text())
    keys = {row[chart["columns"].index("lineKey")] for row in chart["data"]}
    assert keys == {"model", "copy first frame", "mean frame (oracle)"}


def test_relogging_an_epoch_and_finishing_twice_do_not_raise(wandb_dir: Path) -> None:
    t = tracker("trial-relog")
    t.log_epoch(0, EPOCHS[0])
    t.log_epoch(1, EPOCHS[1])
    t.log_epoch(1, EPOCHS[1])  # a resumed run repeating the epoch it crashed in
    t.finish(state="pruned", summary={"epochs": 2}, reason="pruned at epoch 1")
    t.finish(state="failed", summary={"epochs": 99})  # no-op
    t.log_epoch(2, EPOCHS[2])  # after finish: ignored
    run = read_offline_run(t.run_dir)
    assert [row["epoch"] for row in metric_rows(run)] == [0, 1, 1]
    assert run.exit_code == 0  # pruned is a normal end
    assert run.summary["state"] == "pruned" and run.summary["epochs"] == 2
    assert run.summary["fail_reason"] == "pruned at epoch 1"


def test_failed_state_exits_1_with_reason(wandb_dir: Path) -> None:
    t = tracker("trial-fail")
    t.log_epoch(0, EPOCHS[0])
    t.finish(state="failed", summary={"val/psnr": None, "epochs": 1}, reason="diverged: loss is nan")
    run = read_offline_run(t.run_dir)
    assert run.exit_code == 1
    assert run.summary["state"] == "failed"
    assert run.summary["fail_reason"] == "diverged: loss is nan"
    assert run.summary["val/psnr"] is None


def test_finish_survives_bad_media(wandb_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = tracker("trial-badmedia")
    t.log_epoch(0, EPOCHS[0])
    with caplog.at_level(logging.WARNING, logger="cvae"):
        t.finish(state="complete", summary={"epochs": 1}, psnr_per_frame=[1.0, "not a number"],
                 video=wandb_dir / "missing.gif")
    messages = [r.getMessage() for r in caplog.records if r.name == "cvae"]
    assert any("PSNR-per-frame" in m for m in messages)
    assert any("missing.gif" in m for m in messages)
    run = read_offline_run(t.run_dir)
    assert run.exit_code == 0 and run.summary["state"] == "complete"
    assert not any("val/rollout" in row or "val/psnr_per_frame" in row for row in run.history)


# -- resume ---------------------------------------------------------------------------------------------------
def test_resumed_run_merges_into_one(wandb_dir: Path) -> None:
    first = tracker("trial-resume", config={**CONFIG, "attempt": 1})
    for epoch in range(3):
        first.log_epoch(epoch, EPOCHS[epoch])
    first.finish(state="failed", summary={"epochs": 3}, reason="worker lost")

    again = tracker("trial-resume", config={**CONFIG, "attempt": 2}, name="study-a-retry")
    for epoch in (3, 4):
        again.log_epoch(epoch, {"train/loss": 0.05 - 0.01 * (epoch - 3), "val/psnr": 21.0 + epoch})
    again.finish(state="complete", summary={"epochs": 5})

    folders = find_offline_runs(wandb_dir)
    assert len(folders) == 2  # offline, a resume is a second folder with the same id
    assert {read_offline_run(f).run_id for f in folders} == {"trial-resume"}

    merged = read_offline_runs_merged(wandb_dir)
    assert list(merged) == ["trial-resume"]
    run = merged["trial-resume"]
    assert [row["epoch"] for row in run.history] == [0, 1, 2, 3, 4]
    assert [row["train/loss"] for row in run.history] == [m["train/loss"] for m in EPOCHS] + [0.05, 0.04]
    assert run.paths == (first.run_dir, again.run_dir) and run.path == again.run_dir
    assert run.config["attempt"] == 2 and run.name == "study-a-retry"
    assert run.summary["state"] == "complete" and run.summary["epochs"] == 5
    assert run.summary["fail_reason"] == "worker lost"  # a summary key is kept until overwritten, as online
    assert run.exit_code == 0


CRASHING_TRIAL = """
import os, sys, time
from cvae.sweeps.tracking import WandbTrialTracker
from cvae.wandb_offline import read_offline_run
t = WandbTrialTracker(project="cvae-test", entity=None, group="study-a", name="crashy", run_id="trial-crash",
                      config={"lr": 0.1}, tags=[], mode="offline")
for epoch in range(3):
    t.log_epoch(epoch, {"train/loss": 1.0 / (epoch + 1)})
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


def test_hard_crash_keeps_flushed_epochs_and_resume_continues(wandb_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHING_TRIAL], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, f"epochs never reached the .wandb file:\n{proc.stdout}\n{proc.stderr}"
    (crashed,) = read_offline_runs_merged(wandb_dir).values()
    assert crashed.exit_code is None  # never finished
    assert [row["epoch"] for row in crashed.history] == [0, 1, 2]

    again = tracker("trial-crash")
    again.log_epoch(2, {"train/loss": 0.3})  # the epoch that was running when it died
    again.log_epoch(3, {"train/loss": 0.25})
    again.finish(state="complete", summary={})
    run = read_offline_runs_merged(wandb_dir)["trial-crash"]
    assert [row["epoch"] for row in run.history] == [0, 1, 2, 2, 3]
    assert run.exit_code == 0 and len(run.paths) == 2


# -- the sweep summary run ------------------------------------------------------------------------------------
def test_sweep_summary_run(wandb_dir: Path) -> None:
    trials = [
        {"number": 0, "state": "complete", "value": 21.5, "params": {"lr": 1e-3}, "duration_s": 12},
        {"number": 1, "state": "failed", "value": None, "reason": "diverged", "duration_s": 3.5},
        {"number": 2, "state": "pruned", "value": float("nan"), "params": {"lr": 1e-2}, "epochs": "3"},
        {"number": 3, "state": "complete", "value": 22.0, "epochs": 5, "path": wandb_dir},
    ]
    spec_text = "name: study-a\nmethod: tpe\nmetric: {name: val/psnr, goal: maximize}\n"
    log_sweep_summary(project="cvae-test", entity=None, group="study-a", name="study-a-summary",
                      run_id="study-a-summary", mode="offline", trials=trials,
                      importances={"lr": 0.75, "beta": 0.25}, spec_text=spec_text, best={"value": 22.0})
    log_sweep_summary(project="cvae-test", entity=None, group="study-b", name="study-b-summary",
                      run_id="study-b-summary", mode="offline", trials=trials[:1], importances={},
                      spec_text="name: study-b\n")
    runs = read_offline_runs_merged(wandb_dir)
    run = runs["study-a-summary"]
    assert run.job_type == "sweep-summary" and run.group == "study-a" and run.exit_code == 0
    assert run.config == {"spec": spec_text}
    assert run.summary["n_trials"] == 4
    assert run.summary["importance/lr"] == 0.75 and run.summary["best/value"] == 22.0
    (row,) = run.history
    assert row["sweep/trials"]["_type"] == "table-file"
    assert "sweep/param_importance_table" in row
    table = json.loads((run.path / "files" / row["sweep/trials"]["path"]).read_text())
    assert table["columns"] == ["number", "state", "value", "params", "duration_s", "reason", "epochs", "path"]
    by_number = {r[0]: dict(zip(table["columns"], r, strict=True)) for r in table["data"]}
    assert by_number[0]["value"] == 21.5 and by_number[0]["params"] == '{"lr": 0.001}'
    assert by_number[3]["epochs"] == "5"  # a column of numbers and strings becomes strings
    assert by_number[3]["path"] == str(wandb_dir)

    other = runs["study-b-summary"]
    assert other.summary["n_trials"] == 1
    assert not any(k.startswith("importance/") for k in other.summary)
    assert "sweep/param_importance_table" not in other.history[0]


def test_sweep_summary_disabled_writes_nothing(wandb_dir: Path) -> None:
    log_sweep_summary(project="cvae-test", entity=None, group="g", name="n", run_id="r", mode="disabled",
                      trials=[{"number": 0}], importances={}, spec_text="")
    assert find_offline_runs(wandb_dir) == []


# -- online that cannot start ---------------------------------------------------------------------------------
ONLINE_TRIAL = """
import json, time
from cvae.sweeps.tracking import TrackingError, WandbTrialTracker
t0 = time.monotonic()
try:
    WandbTrialTracker(project="cvae-test", entity=None, group="g", name="n", run_id="online-1", config={},
                      tags=[], mode="online")
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


INHERITED_SERVICE = """
from cvae.sweeps.tracking import WandbTrialTracker
from cvae.wandb_offline import read_offline_run
t = WandbTrialTracker(project="cvae-test", entity=None, group="g", name="n", run_id="own-service", config={},
                      tags=[], mode="offline")
t.log_epoch(0, {"train/loss": 1.0})
t.finish(state="complete", summary={})
print(read_offline_run(t.run_dir).exit_code)
"""


def test_a_worker_does_not_use_its_parents_wandb_service(wandb_dir: Path) -> None:
    # A parent's service (here one whose owner, pid 1, is not us and whose socket does not exist) is left
    # alone: the worker starts its own, which dies with it and frees the run ids of a killed trial.
    env = {**os.environ, "WANDB_SERVICE": f"3-1-unix-{wandb_dir / 'no-such-socket'}"}
    proc = subprocess.run([sys.executable, "-c", INHERITED_SERVICE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "0"


def test_disabled_tracker_writes_nothing(wandb_dir: Path) -> None:
    t = tracker("disabled-1", mode="disabled")
    assert t.run_dir is None and t.url is None
    t.log_epoch(0, EPOCHS[0])
    t.finish(state="complete", summary={"x": 1}, psnr_per_frame=[1.0, 2.0])
    assert find_offline_runs(wandb_dir) == []


# -- the reader's edges ------------------------------------------------------------------
def test_find_offline_runs(wandb_dir: Path) -> None:
    assert find_offline_runs(wandb_dir / "nowhere") == []
    a, b = tracker("find-b"), tracker("find-a")
    a.finish(state="complete", summary={})
    b.finish(state="complete", summary={})
    assert (wandb_dir / "wandb" / "latest-run").exists()  # wandb's symlink: not a run of its own
    found = find_offline_runs(wandb_dir)
    assert len(found) == 2 and found == sorted(found, key=lambda p: p.name)
    assert find_offline_runs(wandb_dir / "wandb") == found


def test_reader_rejects_folders_without_a_readable_log(wandb_dir: Path) -> None:
    empty = wandb_dir / "wandb" / "offline-run-20260101_000000-empty"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match="no .wandb file") as info:
        read_offline_run(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(ValueError, match="offline-run-20260101_000000-empty"):
        read_offline_runs_merged(wandb_dir)

    (empty / "run-empty.wandb").write_bytes(b"not a wandb file at all")
    with pytest.raises(ValueError, match="bad header") as info:
        read_offline_run(empty)
    assert "run-empty.wandb" in str(info.value)


def test_reader_joins_records_that_span_blocks(wandb_dir: Path) -> None:
    # Rows bigger than the log's 32 KiB blocks are split into FIRST/MIDDLE/LAST pieces by the writer.
    big = {f"probe/{i:05d}": i / 7 for i in range(6000)}
    t = tracker("big-rows", config={"notes": "x" * 50_000})
    t.log_epoch(0, big)
    t.log_epoch(1, {"train/loss": 0.5})
    t.finish(state="complete", summary={})
    (log_file,) = t.run_dir.glob("*.wandb")
    assert log_file.stat().st_size > 3 * 32768
    run = read_offline_run(t.run_dir)
    assert run.config["notes"] == "x" * 50_000
    assert [row["epoch"] for row in run.history] == [0, 1]
    assert all(run.history[0][k] == v for k, v in big.items())
    assert run.exit_code == 0


def test_reader_tolerates_a_torn_tail_but_not_corruption(wandb_dir: Path) -> None:
    t = tracker("torn")
    for epoch in range(3):
        t.log_epoch(epoch, EPOCHS[epoch])
    t.finish(state="complete", summary={})
    (log_file,) = t.run_dir.glob("*.wandb")
    data = log_file.read_bytes()

    log_file.write_bytes(data[:-5])  # killed mid-write: the exit record is cut off
    torn = read_offline_run(t.run_dir)
    assert torn.exit_code is None and len(torn.history) == 3

    middle = bytearray(data)
    middle[data.index(b"train/loss")] ^= 0xFF  # inside a record's payload, far from the end
    log_file.write_bytes(bytes(middle))
    with pytest.raises(ValueError, match="corrupt record") as info:
        read_offline_run(t.run_dir)
    assert str(log_file) in str(info.value)
