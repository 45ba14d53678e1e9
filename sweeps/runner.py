"""Running a sweep: the study and its queue, workers that claim trials, and one trial's life.

The queue. When the study is created, every trial the sweep will run is enqueued as a WAITING trial: the
grid's points in the spec's ``grid_order`` (times ``replicates``), or ``run_cap`` placeholders whose
parameters the sampler fills in when a worker claims them. Workers claim WAITING trials one at a time with
the storage's atomic state change (the mechanism Optuna's own ``ask`` uses), and never ask the sampler for
trials beyond the queue.
So ``run_cap`` is exact and a grid point runs once, however many workers on however many machines.

Faults (``docs/reliability.md``). A worker beats for a trial from before its claim to its end. A trial whose
heartbeat stops (the worker was killed) is failed by whichever worker notices first, which enqueues a retry
with the same parameters (:func:`requeue`). The retry resumes from the trial's last epoch checkpoint, in the
same run folder and the same W&B run: both are named after the first trial of the retry chain. Ctrl-C,
SIGTERM, and faults of the machine (a missing dataset, a full disk, W&B that cannot start) fail the running
trial and enqueue its retry at once, so the next ``cvae sweep run`` after the fix resumes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import resource
import socket
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import torch
from cvae.core.checkpoint import CheckpointError
from cvae.core.config import ConfigError
from cvae.core.data import DatasetError
from cvae.core.records import (
    BASELINE_COLUMNS,
    BASELINE_NAMES,
    BASELINES_CSV,
    MARGIN_COLUMN,
    read_csv,
    write_gif,
)
from cvae.core.trainer import BaseCallback, DivergenceError, EpochResult, StopTraining, fit
from cvae.sweeps.space import grid_conflicts, make_pruner, make_sampler, suggest_all
from cvae.sweeps.spec import SweepSpec
from cvae.sweeps.storage import StorageError, open_storage
from optuna.trial import TrialState

log = logging.getLogger("cvae")
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and their retry callback are "experimental" in Optuna since 2.x; the warning is noise here.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

SLOT = "cvae:slot"
REPLICATE = "cvae:replicate"
CONFIG_ID = "cvae:config_id"
RUN_DIR = "cvae:run_dir"
RUN_ID = "cvae:wandb_run_id"
REASON = "cvae:fail_reason"
HEARTBEAT = "cvae:heartbeat"
READY = "cvae:ready"
UID = "cvae:uid"

WANDB_KEYS = {
    "train_loss": "train/loss", "train_mse": "train/mse", "train_kl": "train/kl", "train_psnr": "train/psnr",
    "val_psnr": "val/psnr", "val_loss": "val/loss",
    **{col: col.replace("val_", "val/", 1) for col in (*BASELINE_COLUMNS, MARGIN_COLUMN)},
    "beta": "schedule/beta", "tfr": "schedule/tfr", "lr": "lr", "frames_per_s": "perf/frames_per_s",
}
"""EpochResult field -> the W&B key it is logged under."""


class SweepError(RuntimeError):
    """A sweep cannot go on (e.g. its dataset is missing); the message says why."""


STOP_REQUESTED = threading.Event()
"""Set by Ctrl-C / SIGTERM. An interrupt can surface as another exception (a SQLite query interrupted
mid-call raises OperationalError), so the trial's outcome is decided by this flag, not by the exception type."""


def install_stop_handlers() -> None:
    """SIGINT and SIGTERM (docker stop, Slurm preemption) set :data:`STOP_REQUESTED` and interrupt."""
    import signal

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        STOP_REQUESTED.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# -- the study and its queue ----------------------------------------------------------------------------
def _create_or_load(spec: SweepSpec, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    sampler = make_sampler(spec)
    num_epoch = int(spec.base.get("num_epoch", 70))
    pruner = make_pruner(spec, num_epoch)
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                    sampler=sampler, pruner=pruner)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
        if study.direction.name.lower() != spec.direction:
            raise SweepError(
                f"study {spec.name!r} exists with direction {study.direction.name.lower()}, the spec asks "
                f"{spec.direction}: use another name or storage"
            ) from None
        return study, False


