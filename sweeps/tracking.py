"""W&B tracking for sweep trials: one W&B run per trial chain, and the sweep's summary run.

Every trial is one W&B run whose id is chosen by the caller, so a re-run after a crash resumes the same run
(``resume="allow"``). Charts use ``epoch`` as their x-axis, so a resumed run that re-logs an epoch just adds a
point instead of failing on W&B's own monotonic ``_step``.

Offline runs are read back (without a login or network) by :mod:`cvae.wandb_offline`.

``wandb`` is imported lazily: importing this module (and :func:`resolve_wandb_mode`) costs nothing.
"""

from __future__ import annotations

import json
import logging
import netrc
import numbers
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cvae.schema import BASELINE_TITLES
from cvae.wandb_offline import has_exit_record

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
    while not has_exit_record(run_dir):
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
