"""The trial queue.

When the study is created, every trial the sweep will run is enqueued as a WAITING trial: the grid's points
in the spec's ``grid_order`` (times ``replicates``), or ``run_cap`` placeholders whose parameters the sampler
fills in when a worker claims them. Workers claim WAITING trials one at a time with the storage's atomic
state change (the mechanism Optuna's own ``ask`` uses), and never ask the sampler for trials beyond the
queue. So ``run_cap`` is exact and a grid point runs once, however many workers on however many machines.
A search without ``run_cap`` runs until it is stopped, as a W&B sweep does: a worker that finds the queue empty
enqueues one more placeholder for itself (:func:`claim`).

A worker beats for its trial from before the claim to its end (:func:`heartbeat`). A trial whose heartbeat
stopped is failed by whichever worker notices first (:func:`reap_stale`), which enqueues a retry with the
same parameters (:func:`requeue`, Optuna's ``RetryFailedTrialCallback`` convention: ``failed_trial`` and
``retry_history`` system attributes). The beats are also the worker's lease on its trial (:class:`Lease`): a
worker that was cut off from the study for longer than the grace period, and comes back to find its trial
failed and retried elsewhere, is fenced (:class:`Fenced`) before it writes anything more of it.

Optuna's private API (the storage's atomic state change for a claim, the stale trials' ids, the artifacts'
attribute prefix) is used through :mod:`cvae.sweeps.optuna_private`, which fences and tests it.

Every opening names the study's metric (``set_metric_names``) when it has no name yet; the creator and
``fill_queue`` record the spec's description (:mod:`cvae.sweeps.artifacts`).

Torch-free: ``cvae sweep status``, ``best`` and ``retry`` import it without the trainer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optuna
from cvae.sweeps.artifacts import describe_study, name_metric
from cvae.sweeps.optuna_private import (
    ARTIFACTS_ATTR_PREFIX,
    has_heartbeat,
    stale_trial_ids,
    storage_of,
    study_id,
    trial_id,
)
from cvae.sweeps.space import grid_conflicts, make_pruner, make_sampler
from cvae.sweeps.spec import SweepSpec
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from cvae.schema import (
    FAILED_TRIAL,
    HEARTBEAT,
    READY,
    REASON,
    REPLICATE,
    RETRY_HISTORY,
    SLOT,
    SPEC,
    UID,
    run_key,
)

log = logging.getLogger("cvae")


def trial_artifacts(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """A trial's artifacts: file name -> artifact id (the latest upload of a name)."""
    metas = get_all_artifact_meta(trial, storage=storage_of(study))  # a FrozenTrial needs its storage
    return {meta.filename: meta.artifact_id for meta in metas}


class SweepError(RuntimeError):
    """A sweep cannot go on (e.g. its dataset is missing); the message says why."""


def _create_or_load(spec: SweepSpec, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    sampler = make_sampler(spec)
    pruner = make_pruner(spec)  # Hyperband's max_resource: the most epochs a trial runs (spec.num_epoch.max)
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.metric.goal,
                                    sampler=sampler, pruner=pruner)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
        if study.direction.name.lower() != spec.metric.goal:
            raise SweepError(
                f"study {spec.name!r} exists with direction {study.direction.name.lower()}, the spec asks "
                f"{spec.metric.goal}: use another name or storage"
            ) from None
        return study, False


def open_study(spec: SweepSpec, storage: optuna.storages.BaseStorage, *, fill_queue: bool,
               wait_ready_s: float = 120.0) -> optuna.Study:
    """Create or load the sweep's study; the creator (or ``fill_queue``) enqueues the missing trials.

    A worker that loads a study created a moment ago by another process waits until its queue is ready.
    """
    study, created = _create_or_load(spec, storage)
    name_metric(study, spec.metric.name)  # optuna-dashboard's "Objective 0" otherwise; also older studies
    conflicts = grid_conflicts(spec, study)
    if conflicts:
        raise SweepError(f"{spec.source}: " + "; ".join(conflicts) + ": Optuna fixes a categorical parameter's "
                         "choices for its whole study; run the new grid as a new study (another name)")
    if created or fill_queue:
        if created:
            study.set_user_attr(UID, uuid.uuid4().hex[:8])
            study.set_user_attr(SPEC, {"metric": spec.metric.name, "goal": spec.metric.goal, "method": spec.method,
                                              "output_dir": str(spec.output_dir)})
        describe_study(study, spec.description)
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


