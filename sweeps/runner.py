"""Running a sweep: workers that claim trials from the queue (:mod:`cvae.sweeps.queue`), and one trial's life.

Faults (``docs/reliability.md``). A worker beats for a trial from before its claim to its end. A trial whose
heartbeat stops (the worker was killed) is failed by whichever worker notices first, which enqueues a retry
with the same parameters (:func:`cvae.sweeps.queue.requeue`). The retry resumes from the trial's last epoch
checkpoint, in the same run folder and the same W&B run: both are named after the first trial of the retry
chain. Ctrl-C, SIGTERM, and faults of the machine (a missing dataset, a full disk, W&B that cannot start) fail
the running trial and enqueue its retry at once, so the next ``cvae sweep run`` after the fix resumes it.
A worker that was cut off from the study for longer than the grace period, whose trial was therefore reaped
and retried elsewhere, is fenced when it comes back: it checks its lease (:class:`cvae.sweeps.queue.Lease`)
before writing each epoch, drops that epoch and writes nothing more of the trial.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import resource
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import torch
from cvae.core import (
    BaseCallback,
    CheckpointError,
    ConfigError,
    DatasetError,
    DivergenceError,
    EpochResult,
    StopTraining,
    fit,
)
from cvae.core.records import read_csv, write_gif
from cvae.sweeps.artifacts import PSNR_PLOT, upload_trial_files
from cvae.sweeps.optuna_private import frozen_trial
from cvae.sweeps.queue import (
    Fenced,
    Lease,
    SweepError,
    claim,
    config_id,
    enqueue_replicates,
    heartbeat,
    open_study,
    reap_stale,
    requeue,
)
from cvae.sweeps.space import suggest_all
from cvae.sweeps.spec import SweepSpec
from cvae.sweeps.storage import StorageError, open_storage
from optuna.trial import TrialState

from cvae.schema import (
    CONFIG_ID,
    METRICS_CSV,
    REASON,
    REPLICATE,
    RETRY_HISTORY,
    RUN_DIR,
    RUN_ID,
    SAMPLE_GIF,
    SLOT,
    TRIAL_COLUMNS,
    TRIAL_JSON,
    UID,
    WANDB_PATH,
    WANDB_URL,
    TrialRecord,
    run_key,
    run_name,
    trial_attr,
)
from cvae.tracking import WandbCallback

log = logging.getLogger("cvae")

STOP_REQUESTED = threading.Event()
"""Set by Ctrl-C / SIGTERM. An interrupt can surface as another exception (a SQLite query interrupted
mid-call raises OperationalError), so the trial's outcome is decided by this flag, not by the exception type."""


_STOP_CAUSE = ["Ctrl-C"]
"""What interrupted this process: "Ctrl-C" (SIGINT) or the signal's name ("SIGTERM": docker stop, Slurm)."""


def stop_cause() -> str:
    """What stopped this process, for a trial's reason: "Ctrl-C" or "SIGTERM"."""
    return _STOP_CAUSE[0]