def open_study(spec: SweepSpec, storage: optuna.storages.BaseStorage, *, fill_queue: bool,
               wait_ready_s: float = 120.0) -> optuna.Study:
    """Create or load the sweep's study; the creator (or ``fill_queue``) enqueues the missing trials.

    A worker that loads a study created a moment ago by another process waits until its queue is ready.
    """
    study, created = _create_or_load(spec, storage)
    conflicts = grid_conflicts(spec, study)
    if conflicts:
        raise SweepError(f"{spec.source}: " + "; ".join(conflicts) + ": Optuna fixes a categorical parameter's "
                         "choices for its whole study; run the new grid as a new study (another name)")
    if created or fill_queue:
        if created:
            study.set_user_attr(UID, uuid.uuid4().hex[:8])
            study.set_user_attr("cvae:spec", {"metric": spec.metric, "goal": spec.goal, "method": spec.method,
                                              "output_dir": str(spec.output_dir)})
        fill(study, spec)
        study.set_user_attr(READY, True)
        return study
    deadline = time.monotonic() + wait_ready_s
    while not study.user_attrs.get(READY):
        if time.monotonic() > deadline:
            raise SweepError(f"study {spec.name!r} exists but its queue was never filled: run `cvae sweep run`")
        time.sleep(0.5)
    return study


def slots(spec: SweepSpec) -> list[tuple[str, dict[str, Any], int]]:
    """(slot id, fixed params, replicate) of every trial the queue should hold.

    A grid slot is keyed by its parameter values (``g<config id>-r<replicate>``), not by its position, so a
    grid edited between runs keeps its finished points: new points are queued, removed ones left as they are.
    """
    out = []
    if spec.method == "grid":
        for _, params in spec.grid_points():  # run order: a worker claims the first WAITING trial
            cid = config_id(params)
            for r in range(spec.replicates):
                out.append((f"g{cid}-r{r}", params, r))
    else:
        # Replicates of sampled configs are enqueued when their first replicate has its parameters.
        out = [(f"s{i}-r0", {}, 0) for i in range(spec.run_cap or 0)]
    return out


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's parameters: chosen (once it ran) or fixed when it was queued (a grid point, a retry)."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})


def point_of(trial: optuna.trial.FrozenTrial) -> tuple[str, int]:
    """(config id, replicate): the grid point and replicate a trial runs, whatever its slot label."""
    return config_id(trial_params(trial)), int(trial.user_attrs.get(REPLICATE, 0))


def fill(study: optuna.Study, spec: SweepSpec) -> int:
    """Enqueue the slots no trial holds yet (idempotent: a re-run with a larger run_cap or grid tops up)."""
    trials = study.get_trials(deepcopy=False)
    present = {t.user_attrs.get(SLOT) for t in trials}
    points = {point_of(t) for t in trials} if spec.method == "grid" else set()
    added = 0
    for slot, params, replicate in slots(spec):
        if slot in present or (config_id(params), replicate) in points:
            continue
        study.enqueue_trial(params, user_attrs={SLOT: slot, REPLICATE: replicate})
        added += 1
    return added


def in_spec(spec: SweepSpec) -> Callable[[optuna.trial.FrozenTrial], bool]:
    """A predicate: whether a queued trial still belongs to the spec (grid points removed by an edit do not)."""
    if spec.method != "grid":
        return lambda trial: True
    wanted = {config_id(params) for _, params in spec.grid_points()}
    return lambda trial: config_id(trial_params(trial)) in wanted


def orphaned(study: optuna.Study, spec: SweepSpec) -> list[optuna.trial.FrozenTrial]:
    """Queued trials of grid points the spec no longer has: left queued, never claimed."""
    keep = in_spec(spec)
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if not keep(t)]


