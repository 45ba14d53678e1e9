"""Optuna's private API, fenced: every private name the sweeps use, each in one place with why the public API
does not do the job. ``tests/sweeps/test_optuna_private.py`` checks each against the installed Optuna (the
version ``pyproject.toml`` pins): on an upgrade, run it first.

- The study's storage, its id and a trial's id (``Study._storage``, ``Study._study_id``, ``Trial._trial_id``):
  a claim is the storage's atomic WAITING->RUNNING change of one chosen trial (the public ``Study.ask`` samples
  a new trial when the queue is empty), a heartbeat is recorded for a trial id, and a live ``Trial`` shows no
  system attributes (:func:`frozen_trial` reads them from the storage).
- The stale trials (``_get_stale_trial_ids``): what the public ``optuna.storages.fail_stale_trials`` reads,
  which fails them without a reason; the sweeps record why (``fail_reason``) before the state change, since a
  failed trial can no longer be changed.
- ``BaseHeartbeat`` and ``is_heartbeat_enabled``: a storage wrapper must subclass the former for Optuna to keep
  heartbeats through it (``cvae.sweeps.storage.ResilientStorage``).
- ``_CachedStorage``: the cache ``optuna.storages.get_storage`` puts in front of an RDB storage, which a storage
  opened by hand gets too.
- ``ARTIFACTS_ATTR_PREFIX``: the system attributes that list a trial's artifacts, which a retry must not
  inherit (it uploads its own).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

__all__ = ["ARTIFACTS_ATTR_PREFIX", "BaseHeartbeat", "cached_rdb_storage", "frozen_trial", "has_heartbeat",
           "stale_trial_ids", "storage_of", "study_id", "trial_id"]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes through."""
    return study._storage  # noqa: SLF001


def study_id(study: optuna.Study) -> int:
    """``study``'s id in its storage."""
    return study._study_id  # noqa: SLF001


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """A trial's id in its storage (not its number)."""
    return trial._trial_id  # noqa: SLF001


def frozen_trial(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """A live trial's stored state, with the system attributes a live ``Trial`` does not expose."""
    return storage_of(trial.study).get_trial(trial_id(trial))


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    """Whether ``storage`` keeps Optuna's heartbeat (an RDB storage opened with ``heartbeat_interval``)."""
    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """The ids of ``study``'s running trials whose heartbeat is older than the storage's grace period (the
    database's clock); ``storage_of(study)`` must keep heartbeats (:func:`has_heartbeat`)."""
    return list(storage_of(study)._get_stale_trial_ids(study_id(study)))  # noqa: SLF001


def cached_rdb_storage(rdb: optuna.storages.RDBStorage) -> Any:
    """``rdb`` behind Optuna's cache, as ``optuna.storages.get_storage`` builds it from a URL."""
    return optuna.storages._CachedStorage(rdb)  # noqa: SLF001
