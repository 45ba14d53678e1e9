"""Reading W&B offline runs back without a login or network: their ``.wandb`` transaction logs.

Offline runs are W&B's own transaction logs (``<WANDB_DIR or cwd>/wandb/offline-run-<date>-<id>/run-<id>.wandb``):
a LevelDB-style log of protobuf ``Record`` messages that ``wandb sync`` uploads later. The reader here parses
them with wandb's protobuf classes and no network, so a sweep on an air-gapped machine can be checked on the
spot. wandb 0.31 no longer ships a Python reader for them (its ``DataStore`` went with the move to the Go
wandb-core), hence the small framing reader below.

Used by the analysis (``cvae analysis --wandb-dir``), the tracker (whether a run's exit record is written)
and the tests; importing it costs nothing (wandb's protobuf classes are imported when a file is read).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("cvae")

# -- reading offline runs back --------------------------------------------------------------------------------
# The transaction log's framing (LevelDB's log format, as wandb writes it): a 7-byte file header
# (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of records, each with a 7-byte header
# (crc32 of type+data, little-endian length, type) and data; a protobuf Record may span FIRST/MIDDLE/LAST
# pieces across blocks, and a block's last <7 bytes are zero padding.
_FILE_HEADER = struct.Struct("<4sHB")
_FILE_IDENT, _FILE_MAGIC, _FILE_VERSION = b":W&B", 0xBEE1, 0
_RECORD_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) & 0xFFFFFFFF for t in (_FULL, _FIRST, _MIDDLE, _LAST)}


def _scan_records(path: Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file, in order.

    A torn last record (the writer was killed mid-flush) ends the scan quietly; anything else malformed
    raises ValueError naming the file.
    """
    data = path.read_bytes()
    if len(data) < _FILE_HEADER.size:
        raise ValueError(f"{path}: not a W&B transaction log (only {len(data)} bytes)")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if (ident, magic) != (_FILE_IDENT, _FILE_MAGIC):
        raise ValueError(f"{path}: not a W&B transaction log (bad header)")
    if version != _FILE_VERSION:
        raise ValueError(f"{path}: W&B transaction log version {version} is not supported (only 0)")
    pos, size = _FILE_HEADER.size, len(data)
    pending: bytearray | None = None
    while pos < size:
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD_HEADER.size:
            pos += left  # block trailer
            continue
        if pos + _RECORD_HEADER.size > size:
            log.debug("%s: torn record header at byte %d ignored", path, pos)
            return
        crc, length, rtype = _RECORD_HEADER.unpack_from(data, pos)
        if rtype == 0 and length == 0:
            pos += left  # zero-filled rest of a block (preallocated or padded)
            continue
        start, end = pos + _RECORD_HEADER.size, pos + _RECORD_HEADER.size + length
        if end > size:
            log.debug("%s: torn record at byte %d ignored", path, pos)
            return
        chunk = data[start:end]
        if rtype not in _TYPE_CRC or zlib.crc32(chunk, _TYPE_CRC[rtype]) & 0xFFFFFFFF != crc:
            if end == size:
                log.debug("%s: torn last record at byte %d ignored", path, pos)
                return
            raise ValueError(f"{path}: corrupt record at byte {pos} (bad checksum or type {rtype})")
        pos = end
        if rtype == _FULL:
            yield chunk
        elif rtype == _FIRST:
            pending = bytearray(chunk)
        elif pending is None:
            raise ValueError(f"{path}: record piece of type {rtype} at byte {start} without its first piece")
        elif rtype == _MIDDLE:
            pending += chunk
        else:
            yield bytes(pending + chunk)
            pending = None


def has_exit_record(run_dir: Path) -> bool:
    """Whether the run folder's ``.wandb`` file ends with an exit record (only its last records are parsed)."""
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        path = next(iter(sorted(run_dir.glob("*.wandb"))))
        tail = list(_scan_records(path))[-20:]
    except (StopIteration, OSError, ValueError):
        return False
    record = pb.Record()
    for raw in reversed(tail):
        try:
            record.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a record being written; look again later
            return False
        if record.WhichOneof("record_type") == "exit":
            return True
    return False


def _path_of(item: Any) -> list[str]:
    # Newer wandb writes nested_key (a path: "train/loss" stays one key), older writes key.
    return list(item.nested_key) or [item.key]


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _remove_path(target: dict[str, Any], path: list[str]) -> None:
    node: Any = target
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _loads(text: str) -> Any:
    # wandb writes NaN/Infinity as bare words, which json.loads accepts.
    return json.loads(text)


