"""benchmarks/storage_ceiling.py, small: real PostgreSQL, a real ``cvae sweep proxy``, real worker processes; its
CSV's columns, every trial completed once, errors counted rather than hidden."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from bench_loader import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


ceiling = load_benchmark("storage_ceiling")


@pytest.fixture(autouse=True)
def _postgres_installed() -> None:
    from pg import find_bindir

    if find_bindir() is None:
        message = "PostgreSQL not installed: `apt-get install postgresql` to run the benchmark's smoke test"
        if os.environ.get("CVAE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"CVAE_REQUIRE_POSTGRES=1 but {message}", pytrace=False)
        pytest.skip(message)


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.slow
def test_two_workers_on_each_backend_complete_every_trial_once(tmp_path, capsys):
    out = tmp_path / "ceiling.csv"
    assert ceiling.main(["--workers", "2", "--trials-per-worker", "3", "--min-trials", "1", "--epochs", "2",
                         "--out", str(out)]) == 0
    columns, rows = _rows(out)
    assert columns == ceiling.COLUMNS
    assert [(r["backend"], r["workers"]) for r in rows] == [("postgres", "2"), ("proxy", "2")]
    for r in rows:
        assert r["trials"] == r["complete"] == r["claims"] == "6", r
        assert (r["not_complete"], r["duplicates"], r["errors"], r["first_error"]) == ("0", "0", "0", "")
        assert float(r["trials_per_s"]) > 0 and 0 < float(r["claim_p50_ms"]) <= float(r["claim_p95_ms"])
        assert int(r["db_connections_peak"]) >= 1 and r["max_connections"] == "100" and r["epochs"] == "2"
    proxy = rows[1]
    assert proxy["proxy_threads"] == "10" and int(proxy["db_connections_peak"]) <= 10
    printed = capsys.readouterr().out
    assert "trials_per_s" in printed and f"wrote {out}" in printed


@pytest.mark.slow
def test_connections_beyond_max_connections_are_counted_as_errors(tmp_path):
    out = tmp_path / "ceiling.csv"
    # 4 workers, each wanting 2 connections, and the sampler's 1, against a limit of 5.
    assert ceiling.main(["--workers", "4", "--backends", "postgres", "--trials-per-worker", "2", "--min-trials", "1",
                         "--max-connections", "5", "--out", str(out)]) == 0
    (row,) = _rows(out)[1]
    assert row["max_connections"] == "5" and int(row["db_connections_peak"]) <= 4
    assert int(row["errors"]) >= 1 and "too many clients" in row["first_error"]
    assert int(row["complete"]) + int(row["not_complete"]) == int(row["trials"]) == 8 and row["duplicates"] == "0"


def test_percentile_is_numpys_linear_default():
    import numpy as np

    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 50, 95, 100):
        assert ceiling.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert ceiling.percentile([], 50) != ceiling.percentile([], 50)  # nan