def install_stop_handlers() -> None:
    """SIGINT and SIGTERM (docker stop, Slurm preemption) set :data:`STOP_REQUESTED`, record which of them
    came (:func:`stop_cause`) and interrupt."""
    import signal

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        _STOP_CAUSE[0] = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        STOP_REQUESTED.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# -- one trial --------------------------------------------------------------------------------------------
def run_dir(spec: SweepSpec, key: int) -> Path:
    return spec.output_dir / run_name(key)


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
    """Per epoch: track, report to Optuna, prune; keep the trial's epochs (``rows``, those of earlier attempts
    read once from its records) and the latest epoch result, which the trial's outcome is made of.

    Also times the trial: ``startup_s`` (claim to the first training step: data, model, tracker), the
    epochs' training and validation seconds, and ``tracking_s`` (W&B, Optuna and record calls).
    """

    def __init__(self, trial: optuna.Trial, spec: SweepSpec, tracker, t0: float, lease: Lease | None = None) -> None:
        self.trial = trial
        self.lease = lease
        self.spec = spec
        self.tracker = tracker
        self.wandb = WandbCallback(tracker)
        self.video = None
        self.rows: list[dict[str, Any]] | None = None
        """Every epoch's metrics (``metrics.csv``'s rows), None until training starts."""
        self.last: EpochResult | None = None
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
        self.rows = []
        if start_epoch == 0:
            return
        metrics = Path(cfg.run.save_root) / METRICS_CSV
        stored = frozen_trial(self.trial)
        rows = self.rows = [r for r in (read_csv(metrics) if metrics.exists() else []) if int(r["epoch"]) < start_epoch]
        missing = [r for r in rows if int(r["epoch"]) not in stored.intermediate_values
                   and r.get(self.spec.metric.field) not in (None, "", "nan")]
        for r in missing:
            self.trial.report(float(r[self.spec.metric.field]), int(r["epoch"]))
        if missing:
            log.info("trial %d: reported %d checkpointed epoch(s) Optuna lacked: %s", self.trial.number, len(missing),
                     ", ".join(r["epoch"] for r in missing))
        with self.tracking():  # ... and to W&B, those its history lacks
            self.wandb.on_train_start(cfg, start_epoch, rows)

    def on_before_save(self, result: EpochResult) -> None:
        """Write the epoch only while this worker holds the trial (:meth:`cvae.sweeps.queue.Lease.check`)."""
        if self.lease is not None:
            with self.tracking():
                try:
                    self.lease.check()
                except Fenced as err:
                    raise Fenced(f"{err}; its epoch {result.epoch} is dropped") from None

    def on_epoch_end(self, result: EpochResult) -> None:
        self.rows = self.rows if self.rows is not None else []  # fit calls on_train_start first
        self.rows.append({"epoch": result.epoch, **result.metrics()})
        self.last = result
        self.train_s += result.train_seconds
        self.val_s += result.val_seconds
        with self.tracking():
            self.wandb.on_epoch_end(result)
            if result.val_video is not None:
                self.video = result.val_video
            value = getattr(result, self.spec.metric.field)
            prune = False
            if not math.isnan(value):
                try:
                    self.trial.report(value, result.epoch)
                except optuna.exceptions.UpdateFinishedTrialError:
                    # Reaped after this epoch's lease check (the storage was lost between the two): its retry
                    # resumes from this epoch's checkpoint, written while the lease held.
                    raise Fenced(f"trial {self.trial.number} was failed as stale while this worker could not "
                                 "reach the study; its retry resumes it elsewhere") from None
                prune = self.trial.should_prune()
        if prune:
            self.pruned_at = result.epoch
            raise StopTraining(f"pruned at epoch {result.epoch}")


def make_tracker(spec: SweepSpec, study: optuna.Study, key: int, config: dict[str, Any],
                 params: Mapping[str, Any]):
    """The trial's W&B run (:class:`cvae.tracking.WandbRun`, None when disabled) and the mode it runs in."""
    from cvae.tracking import WandbRun, resolve_wandb_mode

    mode = resolve_wandb_mode(spec.wandb.mode)
    if mode == "disabled":
        return None, mode
    # Tags: the categorical choices only (a float drawn from a range would make every run its own tag).
    categorical = {p.name for p in spec.params if p.distribution == "categorical"}
    tags = [f"{k}={v}" for k, v in params.items() if k in categorical] + list(spec.wandb.tags)
    return WandbRun(
        project=spec.wandb.project, entity=spec.wandb.entity, group=spec.name, name=f"{spec.name}-t{key}",
        run_id=wandb_run_id(spec, study, key), config=config, tags=tags, mode=mode, job_type="trial",
        notes=spec.description or None, log_model=spec.wandb.log_model,
        log_every_n_steps=spec.wandb.log_every_n_steps,
    ), mode


def wandb_attrs(tracker, mode: str) -> dict[str, str]:
    """Where a trial's W&B run is, as the trial's user attributes: :data:`WANDB_PATH` (``entity/project/run_id``
    online, the local run folder offline) and :data:`WANDB_URL` (online), from the run's public ``path``,
    ``url`` and ``run_dir`` (:class:`cvae.tracking.WandbRun`). Empty when W&B is disabled."""
    if mode == "disabled" or tracker is None:
        return {}
    if mode == "online":
        return {key: str(value) for key, value in ((WANDB_PATH, tracker.path), (WANDB_URL, tracker.url)) if value}
    return {WANDB_PATH: str(tracker.run_dir)} if tracker.run_dir else {}


ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EIO}
"""OSErrors that are faults of the machine, not of the trial's configuration: the trial is re-queued."""