def _history_value(item: Any) -> Any:
    if item.value_json:
        return _loads(item.value_json)
    # wandb's typed history values (a oneof), written instead of value_json by some versions.
    which = item.WhichOneof("value")
    if which is None or which == "none":
        return None
    if which == "json":
        return _loads(item.json)
    return getattr(item, which)


def _apply_updates(target: dict[str, Any], record: Any) -> None:
    """Apply a ConfigRecord or SummaryRecord (updates and removals) to a plain dict."""
    for item in record.update:
        _set_path(target, _path_of(item), _loads(item.value_json) if item.value_json else None)
    for item in record.remove:
        _remove_path(target, _path_of(item))


@dataclass(frozen=True)
class OfflineRun:
    """One W&B run as its ``.wandb`` file(s) recorded it.

    ``config`` is the user's config (values as logged; the ``.wandb`` records carry no ``{"value": ...}``
    wrapping, that belongs to ``config.yaml``) without wandb's ``_wandb`` bookkeeping. ``history`` has one
    dict per logged step, nested keys as nested dicts (a logged image is ``{"_type": ..., "path": ...}``)
    and wandb's ``_step``/``_runtime``/``_timestamp`` included. ``summary`` is the final summary (also
    without ``_wandb``). ``exit_code`` is None when the run never finished (killed process).
    """

    run_id: str
    path: Path
    name: str | None
    group: str | None
    job_type: str | None
    tags: tuple[str, ...]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    exit_code: int | None
    start_time: float | None = None
    """Seconds since the epoch when this (segment of the) run started; None if not recorded."""
    paths: tuple[Path, ...] = field(default=())
    """Every folder the run was read from, oldest first (several after offline resumes); ``path`` is the last."""
    console: tuple[str, ...] = ()
    """The captured console (stdout and stderr), one item a line, as the run's Logs tab shows it."""
    artifacts: tuple[dict[str, Any], ...] = ()
    """Artifacts the run logged, in order: ``{"name", "type", "aliases", "metadata"}``."""
    sweep_id: str | None = None
    """The W&B sweep the run belongs to (a ``wandb agent`` run), else None."""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``define_metric`` calls by metric name (or glob): ``{"step_metric": "epoch", "summary": ["max"]}``."""


_RUN_DIR_PREFIX = re.compile(r"^(?:offline-run|run)-\d{8}_\d{6}-")


def find_offline_runs(wandb_dir: str | os.PathLike[str]) -> list[Path]:
    """Run folders (``offline-run-*``, and online ``run-*``) in ``wandb_dir`` or ``wandb_dir/wandb``, by name.

    Args:
        wandb_dir: ``WANDB_DIR`` (whose ``wandb/`` subfolder holds the runs) or that ``wandb/`` folder itself.
    """
    root = Path(wandb_dir)
    found: set[Path] = set()
    for folder in (root, root / "wandb"):
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            # latest-run is a symlink to one of them, and not matched by the pattern anyway.
            if child.is_dir() and not child.is_symlink() and child.name.startswith(("offline-run-", "run-")):
                found.add(child)
    return sorted(found, key=lambda p: (p.name, str(p)))


def read_offline_run(run_dir: str | os.PathLike[str]) -> OfflineRun:
    """Read one run folder's ``.wandb`` file with wandb's protobuf ``Record`` classes (no login, no network).

    Raises:
        ValueError: The folder has no ``.wandb`` file, or it cannot be read or parsed (the path is in the
            message).
    """
    folder = Path(run_dir)
    files = sorted(folder.glob("*.wandb")) if folder.is_dir() else []
    if not files:
        raise ValueError(f"{folder}: no .wandb file (not a W&B run folder)")
    path = next((f for f in files if f.name.startswith("run-")), files[0])
    try:
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError as err:  # pragma: no cover - wandb is a dependency of the sweeps
        raise ValueError(f"{path}: cannot read without the wandb package ({err})") from err

    run_id = path.stem[len("run-"):] if path.stem.startswith("run-") else path.stem
    name = group = job_type = sweep_id = None
    tags: tuple[str, ...] = ()
    start_time: float | None = None
    exit_code: int | None = None
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    console: list[str] = []
    partial = ""
    artifacts: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, Any]] = {}
    try:
        for raw in _scan_records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                run_id = run.run_id or run_id
                name = run.display_name or name
                group = run.run_group or group
                job_type = run.job_type or job_type
                tags = tuple(run.tags) or tags
                sweep_id = run.sweep_id or sweep_id
                if run.HasField("start_time"):
                    start_time = run.start_time.seconds + run.start_time.nanos / 1e9
                _apply_updates(config, run.config)
                _apply_updates(summary, run.summary)
            elif kind == "config":
                _apply_updates(config, record.config)
            elif kind == "summary":
                _apply_updates(summary, record.summary)
            elif kind == "history":
                row: dict[str, Any] = {}
                for item in record.history.item:
                    _set_path(row, _path_of(item), _history_value(item))
                history.append(row)
            elif kind == "exit":
                exit_code = int(record.exit.exit_code)
            elif kind in ("output_raw", "output"):
                # Writes as they came: a line may arrive in pieces, its newline last.
                lines = (partial + getattr(record, kind).line).split("\n")
                partial = lines.pop()
                console.extend(line.rstrip("\r") for line in lines)
            elif kind == "artifact":
                art = record.artifact
                artifacts.append({"name": art.name, "type": art.type, "aliases": list(art.aliases),
                                  "metadata": _loads(art.metadata) if art.metadata else {}})
            elif kind == "metric":
                m = record.metric
                summary_of = [f.name for f, on in m.summary.ListFields() if on] if m.HasField("summary") else []
                metrics[m.name or m.glob_name] = {"step_metric": m.step_metric or None, "summary": summary_of}
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - protobuf DecodeError, OSError, bad JSON: all "unreadable"
        raise ValueError(f"{path}: unreadable W&B transaction log ({type(err).__name__}: {err})") from err
    config.pop("_wandb", None)
    summary.pop("_wandb", None)
    if partial:
        console.append(partial)
    return OfflineRun(run_id=run_id, path=folder, name=name, group=group, job_type=job_type, tags=tags,
                      config=config, history=history, summary=summary, exit_code=exit_code,
                      start_time=start_time, paths=(folder,), console=tuple(console),
                      artifacts=tuple(artifacts), sweep_id=sweep_id, metrics=metrics)


def _time_order(run: OfflineRun) -> tuple[float, str, int]:
    # Folder names only have 1 s resolution and get a "-1", "-2" suffix when a second run of the same id
    # starts within the same second; the recorded start time orders segments, the numeric suffix breaks ties.
    name = run.path.name
    prefix = _RUN_DIR_PREFIX.match(name)
    rest = name[prefix.end():] if prefix else name
    suffix = 0
    if rest.startswith(run.run_id + "-") and rest[len(run.run_id) + 1:].isdigit():
        suffix = int(rest[len(run.run_id) + 1:])
    return (run.start_time if run.start_time is not None else math.inf, prefix.group(0) if prefix else name,
            suffix)


def read_offline_runs_merged(wandb_dir: str | os.PathLike[str]) -> dict[str, OfflineRun]:
    """Every run under ``wandb_dir``, offline resumes merged: run id -> run.

    A run resumed offline (same id, ``resume="allow"``, a later process) gets a folder of its own; its
    segments are merged in time order: history concatenated (an epoch repeated after a crash appears
    twice), config and summary updated key by key with the later segment winning, name/group/job type/tags
    from the latest segment that has them, and the exit code of the latest segment (None if it never
    finished).

    Raises:
        ValueError: A run folder without a readable ``.wandb`` file (the path is in the message).
    """
    segments: dict[str, list[OfflineRun]] = {}
    for folder in find_offline_runs(wandb_dir):
        run = read_offline_run(folder)
        segments.setdefault(run.run_id, []).append(run)
    merged: dict[str, OfflineRun] = {}
    for run_id, runs in segments.items():
        runs.sort(key=_time_order)
        config: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        history: list[dict[str, Any]] = []
        metrics: dict[str, dict[str, Any]] = {}
        for run in runs:
            config.update(run.config)
            summary.update(run.summary)
            history.extend(run.history)
            metrics.update(run.metrics)
        last = runs[-1]
        merged[run_id] = OfflineRun(
            run_id=run_id, path=last.path,
            name=next((r.name for r in reversed(runs) if r.name), None),
            group=next((r.group for r in reversed(runs) if r.group), None),
            job_type=next((r.job_type for r in reversed(runs) if r.job_type), None),
            tags=next((r.tags for r in reversed(runs) if r.tags), ()),
            config=config, history=history, summary=summary, exit_code=last.exit_code,
            start_time=runs[0].start_time, paths=tuple(r.path for r in runs),
            console=tuple(line for r in runs for line in r.console),
            artifacts=tuple(a for r in runs for a in r.artifacts), metrics=metrics,
            sweep_id=next((r.sweep_id for r in reversed(runs) if r.sweep_id), None),
        )
    return merged
