"""core/records.py: reading a CSV a run may still be writing, and writes on a full disk naming the file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from cvae.core.records import METRIC_COLUMNS, CsvLog, read_csv, read_table, write_config


def _metrics(path: Path, epochs: int) -> CsvLog:
    log = CsvLog(path, METRIC_COLUMNS)
    log.append([{c: (e if c == "epoch" else 0.5 + e) for c in METRIC_COLUMNS} for e in range(epochs)])
    return log


@pytest.mark.parametrize("tail, why", [
    ("3,0.25,0.1", f"3 field(s) where the header has {len(METRIC_COLUMNS)}"),
    ("3," + ",".join(["0.5"] * (len(METRIC_COLUMNS) - 2)) + ",1.2", "the file ends in the middle of it (no newline)"),
    ("3," + ",".join(["0.5"] * (len(METRIC_COLUMNS) - 2)) + ",1.2e", "epoch_seconds='1.2e' is not a number"),
], ids=["short-row", "no-newline", "cut-number"])
def test_a_half_written_last_row_is_dropped_with_a_warning(tmp_path: Path, tail: str, why: str) -> None:
    path = tmp_path / "metrics.csv"
    _metrics(path, 3)
    with path.open("a") as fh:
        fh.write(tail)  # a run killed, or still writing, in the middle of its last row
    warnings: list[str] = []
    header, rows = read_table(path, numeric=True, warn=warnings.append)
    assert header == list(METRIC_COLUMNS)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert warnings == [f"{path}: skipping line 5: {why} (a run may still be writing it)"]


def test_a_damaged_row_in_the_middle_is_dropped_too(tmp_path: Path) -> None:
    path = tmp_path / "psnr_per_frame.csv"
    path.write_text("epoch,frame,psnr\n0,1,20.5\n0,2\n0,3,21.0\n")
    warnings: list[str] = []
    assert read_csv(path, numeric=True, warn=warnings.append) == [
        {"epoch": "0", "frame": "1", "psnr": "20.5"}, {"epoch": "0", "frame": "3", "psnr": "21.0"}]
    assert warnings == [f"{path}: skipping line 3: 2 field(s) where the header has 3 (a damaged row)"]


def test_whole_rows_read_as_before(tmp_path: Path, caplog) -> None:
    path = tmp_path / "trials.csv"
    path.write_text('run,state,label\nt0000,complete,"TF1, kl=none"\nt0001,pruned,\n\n')
    with caplog.at_level("WARNING", logger="cvae"):
        rows = read_csv(path)  # not numeric: text fields are fine
    assert rows == [{"run": "t0000", "state": "complete", "label": "TF1, kl=none"},
                    {"run": "t0001", "state": "pruned", "label": ""}]
    assert caplog.records == []
    (tmp_path / "empty.csv").write_text("")
    assert read_table(tmp_path / "empty.csv") == ([], [])


def test_the_default_warning_goes_to_the_cvae_logger(tmp_path: Path, caplog) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,val_psnr\n0,20.1\n1,2")
    with caplog.at_level("WARNING", logger="cvae"):
        assert read_csv(path) == [{"epoch": "0", "val_psnr": "20.1"}]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: skipping line 3: the file ends in the middle of it (no newline) (a run may still be writing it)"]


def test_appending_to_a_full_disk_is_enospc_naming_the_file(full_disk_dir: Path) -> None:
    log = _metrics(full_disk_dir / "metrics.csv", 1)
    (full_disk_dir / "filler").write_bytes(b"\0" * (256 * 1024 - 8192))  # fill what is left
    with pytest.raises(OSError) as info:
        log.append([{"epoch": e, "train_loss": 1.0} for e in range(1, 2000)])
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno 28] No space left on device: '{full_disk_dir / 'metrics.csv'}'"


def test_writing_the_config_to_a_full_disk_is_enospc_naming_the_file(full_disk_dir: Path) -> None:
    (full_disk_dir / "filler").write_bytes(b"\0" * (256 * 1024))
    with pytest.raises(OSError) as info:
        write_config({"DR": "data", "notes": "x" * 100_000}, full_disk_dir / "config.yaml")
    assert info.value.errno == errno.ENOSPC
    assert str(full_disk_dir / "config.yaml") in str(info.value)
