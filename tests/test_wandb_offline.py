"""``cvae.wandb_offline``: the reader of W&B's offline transaction logs, at its edges.

The runs read here are real offline runs written by wandb (through :mod:`cvae.tracking`); nothing is
mocked. What a :class:`cvae.tracking.WandbRun` records is tests/test_wandb_run.py.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from cvae.schema import WANDB_KEYS
from cvae.tracking import WandbRun, finish_run, start_run
from cvae.wandb_offline import find_offline_runs, has_exit_record, read_offline_run, read_offline_runs_merged


def wandb_run(run_id: str) -> WandbRun:
    return WandbRun(project="cvae-test", entity=None, group="g", name=run_id, run_id=run_id, config={"lr": 0.1},
                    tags=[], mode="offline", job_type="trial")


def epoch_result(epoch: int, save_root: Path) -> types.SimpleNamespace:
    """A duck-typed :class:`cvae.core.trainer.EpochResult`: the scalars only (no table, no rollout)."""
    return types.SimpleNamespace(epoch=epoch, save_root=str(save_root), val_psnr_per_frame=[], val_video=None,
                                 is_best=False, **{col: 1.0 / (epoch + 1) for col in WANDB_KEYS})


def test_find_offline_runs(wandb_dir: Path) -> None:
    assert find_offline_runs(wandb_dir / "nowhere") == []
    a, b = wandb_run("find-b"), wandb_run("find-a")
    a.finish(state="complete")
    b.finish(state="complete")
    assert (wandb_dir / "wandb" / "latest-run").exists()  # wandb's symlink: not a run of its own
    found = find_offline_runs(wandb_dir)
    assert len(found) == 2 and found == sorted(found, key=lambda p: p.name)
    assert set(found) == {a.run_dir, b.run_dir}
    assert find_offline_runs(wandb_dir / "wandb") == found
    assert all(has_exit_record(folder) for folder in found)


def test_reader_rejects_folders_without_a_readable_log(wandb_dir: Path) -> None:
    empty = wandb_dir / "wandb" / "offline-run-20260101_000000-empty"
    empty.mkdir(parents=True)
    assert not has_exit_record(empty)
    with pytest.raises(ValueError, match="no .wandb file") as info:
        read_offline_run(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(ValueError, match="offline-run-20260101_000000-empty"):
        read_offline_runs_merged(wandb_dir)

    (empty / "run-empty.wandb").write_bytes(b"not a wandb file at all")
    assert not has_exit_record(empty)
    with pytest.raises(ValueError, match="bad header") as info:
        read_offline_run(empty)
    assert "run-empty.wandb" in str(info.value)


def test_reader_joins_records_that_span_blocks(wandb_dir: Path) -> None:
    # Records bigger than the log's 32 KiB blocks are split into FIRST/MIDDLE/LAST pieces by the writer. A
    # WandbRun logs a fixed set of keys, so the big row goes through start_run/finish_run, its building blocks.
    big = {f"probe/{i:05d}": i / 7 for i in range(6000)}
    run = start_run(project="cvae-test", entity=None, group="g", name="big", run_id="big-rows",
                    config={"notes": "x" * 50_000}, tags=["big"], mode="offline", job_type="trial", notes=None)
    run_dir = Path(run.sync_dir)
    run.log({**big, "epoch": 0})
    run.log({"train/loss": 0.5, "epoch": 1})
    finish_run(run, run_dir, 0)
    (log_file,) = run_dir.glob("*.wandb")
    assert log_file.stat().st_size > 3 * 32768
    read = read_offline_run(run_dir)
    assert read.config["notes"] == "x" * 50_000
    assert [row["epoch"] for row in read.history] == [0, 1]
    assert all(read.history[0][k] == v for k, v in big.items())
    assert read.history[1]["train/loss"] == 0.5
    assert read.exit_code == 0 and read.tags == ("big",)


def test_reader_tolerates_a_torn_tail_but_not_corruption(wandb_dir: Path, tmp_path: Path) -> None:
    t = wandb_run("torn")
    for epoch in range(3):
        t.log_epoch(epoch_result(epoch, tmp_path))
    t.finish(state="complete")
    (log_file,) = t.run_dir.glob("*.wandb")
    data = log_file.read_bytes()
    assert read_offline_run(t.run_dir).exit_code == 0

    log_file.write_bytes(data[:-5])  # killed mid-write: the exit record is cut off
    torn = read_offline_run(t.run_dir)
    assert torn.exit_code is None and len(torn.history) == 3
    assert not has_exit_record(t.run_dir)

    middle = bytearray(data)
    middle[data.index(b"train/loss")] ^= 0xFF  # inside a record's payload, far from the end
    log_file.write_bytes(bytes(middle))
    with pytest.raises(ValueError, match="corrupt record") as info:
        read_offline_run(t.run_dir)
    assert str(log_file) in str(info.value)