def _claim(study: optuna.Study, spec: SweepSpec) -> optuna.Trial | None:
    """Atomically take one WAITING trial of the spec (the first by number), or None when there is none.

    The heartbeat is recorded *before* the state change: a RUNNING trial always has one, so a worker killed
    right after its claim leaves a trial the reaper fails and re-queues, never one RUNNING forever.
    """
    storage = study._storage  # noqa: SLF001 - the public ask() would sample a new trial when the queue is empty
    keep = in_spec(spec)
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):  # noqa: SLF001
        if not keep(frozen):
            continue
        try:
            _beat(storage, frozen._trial_id)  # noqa: SLF001
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):  # noqa: SLF001
                return optuna.Trial(study, frozen._trial_id)  # noqa: SLF001
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker took it
    return None


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, *, max_retry: int | None = None) -> bool:
    """Enqueue a retry of a finished ``trial``: the same parameters, its epochs so far (intermediate values)
    and its run folder and W&B run (``failed_trial`` names the first trial of the chain). Its fail reason
    stays with it. Returns False when ``max_retry`` retries were already made (Optuna's
    ``RetryFailedTrialCallback`` rule)."""
    system_attrs: dict[str, Any] = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
    system_attrs.pop(HEARTBEAT, None)
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    if max_retry is not None and max_retry < len(system_attrs["retry_history"]):
        return False
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k != REASON}, system_attrs=system_attrs,
        intermediate_values=trial.intermediate_values,
    ))
    return True


def retry_trials(study: optuna.Study, *, states: tuple[str, ...] = ("failed",),
                 numbers: tuple[int, ...] = ()) -> list[tuple[int, int]]:
    """Re-queue finished trials (``cvae sweep retry``); returns (retried trial, run key) pairs.

    A retry chain (a trial and its retries) is retried from its latest trial, and only when none of its
    trials completed or waits or runs: a grid point still runs once, and ``run_cap`` still counts parameter
    sets. ``numbers`` picks chains by any of their trial numbers; by default every chain whose latest trial
    is in ``states`` (``failed``, ``pruned``).
    """
    wanted = {"failed": TrialState.FAIL, "pruned": TrialState.PRUNED}
    unknown = [s for s in states if s not in wanted]
    if unknown:
        raise ValueError(f"--state {unknown[0]!r} is not failed or pruned")
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    missing = [n for n in numbers if n not in by_number]
    if missing:
        raise ValueError(f"no trial {missing[0]} in study {study.study_name!r} (it has 0..{len(trials) - 1})")
    chains: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        chains.setdefault(run_key(t), []).append(t)
    picked = {run_key(by_number[n]) for n in numbers}
    allowed = set(wanted.values()) if numbers else {wanted[s] for s in states}  # a named trial: failed or pruned
    out = []
    for key, chain in chains.items():
        if numbers and key not in picked:
            continue
        if any(t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING) for t in chain):
            continue
        latest = max(chain, key=lambda t: t.number)
        if latest.state not in allowed:
            continue
        requeue(study, latest)
        out.append((latest.number, key))
    return out


def _supports_native_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def reap_stale(study: optuna.Study, spec: SweepSpec) -> list[int]:
    """Fail trials whose heartbeat stopped and enqueue their retries; returns the failed trial numbers.

    RDB storages use Optuna's heartbeat (server time). Journal files have none, so workers write the time
    into a system attribute and compare it here with the grace period.
    """
    storage = study._storage  # noqa: SLF001
    if _supports_native_heartbeat(storage):
        stale_ids = storage._get_stale_trial_ids(study._study_id)  # noqa: SLF001 - what fail_stale_trials reads
    else:
        now = time.time()
        stale_ids = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))  # noqa: SLF001
                     if now - t.system_attrs.get(HEARTBEAT, now) > spec.grace_period]
    failed = []
    for trial_id in stale_ids:
        reason = f"lost its worker (no heartbeat for over {spec.grace_period} s)"
        try:
            storage.set_trial_user_attr(trial_id, REASON, reason)  # before the state: a failed trial is frozen
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker reaped it, or its own worker finished it just now
        frozen = storage.get_trial(trial_id)
        requeued = requeue(study, frozen, max_retry=spec.max_retry)
        log.warning("trial %d %s: %s", frozen.number, reason,
                    "re-queued" if requeued else f"not re-queued (max_retry={spec.max_retry} reached)")
        failed.append(frozen.number)
    return failed


