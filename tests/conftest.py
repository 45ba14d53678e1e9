"""Shared fixtures.

- ``_isolated_env`` (autouse, session): points ``CVAE_CACHE_DIR`` at a per-session temp folder so no test
  writes the decoded-frame cache to ``~/.cache``, and sets ``WANDB_MODE=offline`` and ``MPLBACKEND=Agg``
  so nothing reaches the network or opens a window. Subprocesses started by tests inherit them.
- ``wandb_dir``: a fresh offline WANDB_DIR with W&B's staging kept out of $HOME.
- ``tiny_dataset`` (session): a small generated dataset in the lab's layout (96 training frames in two
  48-frame videos, 24 validation frames, 2 test sequences of 24 poses, 32x64 PNGs). Treat it as
  read-only; copy it (``shutil.copytree``) before changing anything in it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _XDIST_WORKERS > 1:
    # Tests run in pytest-xdist workers side by side (`make test`): each worker's torch, and the processes its
    # tests start, get their share of the cores (two processes of 2 threads each on 2 cores run 10x slower).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _CORES // _XDIST_WORKERS)))

TINY_DATASET = dict(
    train_frames=96, train_video_len=48, val_frames=24, test_sequences=2, test_frames=24, size=(32, 64), seed=0
)
"""The arguments of :func:`core.synth.generate_dataset` behind ``tiny_dataset``."""


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The logging set-up each test started with, back after it: a CLI run in process (``main([...])``, the
    sweep worker) configures the root logger as a command does (``logging.basicConfig``, ``force=True`` in the
    sweep CLI), which would otherwise send the next tests' log lines to their stderr."""
    root, ours = logging.getLogger(), logging.getLogger("cvae")
    handlers, level, our_level = list(root.handlers), root.level, ours.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    ours.setLevel(our_level)


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Per-session frame cache and offline tooling; yields the cache folder."""
    cache = tmp_path_factory.mktemp("cvae-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CVAE_CACHE_DIR", str(cache))
        mp.setenv("WANDB_MODE", "offline")
        # W&B stages tables and artifacts under $HOME unless told otherwise.
        mp.setenv("WANDB_DATA_DIR", str(cache / "wandb-data"))
        mp.setenv("WANDB_CACHE_DIR", str(cache / "wandb-cache"))
        mp.setenv("WANDB_CONFIG_DIR", str(cache / "wandb-config"))
        mp.setenv("MPLBACKEND", "Agg")
        yield cache


@pytest.fixture
def wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh WANDB_DIR, offline and silent, with none of W&B's run-choosing variables of the caller; its
    staging and cache folders kept out of $HOME (offline tables are staged under WANDB_DATA_DIR)."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_PROJECT",
                 "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_RUN_ID", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    """Every test starts with the process's thread count: a test that sets torch's threads (a trainer with
    num_threads, an in-process worker) must not slow down every later test in this session."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(before or _DEFAULT_THREADS)


_DEFAULT_THREADS = max(1, _CORES // _XDIST_WORKERS)
"""torch's own default on Linux: one thread per core this process may use (its share under pytest-xdist)."""


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a small generated dataset (see ``TINY_DATASET``); read-only."""
    from cvae.core.synth import generate_dataset

    root = tmp_path_factory.mktemp("tiny-dataset") / "data"
    generate_dataset(root, **TINY_DATASET)
    return root
