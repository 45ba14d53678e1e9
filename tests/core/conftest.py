"""Fixtures of core's tests.

- ``full_disk_dir``: a 256 KiB tmpfs mounted for this test only (root only; the test is skipped, with the
  reason, where it cannot mount one), to run real writes into a full disk. Unmounted afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def full_disk_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty 256 KiB tmpfs: anything larger written there fails with ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    where = tmp_path / "disk"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or f'mount exited {proc.returncode}'}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
