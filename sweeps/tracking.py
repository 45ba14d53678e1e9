"""W&B tracking for sweep trials, and a reader for offline runs that needs no login.

Every trial is one W&B run whose id is chosen by the caller, so a re-run after a crash resumes the same run
(``resume="allow"``). Charts use ``epoch`` as their x-axis, so a resumed run that re-logs an epoch just adds a
point instead of failing on W&B's own monotonic ``_step``.

Offline runs are W&B's own transaction logs (``<WANDB_DIR or cwd>/wandb/offline-run-<date>-<id>/run-<id>.wandb``):
a LevelDB-style log of protobuf ``Record`` messages that ``wandb sync`` uploads later. The reader here parses
them with wandb's protobuf classes and no network, so a sweep on an air-gapped machine can be checked on the
spot. wandb 0.31 no longer ships a Python reader for them (its ``DataStore`` went with the move to the Go
wandb-core), hence the small framing reader below.

``wandb`` is imported lazily: importing this module (and :func:`resolve_wandb_mode`) costs nothing.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import numbers
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from cvae.core.records import BASELINE_TITLES

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

log = logging.getLogger("cvae")

MODES = ("online", "offline", "disabled")
STATES = ("complete", "pruned", "failed")
DEFAULT_BASE_URL = "https://api.wandb.ai"

_ENV_MODE_ALIASES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                     "disabled": "disabled"}
"""WANDB_MODE values wandb itself accepts, mapped to the three modes (``dryrun``/``run`` are its old names)."""


class TrackingError(RuntimeError):
    """W&B was asked for and could not start; the message says why and what to do."""


# -- mode -----------------------------------------------------------------------------------------------------
def _netrc_path() -> Path:
    # Same lookup order as wandb's own login, so 'auto' agrees with what wandb.init would find.
    if env := os.environ.get("NETRC"):
        return Path(env).expanduser()
    for name in ("~/.netrc", "~/_netrc"):
        path = Path(name).expanduser()
        if path.exists():
            return path
    return Path("~/.netrc").expanduser()


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    try:
        creds = netrc.netrc(str(_netrc_path())).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        # No file, or one we cannot parse: wandb would not log in from it either.
        return False
    return bool(creds and creds[2])


def resolve_wandb_mode(mode: str) -> str:
    """The W&B mode a run should use.

    ``'auto'`` -> ``'online'`` when W&B credentials exist (``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE``
    set, or an entry for the W&B host, ``api.wandb.ai`` unless ``WANDB_BASE_URL`` says otherwise, in
    ``$NETRC`` / ``~/.netrc``), else ``'offline'``. An explicit ``WANDB_MODE`` environment variable
    (``online``/``offline``/``disabled``, or wandb's older ``run``/``dryrun``) wins over ``'auto'``.
    ``'online'``, ``'offline'`` and ``'disabled'`` pass through.

    Args:
        mode: ``auto``, ``online``, ``offline`` or ``disabled`` (case-insensitive).

    Returns:
        ``online``, ``offline`` or ``disabled``.

    Raises:
        ValueError: ``mode`` is none of the above.
    """
    wanted = str(mode).strip().lower()
    if wanted in MODES:
        return wanted
    if wanted != "auto":
        raise ValueError(f"wandb mode {mode!r} is not auto, online, offline or disabled")
    env_mode = _ENV_MODE_ALIASES.get(os.environ.get("WANDB_MODE", "").strip().lower())
    if env_mode is not None:
        return env_mode
    return "online" if _has_credentials() else "offline"


# -- starting a run -------------------------------------------------------------------------------------------
def _settings() -> Any:
    """Quiet settings for runs started in a long-lived sweep process."""
    import wandb

    wanted: dict[str, Any] = {
        # The sweep prints its own progress; W&B's banner per trial and console capture only add noise.
        "silent": True,
        "quiet": True,
        "console": "off",
        # Flush the transaction log every second instead of every 15 s: a worker killed hard (OOM, SIGKILL)
        # otherwise loses up to 15 s of epochs, since wandb-core buffers them in memory.
        "x_transaction_log_flush_interval": 1.0,
    }
    # Private (x_) settings come and go between wandb versions, and Settings forbids unknown fields.
    fields = getattr(wandb.Settings, "model_fields", {})
    return wandb.Settings(**{k: v for k, v in wanted.items() if k in fields or not k.startswith("x_")})


_SERVICE_TOKEN = re.compile(r"^\d+-(?P<pid>\d+)-")


def _detach_inherited_service() -> None:
    """Make this process start its own wandb-core instead of using its parent's.

    wandb saves its service address in ``WANDB_SERVICE`` (``<version>-<owner pid>-...``) and child
    processes connect to it. For sweep workers that is harmful: a worker killed mid-trial leaves its run's
    stream open in the parent's service, and the retry of that trial, same run id, then fails with "run ID
    ... is in use". A service of its own dies with the worker and frees the id.
    """
    token = os.environ.get("WANDB_SERVICE", "")
    match = _SERVICE_TOKEN.match(token)
    if match and int(match.group("pid")) != os.getpid():
        log.debug("not sharing the parent's wandb service (%s)", token)
        del os.environ["WANDB_SERVICE"]


FINISH_WAIT_S = 10.0
"""How long :func:`_finish_run` waits for wandb-core to write a finished run's exit record to disk."""


def _finish_run(run: Run, run_dir: Path | None, exit_code: int) -> None:
    """``run.finish``, then wait until the run's ``.wandb`` file holds its exit record.

    ``run.finish()`` returns once wandb-core has the exit record, not once it is on disk: wandb-core closes
    the transaction log asynchronously, milliseconds later. Waiting makes "finish returned" mean "the file
    is complete", for anything reading it in this process and for a retry reusing the run id.
    """
    run.finish(exit_code=exit_code)
    if run_dir is None or not any(run_dir.glob("*.wandb")):
        return  # disabled, or an online run told to skip its transaction log
    deadline = time.monotonic() + FINISH_WAIT_S
    pause = 0.005
    while not _has_exit_record(run_dir):
        if time.monotonic() > deadline:
            log.debug("W&B run folder %s: no exit record after %.0f s", run_dir, FINISH_WAIT_S)
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def _start_run(*, project: str, entity: str | None, group: str | None, name: str | None, run_id: str,
               config: Mapping[str, Any], tags: Sequence[str], mode: str, job_type: str,
               notes: str | None) -> Run:
    if mode not in MODES:
        raise ValueError(f"wandb mode {mode!r} is not online, offline or disabled (resolve 'auto' first)")
    _detach_inherited_service()
    import wandb

    try:
        return wandb.init(
            project=project, entity=entity, group=group, name=name, id=run_id, resume="allow",
            job_type=job_type, config=dict(config), tags=list(tags), notes=notes, mode=mode,
            # W&B's convention: files go under WANDB_DIR when set, else the working directory. Passing it
            # explicitly also honours a WANDB_DIR changed after wandb's first use in this process, which
            # wandb itself would ignore (it snapshots the environment once).
            dir=os.environ.get("WANDB_DIR") or None,
            # One process runs many trials one after another; "create_new" never returns or finishes a
            # run other than the one asked for.
            reinit="create_new",
            settings=_settings(),
        )
    except Exception as err:  # noqa: BLE001 - wandb raises CommError, UsageError, AuthenticationError, ...
        if mode == "online":
            raise TrackingError(
                f"W&B online was requested but could not start ({_first_line(err)}); use wandb.mode: offline, "
                "or set WANDB_API_KEY (and WANDB_BASE_URL for a private server)"
            ) from err
        raise TrackingError(f"W&B {mode} run {run_id!r} could not start ({_first_line(err)})") from err


# -- trial trackers -------------------------------------------------------------------------------------------
class TrialTracker(Protocol):
    """What a trial reports to: per-epoch metrics, then one final state."""

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record one epoch's metrics (keys like ``train/loss``, ``val/psnr``, ``lr``)."""
        ...

    def finish(self, *, state: str, summary: Mapping[str, Any], psnr_per_frame: Sequence[float] | None = None,
               video: str | os.PathLike[str] | None = None, reason: str = "",
               baselines: Mapping[str, Sequence[float]] | None = None) -> None:
        """Close the trial's run with its state (complete | pruned | failed) and final summary."""
        ...


class NullTracker:
    """A tracker that records nothing: ``wandb.mode: disabled``."""

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Do nothing."""

    def finish(self, *, state: str, summary: Mapping[str, Any], psnr_per_frame: Sequence[float] | None = None,
               video: str | os.PathLike[str] | None = None, reason: str = "",
               baselines: Mapping[str, Sequence[float]] | None = None) -> None:
        """Do nothing."""


_ACTIVE: dict[str, WandbTrialTracker] = {}
"""Unfinished trackers of this process by run id."""


class WandbTrialTracker:
    """One trial as one W&B run, resumable by its id.

    Raises:
        TrackingError: from the constructor, when the run cannot start. Online never falls back to offline:
            a user who asked for online would otherwise find an empty dashboard after the sweep.
    """

    def __init__(self, *, project: str, entity: str | None, group: str, name: str, run_id: str,
                 config: Mapping[str, Any], tags: Sequence[str], mode: str, job_type: str = "trial",
                 notes: str | None = None) -> None:
        """Start (or resume) the run ``run_id``; see the class docstring for errors."""
        self.run_id = run_id
        self.mode = mode
        self._finished = False
        self._last_epoch: int | None = None
        stale = _ACTIVE.get(run_id)
        if stale is not None and not stale.finished:
            # wandb refuses a second live run with the same id in one process ("run ID ... is in use"); an
            # attempt that never reached finish() (a caller's bug or an escaped exception) must not block
            # the retry.
            log.warning("W&B run %s: an earlier attempt was never finished; closing it as failed", run_id)
            stale.finish(state="failed", summary={}, reason="superseded by a new attempt")
        self._run = _start_run(project=project, entity=entity, group=group, name=name, run_id=run_id,
                               config=config, tags=tags, mode=mode, job_type=job_type, notes=notes)
        self.run_dir: Path | None = Path(self._run.sync_dir) if mode != "disabled" else None
        """The run's folder (``.../wandb/offline-run-<date>-<id>`` offline); None when disabled."""
        self.url: str | None = self._run.url if mode == "online" else None
        """The run's page on the W&B server; None unless online."""
        _ACTIVE[run_id] = self
        try:
            self._run.define_metric("epoch")
            # Every chart against epoch: W&B's _step restarts at 0 in a resumed offline run and counts the
            # final media row as a step; epoch means the same thing in every run of the sweep.
            self._run.define_metric("*", step_metric="epoch")
        except Exception as err:  # noqa: BLE001 - the x-axis is cosmetic; the metrics still get logged
            log.warning("W&B run %s: could not set epoch as the x-axis: %s", run_id, err)

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` has run."""
        return self._finished

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch's metrics with ``epoch`` as their x value.

        An epoch logged twice (a resumed run repeating the epoch it crashed in) is just logged again. A W&B
        problem is a warning, not an error: losing a chart point must not kill a long training run.
        """
        if self._finished:
            log.debug("W&B run %s: epoch %d logged after finish, ignored", self.run_id, epoch)
            return
        try:
            self._run.log({**metrics, "epoch": int(epoch)})
            self._last_epoch = int(epoch)
        except Exception as err:  # noqa: BLE001 - see the docstring
            log.warning("W&B run %s: could not log epoch %d: %s", self.run_id, epoch, err)

    def finish(self, *, state: str, summary: Mapping[str, Any], psnr_per_frame: Sequence[float] | None = None,
               video: str | os.PathLike[str] | None = None, reason: str = "",
               baselines: Mapping[str, Sequence[float]] | None = None) -> None:
        """Log the final media, write the summary, and close the run; a second call does nothing.

        Args:
            state: ``complete``, ``pruned`` or ``failed``; ``failed`` closes the run with exit code 1, so W&B
                shows it as failed.
            summary: Final values (the sweep metric, best epoch, ...), merged into the run summary.
            psnr_per_frame: Validation PSNR of each predicted frame (frame 1 first): logged as a table
                (``val/psnr_per_frame``) and a line chart (``val/psnr_per_frame_plot``).
            baselines: The trivial predictors' PSNR of the same frames (``{"copy_first": [...], ...}``):
                table columns ``psnr_copy_first``, ...; copy-first and mean-frame are drawn on the chart.
            video: A GIF of a validation rollout, logged as ``val/rollout`` when the file exists.
            reason: Why the trial failed or was pruned (summary ``fail_reason``).

        A table, video or summary that W&B cannot take is a warning; the run is closed regardless.
        """
        if self._finished:
            return
        self._finished = True
        if _ACTIVE.get(self.run_id) is self:
            del _ACTIVE[self.run_id]
        if state not in STATES:
            log.warning("W&B run %s: unknown state %r recorded as is", self.run_id, state)
        import wandb

        media: dict[str, Any] = {}
        if psnr_per_frame is not None and len(psnr_per_frame) > 0:
            try:
                refs = {name: list(v) for name, v in (baselines or {}).items() if len(v) == len(psnr_per_frame)}
                columns = ["frame", "psnr", *(f"psnr_{name}" for name in refs)]
                rows = [[i, float(v), *(float(r[i - 1]) for r in refs.values())]
                        for i, v in enumerate(psnr_per_frame, start=1)]
                table = wandb.Table(columns=columns, data=rows)
                media["val/psnr_per_frame"] = table
                title = "Validation PSNR per frame"
                plotted = [name for name in ("copy_first", "mean_frame") if name in refs]
                if plotted:
                    # The model beside the trivial predictors it must beat (copy_prev, an oracle far above,
                    # stays in the table: on the chart it would flatten the other lines).
                    frames = list(range(1, len(psnr_per_frame) + 1))
                    media["val/psnr_per_frame_plot"] = wandb.plot.line_series(
                        xs=frames, ys=[list(map(float, psnr_per_frame)), *(refs[n] for n in plotted)],
                        keys=["model", *(BASELINE_TITLES[n] for n in plotted)], title=title, xname="frame")
                else:
                    media["val/psnr_per_frame_plot"] = wandb.plot.line(table, "frame", "psnr", title=title)
            except Exception as err:  # noqa: BLE001 - see the docstring
                log.warning("W&B run %s: PSNR-per-frame table not logged: %s", self.run_id, err)
        if video is not None:
            if Path(video).is_file():
                try:
                    media["val/rollout"] = wandb.Video(str(video), format="gif")
                except Exception as err:  # noqa: BLE001
                    log.warning("W&B run %s: rollout video %s not logged: %s", self.run_id, video, err)
            else:
                log.warning("W&B run %s: rollout video %s does not exist; not logged", self.run_id, video)
        if media:
            if self._last_epoch is not None:
                # Pin the media row to the last epoch explicitly rather than rely on wandb's step sync.
                media["epoch"] = self._last_epoch
            try:
                self._run.log(media)
            except Exception as err:  # noqa: BLE001
                log.warning("W&B run %s: final media not logged: %s", self.run_id, err)

        final = {**summary, "state": state}
        if reason:
            final["fail_reason"] = reason
        try:
            self._run.summary.update(final)
        except Exception as err:  # noqa: BLE001 - a bad value in summary must not lose the state
            log.warning("W&B run %s: summary not fully written: %s", self.run_id, err)
            try:
                self._run.summary.update({k: v for k, v in final.items() if k in ("state", "fail_reason")})
            except Exception:  # noqa: BLE001
                pass
        try:
            _finish_run(self._run, self.run_dir, 0 if state in ("complete", "pruned") else 1)
        except Exception as err:  # noqa: BLE001 - the trial's outcome is already in Optuna; report only
            log.warning("W&B run %s: finishing failed: %s", self.run_id, err)


# -- the sweep's summary run ----------------------------------------------------------------------------------
def _table_columns(trials: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns (union of keys, first-seen order) and rows W&B's typed Table accepts.

    A W&B Table types each column from its values and rejects a row that disagrees, so a column keeps its
    values only when they are all numbers, all strings or all booleans (missing values are None);
    otherwise, and for anything else (dicts, lists, paths), every value of that column becomes a string.
    """
    columns = list(dict.fromkeys(str(k) for t in trials for k in t))
    rows = [[t.get(c) for c in columns] for t in trials]

    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, numbers.Real):
            return "number"
        if isinstance(v, str):
            return "str"
        return "other"

    for j in range(len(columns)):
        kinds = {kind(r[j]) for r in rows if r[j] is not None}
        if len(kinds) > 1 or kinds == {"other"}:
            for r in rows:
                if r[j] is not None and not isinstance(r[j], str):
                    r[j] = json.dumps(r[j], default=str) if isinstance(r[j], (dict, list, tuple)) else str(r[j])
        elif kinds == {"number"}:
            for r in rows:
                if r[j] is not None:
                    r[j] = float(r[j]) if not isinstance(r[j], numbers.Integral) else int(r[j])
    return columns, rows


def log_sweep_summary(*, project: str, entity: str | None, group: str, name: str, run_id: str, mode: str,
                      trials: Sequence[Mapping[str, Any]], importances: Mapping[str, float], spec_text: str,
                      best: Mapping[str, Any] | None = None) -> None:
    """One ``sweep-summary`` run: all trials as a table, parameter importances as a bar chart, the spec.

    Args:
        project: W&B project.
        entity: W&B entity (team or user); None for the default one.
        group: Run group, the study name, so the summary sits with its trials.
        name: Display name of the summary run.
        run_id: Its id; the same id again updates the same run (``resume="allow"``).
        mode: ``online``, ``offline`` or ``disabled`` (nothing is logged).
        trials: One mapping per trial (number, state, value, params, ...); logged as table ``sweep/trials``.
        importances: Parameter -> importance (Optuna's); a bar chart ``sweep/param_importance`` and summary
            ``importance/<param>``, skipped when empty.
        spec_text: The sweep spec as text, stored as ``config["spec"]``.
        best: Optional best trial's values, stored as summary ``best/<key>`` (the caller knows the direction).

    Raises:
        TrackingError: The run could not start (see :class:`WandbTrialTracker`).
    """
    if mode == "disabled":
        return
    import wandb

    run = _start_run(project=project, entity=entity, group=group, name=name, run_id=run_id,
                     config={"spec": spec_text}, tags=[], mode=mode, job_type="sweep-summary", notes=None)
    run_dir = Path(run.sync_dir)
    exit_code = 0
    try:
        data: dict[str, Any] = {}
        if trials:
            columns, rows = _table_columns(trials)
            data["sweep/trials"] = wandb.Table(columns=columns, data=rows)
        values = {str(k): float(v) for k, v in importances.items()}
        if values:
            table = wandb.Table(columns=["parameter", "importance"],
                                data=sorted(([k, v] for k, v in values.items()), key=lambda kv: -kv[1]))
            data["sweep/param_importance"] = wandb.plot.bar(table, "parameter", "importance",
                                                            title="Parameter importance")
        if data:
            run.log(data)
        summary: dict[str, Any] = {"n_trials": len(trials)}
        summary.update({f"importance/{k}": v for k, v in values.items()})
        if best:
            summary.update({f"best/{k}": v for k, v in best.items()})
        run.summary.update(summary)
    except Exception:
        exit_code = 1
        raise
    finally:
        _finish_run(run, run_dir, exit_code)


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


def _has_exit_record(run_dir: Path) -> bool:
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
    name = group = job_type = None
    tags: tuple[str, ...] = ()
    start_time: float | None = None
    exit_code: int | None = None
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
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
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - protobuf DecodeError, OSError, bad JSON: all "unreadable"
        raise ValueError(f"{path}: unreadable W&B transaction log ({type(err).__name__}: {err})") from err
    config.pop("_wandb", None)
    summary.pop("_wandb", None)
    return OfflineRun(run_id=run_id, path=folder, name=name, group=group, job_type=job_type, tags=tags,
                      config=config, history=history, summary=summary, exit_code=exit_code,
                      start_time=start_time, paths=(folder,))


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
        for run in runs:
            config.update(run.config)
            summary.update(run.summary)
            history.extend(run.history)
        last = runs[-1]
        merged[run_id] = OfflineRun(
            run_id=run_id, path=last.path,
            name=next((r.name for r in reversed(runs) if r.name), None),
            group=next((r.group for r in reversed(runs) if r.group), None),
            job_type=next((r.job_type for r in reversed(runs) if r.job_type), None),
            tags=next((r.tags for r in reversed(runs) if r.tags), ()),
            config=config, history=history, summary=summary, exit_code=last.exit_code,
            start_time=runs[0].start_time, paths=tuple(r.path for r in runs),
        )
    return merged