def environment_fault(err: BaseException) -> str | None:
    """A one-line description when ``err`` is a fault of the data, disk or services (fixable, then resumable)."""
    from cvae.tracking import TrackingError

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
    with heartbeat(study, trial, spec.heartbeat.interval, spec.heartbeat.grace) as lease:
        try:
            return _run_trial(study, trial, spec, lease, num_threads=num_threads)
        except Fenced as err:  # lost while recording its outcome (:func:`_finish`)
            return _fenced(trial, str(err))


def _fail_and_requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Fail a claimed trial with ``reason`` and enqueue its retry (same parameters, same run folder)."""
    try:
        trial.set_user_attr(REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        requeue(study, frozen_trial(trial))
    except Exception as err:  # noqa: BLE001 - a broken storage call: it goes stale and is re-queued instead
        log.warning("trial %d: could not record %r (%s); it will be re-queued when its heartbeat goes stale",
                    trial.number, reason, err)


def _start(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec, lease: Lease, num_threads: int | None):
    """Everything between the claim and the first epoch: parameters, folder, record, tracker."""
    t0 = time.monotonic()
    params = suggest_all(trial, spec, study)
    stored = frozen_trial(trial)
    key = run_key(stored)
    replicate = int(trial.user_attrs.get(REPLICATE, 0))
    folder = run_dir(spec, key)
    folder.mkdir(parents=True, exist_ok=True)
    cid = config_id(params)
    trial.set_user_attr(CONFIG_ID, cid)
    trial.set_user_attr(RUN_DIR, str(folder))
    trial.set_user_attr(RUN_ID, wandb_run_id(spec, study, key))
    if spec.method != "grid" and replicate == 0 and spec.replicates > 1:
        enqueue_replicates(study, trial, params, spec.replicates)
    cfg = spec.trial_config(params, save_root=folder, replicate=replicate, num_threads=num_threads)
    history = list(stored.system_attrs.get(RETRY_HISTORY, []))
    record = TrialRecord(
        study=spec.name, trial_number=trial.number, run_key=key, retry_of=history, slot=trial.user_attrs.get(SLOT),
        replicate=replicate, config_id=cid, params=params, metric=spec.metric.name, goal=spec.metric.goal,
        wandb_run_id=wandb_run_id(spec, study, key), started=_now(),
        worker={"host": socket.gethostname(), "pid": os.getpid()},
    )
    trial_json = folder / TRIAL_JSON
    if trial_json.exists():  # a retry: keep the first start time
        with contextlib.suppress(ValueError, TypeError, OSError):  # a record cut off by a kill is rewritten below
            record.started = TrialRecord.read(trial_json).started or record.started
    record.write(trial_json)
    config = {**cfg.to_flat(), **{f"param/{k}": v for k, v in params.items()}, "study": spec.name,
              "trial": trial.number, "run_key": key, "replicate": replicate, "config_id": cid,
              "sweep_metric": spec.metric.name, "sweep_goal": spec.metric.goal}
    t_track = time.monotonic()
    tracker, mode = make_tracker(spec, study, key, config, params)
    record.wandb_mode = mode
    for name, value in wandb_attrs(tracker, mode).items():  # a retry resumes the run: same path, new folder
        trial.set_user_attr(name, value)
    callback = TrialCallback(trial, spec, tracker, t0, lease)
    callback.tracking_s = callback.startup_tracking_s = time.monotonic() - t_track
    return cfg, record, folder, tracker, callback, t0


def _run_trial(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec, lease: Lease, *,
               num_threads: int | None) -> str:
    try:
        cfg, record, folder, tracker, callback, t0 = _start(study, trial, spec, lease, num_threads)
    except optuna.exceptions.UpdateFinishedTrialError:
        return _fenced(trial, f"trial {trial.number} was failed as stale while this worker was starting it")
    except KeyboardInterrupt:
        _fail_and_requeue(study, trial, f"interrupted ({stop_cause()}) while starting: re-queued")
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
            _fail_and_requeue(study, trial, f"interrupted ({stop_cause()}) while starting: re-queued")
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
    except Fenced as err:
        if tracker is not None:
            tracker.abandon()
        return _fenced(trial, str(err))
    except StorageError:
        raise  # the storage is gone: nothing can be recorded; the trial goes stale and is re-queued
    except KeyboardInterrupt:
        state, reason, interrupted = "failed", f"interrupted ({stop_cause()}): re-queued", True
    except Exception as err:  # noqa: BLE001 - a crashing trial must not end the sweep
        fault = environment_fault(err)
        if STOP_REQUESTED.is_set():
            state, reason, interrupted = "failed", f"interrupted ({stop_cause()}): re-queued", True
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
        if tracker is not None and tracker.write_error:
            # A fault of the machine: the trial is recorded (its folder, Optuna), its W&B run is cut; the
            # worker stops rather than cut the next trials' runs too.
            raise SweepError(f"trial {trial.number} is {state} in its records and Optuna, but W&B could not write "
                             f"its run: {tracker.write_error}: free space there, then `cvae sweep run` goes on with the other trials")
        return state
    try:
        _finish(study, trial, spec, tracker, record, folder, callback, state, reason, t0, again=True)
    except Exception as err:  # noqa: BLE001 - the signal may have broken a storage call in flight
        # Still RUNNING: its heartbeat stops with this process, so it goes stale and is re-queued.
        log.warning("trial %d: could not record the interruption (%s); it will be re-queued when its "
                    "heartbeat goes stale", trial.number, err)
    raise KeyboardInterrupt


def _fenced(trial: optuna.Trial, why: str) -> str:
    """A trial this worker lost to another (:class:`cvae.sweeps.queue.Fenced`): nothing more of it is written here,
    not even its outcome (its retry records that)."""
    log.warning("trial %d: fenced: %s: nothing more of it is written by this worker", trial.number, why)
    return "fenced"


def _finish(study, trial, spec, tracker, record, folder, callback, state, reason, t0, *, again: bool = False) -> None:
    """Record a trial's outcome: the GIF and PSNR plot (uploaded as the trial's Optuna artifacts), Optuna (with a
    retry enqueued when ``again``), trial.json, then W&B."""
    t_finish = time.monotonic()
    if callback.lease is not None:
        try:
            callback.lease.check()  # the outcome, GIF and plot are written only by the trial's holder
        except Fenced:
            if tracker is not None:
                tracker.abandon()
            raise
    # What this process trained is in memory; what it did not (an attempt that failed before training, or
    # resumed with no epoch left) is in the trial's records.
    rows = callback.rows if callback.rows is not None else (
        read_csv(folder / METRICS_CSV) if (folder / METRICS_CSV).exists() else [])
    value, epoch = metric_value(rows, spec.metric.field, spec.metric.goal, spec.metric.summary)
    video_path = None
    if callback.video is not None:
        video_path = folder / SAMPLE_GIF
        write_gif(callback.video, video_path)
    baselines = trial_baselines(rows, epoch)
    for name, v in baselines.items():
        if v is not None:
            trial.set_user_attr(trial_attr(name), v)
    plot_path = _psnr_plot(spec, trial, folder, callback.last)
    # Artifacts before the state change: a finished trial takes no more attributes. A retry uploads again.
    upload_trial_files(spec.output_dir, trial, [p for p in (video_path, plot_path) if p is not None])
    if state == "complete" and math.isnan(value):
        state, reason = "failed", f"no {spec.metric.name} was recorded"
    if state == "failed":
        trial.set_user_attr(REASON, reason)
    optuna_state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}[state]
    try:
        study.tell(trial, value if state == "complete" else None, state=optuna_state)
        if again:
            requeue(study, frozen_trial(trial))
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker declared this trial stale and failed it meanwhile; its retry will resume it.
        state, reason = "failed", "declared stale by another worker while running"
    record.update(state=state, reason=reason, value=None if math.isnan(value) else value,
                  best_epoch=epoch if epoch >= 0 else None, epochs_done=len(rows), finished=_now(),
                  duration_s=round(time.monotonic() - t0, 3), **baselines)
    callback.tracking_s += time.monotonic() - t_finish
    record.update(timing=_timing(callback, record.duration_s), resources=_resources())
    record.write(folder / TRIAL_JSON)  # the outcome is on disk before W&B is told
    if tracker is not None:
        with callback.tracking():
            # The metric's summary is W&B's own (define_metric: val/psnr.max); these say which trial and epoch.
            tracker.finish(state=state, reason=reason, summary={
                "best_epoch": record.best_epoch, "epochs": len(rows), "trial": trial.number,
                "sweep_value": record.value})
    record.update(duration_s=round(time.monotonic() - t0, 3))
    record.update(timing=_timing(callback, record.duration_s))
    record.write(folder / TRIAL_JSON)
    log.info("trial %d (%s) %s%s%s", trial.number, run_name(record.run_key), state,
             f": {spec.metric.name} {value:.4f}" if not math.isnan(value) else "", f" ({reason})" if reason else "")


def _psnr_plot(spec: SweepSpec, trial: optuna.Trial, folder: Path, last: EpochResult | None) -> Path | None:
    """The last epoch this process ran, as the analysis draws it (``cvae analysis figures``' ``psnr_per_frame``,
    from the epoch result in memory): its validation PSNR per frame (and SSIM, best of K, where measured)
    beside copy-first and mean-frame, as ``psnr_per_frame.png`` in the run folder; None when it validated
    nothing or the plot cannot be drawn."""
    if last is None or not last.val_psnr_per_frame:
        return None
    path = folder / PSNR_PLOT
    try:
        from cvae.analysis import figdata, figures
        from cvae.analysis.load import one_run

        data = one_run(folder.name, last.epoch, last.val_curves or {"psnr": last.val_psnr_per_frame},
                       last.baseline_frames, params=trial.params, name=spec.name)
        frame = figdata.psnr_per_frame(data)
        frame.attrs["title"] = f"{spec.name} trial {trial.number}: validation PSNR per frame (epoch {last.epoch})"
        figures.result(frame).fig.savefig(path, dpi=figures.DPI, facecolor="white")
    except Exception as err:  # noqa: BLE001 - a plot must not fail the trial
        log.warning("trial %d: no PSNR plot (%s: %s)", trial.number, type(err).__name__, err)
        return None
    return path


def trial_baselines(rows: list[dict[str, Any]], epoch: int) -> dict[str, float | None]:
    """A trial's baselines, margin and evaluation (:data:`cvae.schema.TRIAL_COLUMNS`), as recorded in
    trial.json and its Optuna attributes.

    The baselines are those of its validation video (the same every epoch); the margin and the evaluation
    (SSIM, K samples, what the model uses) are those of the epoch its value comes from (``epoch``), else of its
    last epoch. None where nothing was measured.
    """
    chosen = next((r for r in rows if int(r["epoch"]) == epoch), rows[-1] if rows else {})
    out: dict[str, float | None] = {}
    for col in TRIAL_COLUMNS:
        text = chosen.get(col)
        value = float(text) if text not in (None, "", "nan") else None
        out[col] = None if value is None or math.isnan(value) else value
    return out


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
    fenced: int = 0
    """Trials this worker lost to another while cut off from the study (:class:`cvae.sweeps.queue.Fenced`)."""


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
        reached = spec.metric.reached_by(study.get_trials(deepcopy=False))
        if reached is not None:
            log.info("sweep %s: trial %d reached metric.target %g: no new trial starts", spec.name, reached,
                     spec.metric.target)
            break
        trial = claim(study, spec)
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                break
            # Another worker is busy; if it dies its trial goes stale and comes back to the queue.
            time.sleep(min(spec.heartbeat.interval, 5))
            continue
        state = run_trial(study, trial, spec, num_threads=num_threads)
        stats.trials += 1
        setattr(stats, state, getattr(stats, state) + 1)
    return stats
