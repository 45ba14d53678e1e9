"""Checkpoints: the lab's format, plus what an exact resume needs.

The lab saves ``{"state_dict", "optimizer", "lr", "tfr", "last_epoch"}`` (its "optimizer" entry holds the
model's state again) and its Tester loads ``state_dict`` with strict=True. Ours keep those five keys, so
the lab's Tester loads them, with "optimizer" holding the real optimizer state, and add the LR scheduler,
the RNG states, the config, the best metric and ``next_epoch``. Everything is a tensor, number, string,
list or dict, so ``torch.load(weights_only=True)`` (the default since torch 2.6) reads them.

Writes are atomic (a temporary file in the same folder, fsync, rename): a kill during a save leaves the
previous file intact, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

FORMAT = "cvae-sweeps/1"
LAB_KEYS = ("state_dict", "optimizer", "lr", "tfr", "last_epoch")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


@contextlib.contextmanager
def signals_deferred(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them to the handlers in place before.

    ``torch.save`` to a Python file object writes through C++ callbacks; an interrupt raised inside one
    leaves the zip writer to finish on a closed file in its destructor, and the process aborts (SIGABRT)
    instead of unwinding. Outside the main thread, where Python never runs signal handlers, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A signal during the save is held until the file is in place (:func:`signals_deferred`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # fsync the folder so the rename itself survives a power loss.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(internal),
                             "python_version": version, "python_gauss": gauss}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s output."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (ours or the lab's) on the CPU.

    Raises:
        CheckpointError: missing, unreadable, or without a ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a cVAE checkpoint (no 'state_dict' key)")
    return ckpt


def is_ours(ckpt: dict[str, Any]) -> bool:
    """True for a checkpoint written by this project (resumable); False for the lab's."""
    return ckpt.get("format") == FORMAT