def claim(study: optuna.Study, spec: SweepSpec, _top_ups: int = 0) -> optuna.Trial | None:
    """Atomically take one WAITING trial of the spec (the first by number), or None when there is none; a search
    that runs until stopped (no ``run_cap``) enqueues a new one instead.

    The heartbeat is recorded *before* the state change: a RUNNING trial always has one, so a worker killed
    right after its claim leaves a trial the reaper fails and re-queues, never one RUNNING forever.
    """
    # The public ask() would sample a new trial when the queue is empty.
    storage = storage_of(study)
    keep = in_spec(spec)
    for trial in storage.get_all_trials(study_id(study), deepcopy=False, states=(TrialState.WAITING,)):
        if not keep(trial):
            continue
        try:
            _beat(storage, trial_id(trial))
            if storage.set_trial_state_values(trial_id(trial), state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id(trial))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker took it
    if spec.until_stopped and _top_ups < 10:  # one more placeholder; another worker may take it first
        study.enqueue_trial({}, user_attrs={SLOT: f"s{uuid.uuid4().hex[:8]}-r0", REPLICATE: 0})
        return claim(study, spec, _top_ups=_top_ups + 1)
    return None


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, *, max_retry: int | None = None) -> bool:
    """Enqueue a retry of a finished ``trial``: the same parameters, its epochs so far (intermediate values)
    and its run folder and W&B run (``failed_trial`` names the first trial of the chain). Its fail reason
    stays with it. Returns False when ``max_retry`` retries were already made (Optuna's
    ``RetryFailedTrialCallback`` rule)."""
    system_attrs: dict[str, Any] = {FAILED_TRIAL: trial.number, RETRY_HISTORY: [], **trial.system_attrs}
    system_attrs.pop(HEARTBEAT, None)
    for key in [k for k in system_attrs if k.startswith(ARTIFACTS_ATTR_PREFIX)]:
        del system_attrs[key]  # the retry uploads its own files when it ends
    system_attrs[RETRY_HISTORY] = [*system_attrs[RETRY_HISTORY], trial.number]
    if max_retry is not None and max_retry < len(system_attrs[RETRY_HISTORY]):
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


