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
import errno
import os
import random
import re
import shutil
import signal
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from cvae.core.config import ModelConfig
from cvae.core.model import CVAE, dims_from_state_dict
from torch import nn

FORMAT = "cvae-sweeps/1"
LAB_KEYS = ("state_dict", "optimizer", "lr", "tfr", "last_epoch")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


_deferring = False
"""True while a :func:`signals_deferred` block runs in the main thread (an inner block then does nothing)."""


@contextlib.contextmanager
def signals_deferred(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them to the handlers in place before.

    ``torch.save`` to a Python file object writes through C++ callbacks; an interrupt raised inside one
    leaves the zip writer to finish on a closed file in its destructor, and the process aborts (SIGABRT)
    instead of unwinding. Blocks nest: inside another one a block holds nothing itself, so a signal caught
    during it stays pending until the outermost block ends (the trainer defers a whole epoch's records,
    checkpoints and callbacks, and each checkpoint save defers again). Outside the main thread, where Python
    never runs signal handlers, this does nothing.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in signums}
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


TEMP_SUFFIX = ".tmp"
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
LOW_DISK_BYTES = 4 * 1024 * 1024
"""Free space under which a failed save is taken for a full disk: torch's zip writer reports one as
``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos``, without the errno."""


def _disk_full(err: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC/EDQUOT in the exception chain, or (torch's
    RuntimeError hides it) next to no free space left in ``folder`` right after the failure."""
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in DISK_FULL_ERRNOS:
            return True
        link = link.__cause__ or link.__context__
    if not isinstance(err, RuntimeError | OSError):
        return False
    try:
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        return False


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    The temporary file is ``.{name}.XXXXXXXX.tmp`` (:func:`stale_temporaries` finds those a kill left).
    A signal during the save is held until the file is in place (:func:`signals_deferred`).

    Raises:
        OSError: with errno ENOSPC when the disk is full, ``str()`` reading ``[Errno 28] No space left on
            device: cannot write checkpoint: '<path>'``; the temporary file is removed and ``path`` keeps
            its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            full = isinstance(err, Exception) and _disk_full(err, path.parent)  # before freeing the temp file
            Path(tmp).unlink(missing_ok=True)
            if full:
                raise OSError(errno.ENOSPC, "No space left on device: cannot write checkpoint", str(path)) from err
            raise
        # fsync the folder so the rename itself survives a power loss.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


_TEMP_NAME = re.compile(r"^\.(last|best|epoch=\d+)\.ckpt\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")
"""The temporary files :func:`atomic_save` writes for a trainer's checkpoints (``tempfile``'s 8 random
characters between the target's name and ``.tmp``)."""


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """The temporary checkpoint files in ``folder`` (not below it) that a killed save left behind:
    regular files named exactly as :func:`atomic_save` names them for ``last.ckpt``, ``best.ckpt`` and
    ``epoch=N.ckpt``. Nothing else matches."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries if _TEMP_NAME.match(e.name) and e.is_file(follow_symlinks=False))


def remove_stale_temporaries(folder: str | os.PathLike) -> tuple[int, int]:
    """Delete :func:`stale_temporaries` (a run's own ``save_root`` only, before it saves anything).

    Returns:
        (files removed, bytes freed).
    """
    count = size = 0
    for path in stale_temporaries(folder):
        try:
            nbytes = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        count += 1
        size += nbytes
    return count, size


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


def _sniff(path: Path) -> str | None:
    """Why ``path`` cannot be a checkpoint file at all, or None: torch.save writes a zip archive (the
    legacy format a pickle, which starts with byte 0x80)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as err:
        return f"cannot read checkpoint ({err.strerror})"
    if not head:
        return "empty file, not a checkpoint"
    if head.startswith(b"PK") or head[0] == 0x80 or zipfile.is_zipfile(path):
        return None
    start = head.split(b"\n", 1)[0][:24].decode("utf-8", "replace")
    return f"not a PyTorch checkpoint (no torch.save zip archive or pickle; it starts with {start!r})"


def _check_state_dict(path: Path, state_dict: Any) -> None:
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state_dict).__name__}, not a mapping of "
                              "parameter names to tensors")
    if not state_dict:
        raise CheckpointError(f"{path}: 'state_dict' is empty: the checkpoint holds no weights")
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: 'state_dict' has a key {key!r} that is not a parameter name")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: 'state_dict' entry {key!r} is a {type(value).__name__}, not a tensor")


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (ours or the lab's) on the CPU.

    Raises:
        CheckpointError: missing, unreadable, not a torch checkpoint, or without a ``state_dict`` that maps
            parameter names to tensors; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    problem = _sniff(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a cVAE checkpoint (no 'state_dict' key)")
    _check_state_dict(path, ckpt["state_dict"])
    return ckpt


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _key_mismatch(path: str | os.PathLike, expected: Mapping[str, torch.Tensor],
                  state_dict: Mapping[str, torch.Tensor]) -> str | None:
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if not (missing or unexpected):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_few(unexpected)})")
    return f"{path}: the state_dict is not this cVAE's: {'; '.join(parts)}"


def state_dict_dims(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> ModelConfig:
    """The model sizes a (lab or own) state_dict's tensors imply.

    Raises:
        CheckpointError: the state_dict is not a Lab-4 cVAE's; the message names the file and a few of the
            missing and unexpected keys.
    """
    try:
        return dims_from_state_dict(state_dict)  # type: ignore[arg-type]
    except (ValueError, IndexError, TypeError):
        # Parameter names do not depend on the sizes: the default model's tell what is missing.
        message = _key_mismatch(path, CVAE().state_dict(), state_dict)
        raise CheckpointError(message or f"{path}: the state_dict's tensors do not have a cVAE's shapes") from None


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``model.load_state_dict(state_dict, strict=True)``, its errors as one line naming the file.

    Raises:
        CheckpointError: missing or unexpected keys (a few of each named), or a tensor of another shape.
    """
    expected = model.state_dict()
    message = _key_mismatch(path, expected, state_dict)
    if message is not None:
        raise CheckpointError(message)
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: state_dict entry {key!r} has shape {tuple(state_dict[key].shape)}, "
                                  f"the model's is {tuple(tensor.shape)}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: the state_dict does not load into the model ({first})") from None


def is_ours(ckpt: dict[str, Any]) -> bool:
    """True for a checkpoint written by this project (resumable); False for the lab's."""
    return ckpt.get("format") == FORMAT