def _beat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """One heartbeat: Optuna's (server time) on a database, else the time in a system attribute."""
    if _supports_native_heartbeat(storage):
        storage.record_heartbeat(trial_id)
    else:
        storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial, interval: float) -> Iterator[None]:
    """Beat for ``trial`` every ``interval`` seconds in a thread while the body runs."""
    storage = study._storage  # noqa: SLF001

    def beat() -> None:
        _beat(storage, trial._trial_id)  # noqa: SLF001

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                beat()
            except Exception as err:  # noqa: BLE001 - a missed beat is retried; the trial goes on
                log.warning("heartbeat failed: %s", err)

    beat()
    thread = threading.Thread(target=loop, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- one trial --------------------------------------------------------------------------------------------
def run_key(trial: optuna.trial.FrozenTrial) -> int:
    """The number of the first trial of a retry chain: it names the run folder and the W&B run."""
    return int(trial.system_attrs.get("failed_trial", trial.number))


def config_id(params: Mapping[str, Any]) -> str:
    """A short stable id of a parameter set (replicates share it)."""
    return hashlib.sha1(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_dir(spec: SweepSpec, key: int) -> Path:
    return spec.output_dir / f"t{key:04d}"


def wandb_run_id(spec: SweepSpec, study: optuna.Study, key: int) -> str:
    """Deterministic per study and trial chain, so a retry resumes the same W&B run."""
    return f"{spec.name}-{study.user_attrs.get(UID, 'local')}-t{key}"


def metric_value(rows: list[dict[str, str]], field: str, goal: str, summary: str) -> tuple[float, int]:
    """(value, epoch) of the metric over a run's metrics.csv rows: its best epoch or its last."""
    values = [(float(r[field]), int(r["epoch"])) for r in rows if r.get(field) not in (None, "", "nan")]
    values = [(v, e) for v, e in values if not math.isnan(v)]
    if not values:
        return math.nan, -1
    if summary == "last":
        return values[-1]
    pick = max if goal == "maximize" else min
    return pick(values, key=lambda ve: ve[0])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_trial_record(path: Path, record: Mapping[str, Any]) -> None:
    """``trial.json``, written atomically."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB (Linux /proc; peak from getrusage)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux
        current = math.nan
    return current, max(peak, current)  # the kernel updates ru_maxrss lazily: never report it below current


class TrialCallback(BaseCallback):
    """Per epoch: track, report to Optuna, prune; remember the latest validation video.

    Also times the trial: ``startup_s`` (claim to the first training step: data, model, tracker), the
    epochs' training and validation seconds, and ``tracking_s`` (W&B, Optuna and record calls).
    """

    def __init__(self, trial: optuna.Trial, spec: SweepSpec, tracker, t0: float) -> None:
        self.trial = trial
        self.spec = spec
        self.tracker = tracker
        self.video = None
        self.pruned_at: int | None = None
        self.t0 = t0
        self.startup_s = math.nan
        self.train_s = self.val_s = 0.0
        self.tracking_s = 0.0
        self.startup_tracking_s = 0.0
        """The part of ``tracking_s`` spent during start-up (the tracker's init)."""

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Count the time of the block as tracking overhead."""
        t = time.monotonic()
        try:
            yield
        finally:
            self.tracking_s += time.monotonic() - t

    def on_train_start(self, cfg, start_epoch: int) -> None:
        """On a resume, report to Optuna the checkpointed epochs it lacks (a worker killed between an
        epoch's checkpoint and its report), from the run's own records."""
        self.startup_s = time.monotonic() - self.t0
        if start_epoch == 0:
            return
        metrics = Path(cfg.run.save_root) / "metrics.csv"
        frozen = self.trial.study._storage.get_trial(self.trial._trial_id)  # noqa: SLF001
        rows = read_csv(metrics) if metrics.exists() else []
        missing = [r for r in rows if int(r["epoch"]) < start_epoch and int(r["epoch"]) not in frozen.intermediate_values
                   and r.get(self.spec.metric_field) not in (None, "", "nan")]
        for r in missing:
            self.trial.report(float(r[self.spec.metric_field]), int(r["epoch"]))
        if missing:
            log.info("trial %d: reported %d checkpointed epoch(s) Optuna lacked: %s", self.trial.number, len(missing),
                     ", ".join(r["epoch"] for r in missing))

    def on_epoch_end(self, result: EpochResult) -> None:
        self.train_s += result.train_seconds
        self.val_s += result.val_seconds
        with self.tracking():
            self.tracker.log_epoch(result.epoch, {WANDB_KEYS[k]: getattr(result, k) for k in WANDB_KEYS})
            if result.val_video is not None:
                self.video = result.val_video
            value = getattr(result, self.spec.metric_field)
            prune = False
            if not math.isnan(value):
                self.trial.report(value, result.epoch)
                prune = self.trial.should_prune()
        if prune:
            self.pruned_at = result.epoch
            raise StopTraining(f"pruned at epoch {result.epoch}")


def make_tracker(spec: SweepSpec, study: optuna.Study, key: int, config: dict[str, Any],
                 params: Mapping[str, Any]):
    from cvae.sweeps.tracking import NullTracker, WandbTrialTracker, resolve_wandb_mode

    mode = resolve_wandb_mode(spec.wandb["mode"])
    if mode == "disabled":
        return NullTracker(), mode
    tags = [f"{k}={v}" for k, v in params.items()] + list(spec.wandb.get("tags") or [])
    return WandbTrialTracker(
        project=spec.wandb["project"], entity=spec.wandb.get("entity"), group=spec.name, name=f"{spec.name}-t{key}",
        run_id=wandb_run_id(spec, study, key), config=config, tags=tags, mode=mode,
    ), mode


ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EIO}
"""OSErrors that are faults of the machine, not of the trial's configuration: the trial is re-queued."""


def environment_fault(err: BaseException) -> str | None:
    """A one-line description when ``err`` is a fault of the data, disk or services (fixable, then resumable)."""
    from cvae.sweeps.tracking import TrackingError

    if isinstance(err, (DatasetError, CheckpointError, TrackingError, StorageError)):
        return str(err)
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        where = f": {err.filename}" if err.filename else ""
        return f"{errno.errorcode.get(err.errno, 'OSError')} ({err.strerror}){where}"
    return None


def run_trial(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec, *, num_threads: int | None = None) -> str:
    """Train one claimed trial and tell Optuna its outcome; returns the final state name.

    The trial beats from its claim (:func:`_claim`) to its end, start-up included.

    Raises:
        SweepError: the sweep cannot go on here (a missing dataset, a full disk, W&B unreachable); the trial is
            failed with the reason and re-queued first, so the next run after the fix resumes it.
        StorageError: the study storage is gone; the trial stays RUNNING and is re-queued once stale.
        KeyboardInterrupt: after failing the trial and enqueueing its retry.
    """
    with heartbeat(study, trial, spec.heartbeat_interval):
        return _run_trial(study, trial, spec, num_threads=num_threads)


def _fail_and_requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Fail a claimed trial with ``reason`` and enqueue its retry (same parameters, same run folder)."""
    try:
        trial.set_user_attr(REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        requeue(study, study._storage.get_trial(trial._trial_id))  # noqa: SLF001
    except Exception as err:  # noqa: BLE001 - a broken storage call: it goes stale and is re-queued instead
        log.warning("trial %d: could not record %r (%s); it will be re-queued when its heartbeat goes stale",
                    trial.number, reason, err)


def _start(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec, num_threads: int | None):
    """Everything between the claim and the first epoch: parameters, folder, record, tracker."""
    t0 = time.monotonic()
    params = suggest_all(trial, spec, study)
    frozen = study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - a live Trial has no system_attrs
    key = run_key(frozen)
    replicate = int(trial.user_attrs.get(REPLICATE, 0))
    folder = run_dir(spec, key)
    folder.mkdir(parents=True, exist_ok=True)
    cid = config_id(params)
    trial.set_user_attr(CONFIG_ID, cid)
    trial.set_user_attr(RUN_DIR, str(folder))
    trial.set_user_attr(RUN_ID, wandb_run_id(spec, study, key))
    if spec.method != "grid" and replicate == 0 and spec.replicates > 1:
        _enqueue_replicates(study, trial, params, spec.replicates)
    cfg = spec.trial_config(params, save_root=folder, replicate=replicate, num_threads=num_threads)
    history = list(frozen.system_attrs.get("retry_history", []))
    record: dict[str, Any] = {
        "study": spec.name, "trial_number": trial.number, "run_key": key, "retry_of": history,
        "slot": trial.user_attrs.get(SLOT), "replicate": replicate, "config_id": cid, "params": params,
        "state": "running", "metric": spec.metric, "goal": spec.goal, "value": None, "best_epoch": None,
        "epochs_done": 0, "reason": "", "wandb_run_id": wandb_run_id(spec, study, key), "started": _now(),
        "finished": None, "duration_s": None, "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    trial_json = folder / "trial.json"
    if trial_json.exists():  # a retry: keep the first start time
        with contextlib.suppress(ValueError, OSError):  # a record cut off by a kill is rewritten below
            record["started"] = json.loads(trial_json.read_text()).get("started", record["started"])
    write_trial_record(trial_json, record)
    config = {**cfg.to_flat(), **{f"param/{k}": v for k, v in params.items()}, "study": spec.name,
              "trial": trial.number, "run_key": key, "replicate": replicate, "config_id": cid,
              "sweep_metric": spec.metric, "sweep_goal": spec.goal}
    t_track = time.monotonic()
    tracker, mode = make_tracker(spec, study, key, config, params)
    record["wandb_mode"] = mode
    callback = TrialCallback(trial, spec, tracker, t0)
    callback.tracking_s = callback.startup_tracking_s = time.monotonic() - t_track
    return cfg, record, folder, tracker, callback, t0


def _run_trial(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec, *, num_threads: int | None) -> str:
    try:
        cfg, record, folder, tracker, callback, t0 = _start(study, trial, spec, num_threads)
    except KeyboardInterrupt:
        _fail_and_requeue(study, trial, "interrupted (Ctrl-C) while starting: re-queued")
        raise
    except StorageError:
        raise
    except ConfigError as err:  # this point's configuration: the trial fails, the sweep goes on
        trial.set_user_attr(REASON, str(err))
        study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d failed: %s", trial.number, err)
        return "failed"
    except Exception as err:
        if STOP_REQUESTED.is_set():
            _fail_and_requeue(study, trial, "interrupted (Ctrl-C) while starting: re-queued")
            raise KeyboardInterrupt from None
        fault = environment_fault(err)
        if fault is None:
            log.error("trial %d could not start:\n%s", trial.number, traceback.format_exc())
            fault = f"{type(err).__name__}: {err}"
        _fail_and_requeue(study, trial, f"could not start: {fault}: re-queued")
        raise SweepError(f"trial {trial.number} could not start: {fault}") from None
    state, reason, interrupted = "complete", "", False
    try:
        result = fit(cfg, [callback])
        if result.status == "stopped":
            state = "pruned"
            reason = result.reason
    except DivergenceError as err:
        state, reason = "failed", f"diverged: {err}"
    except StorageError:
        raise  # the storage is gone: nothing can be recorded; the trial goes stale and is re-queued
    except KeyboardInterrupt:
        state, reason, interrupted = "failed", "interrupted (Ctrl-C): re-queued", True
    except Exception as err:  # noqa: BLE001 - a crashing trial must not end the sweep
        fault = environment_fault(err)
        if STOP_REQUESTED.is_set():
            state, reason, interrupted = "failed", "interrupted (Ctrl-C): re-queued", True
        elif fault is not None:
            # The data, the disk or a service: fixable, and the trial resumes after the fix.
            reason = f"{fault}: re-queued"
            _finish(study, trial, spec, tracker, record, folder, callback, "failed", reason, t0, again=True)
            raise SweepError(f"trial {trial.number}: {fault}") from None
        else:
            state, reason = "failed", f"{type(err).__name__}: {err}"
            log.error("trial %d crashed:\n%s", trial.number, traceback.format_exc())
    if not interrupted:
        _finish(study, trial, spec, tracker, record, folder, callback, state, reason, t0)
        return state
    try:
        _finish(study, trial, spec, tracker, record, folder, callback, state, reason, t0, again=True)
    except Exception as err:  # noqa: BLE001 - the signal may have broken a storage call in flight
        # Still RUNNING: its heartbeat stops with this process, so it goes stale and is re-queued.
        log.warning("trial %d: could not record the interruption (%s); it will be re-queued when its "
                    "heartbeat goes stale", trial.number, err)
    raise KeyboardInterrupt


def _enqueue_replicates(study: optuna.Study, trial: optuna.Trial, params: Mapping[str, Any], replicates: int) -> None:
    """Queue replicates 1..n-1 of a sampled parameter set (once, even when its first replicate is retried)."""
    base = str(trial.user_attrs.get(SLOT, f"s{trial.number}-r0")).rsplit("-r", 1)[0]
    present = {t.user_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
    for r in range(1, replicates):
        if f"{base}-r{r}" not in present:
            study.enqueue_trial(dict(params), user_attrs={SLOT: f"{base}-r{r}", REPLICATE: r})


def _finish(study, trial, spec, tracker, record, folder, callback, state, reason, t0, *, again: bool = False) -> None:
    """Record a trial's outcome: trial.json, Optuna (with a retry enqueued when ``again``), then W&B."""
    t_finish = time.monotonic()
    rows = read_csv(folder / "metrics.csv") if (folder / "metrics.csv").exists() else []
    value, epoch = metric_value(rows, spec.metric_field, spec.goal, spec.summary)
    video_path = None
    if callback.video is not None:
        video_path = folder / "sample.gif"
        write_gif(callback.video, video_path)
    per_frame = None
    frames_csv = folder / "psnr_per_frame.csv"
    if rows and frames_csv.exists():
        last = rows[-1]["epoch"]
        per_frame = [float(r["psnr"]) for r in read_csv(frames_csv) if r["epoch"] == last]
    baselines, per_frame_baselines = trial_baselines(rows, epoch, folder / BASELINES_CSV)
    for name, v in baselines.items():
        if v is not None:
            trial.set_user_attr(f"cvae:{name}", v)
    if state == "complete" and math.isnan(value):
        state, reason = "failed", f"no {spec.metric} was recorded"
    if state == "failed":
        trial.set_user_attr(REASON, reason)
    optuna_state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}[state]
    try:
        study.tell(trial, value if state == "complete" else None, state=optuna_state)
        if again:
            requeue(study, study._storage.get_trial(trial._trial_id))  # noqa: SLF001
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker declared this trial stale and failed it meanwhile; its retry will resume it.
        state, reason = "failed", "declared stale by another worker while running"
    record.update(state=state, reason=reason, value=None if math.isnan(value) else value,
                  best_epoch=epoch if epoch >= 0 else None, epochs_done=len(rows), finished=_now(),
                  duration_s=round(time.monotonic() - t0, 3), **baselines)
    callback.tracking_s += time.monotonic() - t_finish
    record.update(timing=_timing(callback, record["duration_s"]), resources=_resources())
    write_trial_record(folder / "trial.json", record)  # the outcome is on disk before W&B is told
    with callback.tracking():
        summary = {spec.metric: record["value"], "best_epoch": record["best_epoch"], "epochs": len(rows),
                   "trial": trial.number, **{WANDB_KEYS[k]: v for k, v in baselines.items() if v is not None}}
        tracker.finish(state=state, summary=summary, psnr_per_frame=per_frame, video=video_path, reason=reason,
                       baselines=per_frame_baselines)
    record.update(duration_s=round(time.monotonic() - t0, 3))
    record.update(timing=_timing(callback, record["duration_s"]))
    write_trial_record(folder / "trial.json", record)
    log.info("trial %d (t%04d) %s%s%s", trial.number, record["run_key"], state,
             f": {spec.metric} {value:.4f}" if not math.isnan(value) else "", f" ({reason})" if reason else "")


def trial_baselines(rows: list[dict[str, str]], epoch: int, baselines_csv: Path,
                    ) -> tuple[dict[str, float | None], dict[str, list[float]] | None]:
    """A trial's baselines and margin, as recorded in trial.json and its Optuna attributes, and per frame.

    The baselines are those of its validation video (the same every epoch); the margin is the one of the
    epoch its value comes from (``epoch``), else of its last epoch. None where nothing was validated.
    """
    chosen = next((r for r in rows if int(r["epoch"]) == epoch), rows[-1] if rows else {})
    out: dict[str, float | None] = {}
    for col in (*BASELINE_COLUMNS, MARGIN_COLUMN):
        text = chosen.get(col)
        out[col] = float(text) if text not in (None, "", "nan") else None
    per_frame = None
    if baselines_csv.exists():
        table = read_csv(baselines_csv)
        per_frame = {name: [float(r[name]) for r in table] for name in BASELINE_NAMES}
    return out, per_frame


def _timing(callback: TrialCallback, duration: float) -> dict[str, float | None]:
    """Where a trial's time went, in seconds; ``other_s`` is the rest (checkpoints, metrics files).

    ``tracking_s`` covers W&B, Optuna, the trial record and the sample GIF.

    ``startup_s`` includes the tracker's start, which ``tracking_s`` counts too.
    """
    parts = {"startup_s": callback.startup_s, "train_s": callback.train_s, "val_s": callback.val_s,
             "tracking_s": callback.tracking_s}
    known = sum(v for v in parts.values() if not math.isnan(v)) - callback.startup_tracking_s
    out = {k: None if math.isnan(v) else round(v, 3) for k, v in parts.items()}
    out["other_s"] = round(max(duration - known, 0.0), 3)
    return out


def _resources() -> dict[str, Any]:
    current, peak = rss_mib()
    return {"rss_mib": round(current, 1), "peak_rss_mib": round(peak, 1), "threads": torch.get_num_threads()}


# -- a worker -----------------------------------------------------------------------------------------------
@dataclass
class WorkerStats:
    trials: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0


def run_worker(spec: SweepSpec, *, storage_url: str | None = None, num_threads: int | None = None,
               max_trials: int | None = None) -> WorkerStats:
    """Claim and run trials until the queue is empty and no other worker's trial can still go stale."""
    storage = open_storage(spec, storage_url)
    study = open_study(spec, storage, fill_queue=False)
    stats = WorkerStats()
    while max_trials is None or stats.trials < max_trials:
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        reap_stale(study, spec)
        trial = _claim(study, spec)
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                break
            # Another worker is busy; if it dies its trial goes stale and comes back to the queue.
            time.sleep(min(spec.heartbeat_interval, 5))
            continue
        state = run_trial(study, trial, spec, num_threads=num_threads)
        stats.trials += 1
        setattr(stats, state, getattr(stats, state) + 1)
    return stats