def reap_stale(study: optuna.Study, spec: SweepSpec) -> list[int]:
    """Fail trials whose heartbeat stopped and enqueue their retries; returns the failed trial numbers.

    RDB storages use Optuna's heartbeat (server time). Journal files have none, so workers write the time
    into a system attribute and compare it here with the grace period.
    """
    storage = storage_of(study)
    if has_heartbeat(storage):
        stale_ids = stale_trial_ids(study)
    else:
        now = time.time()
        stale_ids = [trial_id(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if now - t.system_attrs.get(HEARTBEAT, now) > spec.heartbeat.grace]
    failed = []
    for stale in stale_ids:
        reason = f"lost its worker (no heartbeat for over {spec.heartbeat.grace} s)"
        try:
            storage.set_trial_user_attr(stale, REASON, reason)  # before the state: a failed trial is frozen
            if not storage.set_trial_state_values(stale, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker reaped it, or its own worker finished it just now
        dead = storage.get_trial(stale)
        requeued = requeue(study, dead, max_retry=spec.max_retry)
        log.warning("trial %d %s: %s", dead.number, reason,
                    "re-queued" if requeued else f"not re-queued (max_retry={spec.max_retry} reached)")
        failed.append(dead.number)
    return failed


def _beat(storage: optuna.storages.BaseStorage, tid: int) -> None:
    """One heartbeat of the trial of id ``tid``: Optuna's (server time) on a database, else the time in a system
    attribute."""
    if has_heartbeat(storage):
        storage.record_heartbeat(tid)
    else:
        storage.set_trial_system_attr(tid, HEARTBEAT, time.time())


class Fenced(RuntimeError):
    """This worker no longer holds its trial: the trial was failed as stale (the worker was cut off from the study
    for longer than the grace period) and its retry may be running on another machine. Nothing more of it may be
    written: records, checkpoints, Optuna or W&B."""


class Lease:
    """A worker's hold on its claimed trial, renewed by each heartbeat.

    The reaper fails a trial only once its last beat is more than ``grace`` seconds old, so a worker whose last
    successful beat was *sent* less than ``grace / 2`` ago still holds its trial and may write for it without asking
    the storage (the other half is the margin for the write itself and for clock rates). Past that, :meth:`check`
    beats once, waiting for the storage as long as any storage call does, and then reads the trial's state: a
    trial reaped before that beat is no longer RUNNING, and one not reaped by then cannot be reaped for another
    ``grace`` seconds. Fencing is thus decided by the study alone, whatever the network did meanwhile.
    """

    def __init__(self, study: optuna.Study, trial: optuna.Trial, grace: float) -> None:
        self.storage = storage_of(study)
        self.tid = trial_id(trial)
        self.number = trial.number
        self.grace = grace
        self.sent = -math.inf
        """``time.monotonic()`` when the last successful beat was sent."""
        self._lock = threading.Lock()

    def beat(self) -> None:
        """One heartbeat; on success the lease runs from the moment it was sent."""
        sent = time.monotonic()
        _beat(self.storage, self.tid)
        with self._lock:
            self.sent = max(self.sent, sent)

    def held(self) -> bool:
        """Whether the last beat is recent enough to write without asking the storage."""
        return time.monotonic() - self.sent < self.grace / 2

    def check(self) -> None:
        """Return when this worker still holds its trial; else raise :class:`Fenced`.

        Raises:
            Fenced: the trial was failed (reaped as stale) while this worker could not beat.
            StorageError: the storage stayed unreachable for its whole retry budget.
        """
        if self.held():
            return
        try:
            self.beat()
            state = self.storage.get_trial(self.tid).state
        except optuna.exceptions.UpdateFinishedTrialError:  # a journal's beat on a finished trial
            state = TrialState.FAIL
        if state != TrialState.RUNNING:
            raise Fenced(f"trial {self.number} was failed as stale ({state.name}) while this worker could not "
                         f"reach the study for over {self.grace:g} s; its retry resumes it elsewhere")


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial, interval: float, grace: float) -> Iterator[Lease]:
    """Beat for ``trial`` every ``interval`` seconds in a thread while the body runs; yields the :class:`Lease`
    the beats keep."""
    lease = Lease(study, trial, grace)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                lease.beat()
            except Exception as err:  # noqa: BLE001 - a missed beat is retried; the trial goes on
                log.warning("heartbeat failed: %s", err)

    lease.beat()
    thread = threading.Thread(target=loop, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()


def config_id(params: Mapping[str, Any]) -> str:
    """A short stable id of a parameter set (replicates share it)."""
    return hashlib.sha1(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:10]


def enqueue_replicates(study: optuna.Study, trial: optuna.Trial, params: Mapping[str, Any], replicates: int) -> None:
    """Queue replicates 1..n-1 of a sampled parameter set (once, even when its first replicate is retried)."""
    base = str(trial.user_attrs.get(SLOT, f"s{trial.number}-r0")).rsplit("-r", 1)[0]
    present = {t.user_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
    for r in range(1, replicates):
        if f"{base}-r{r}" not in present:
            study.enqueue_trial(dict(params), user_attrs={SLOT: f"{base}-r{r}", REPLICATE: r})


