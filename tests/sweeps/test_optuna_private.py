"""Every private Optuna name the sweeps use (cvae.sweeps.optuna_private) does what they rely on, on the installed
Optuna, each checked against Optuna's public API where it has one. On an Optuna upgrade, run this first."""

from __future__ import annotations

import re
import time
from pathlib import Path

import optuna
import pytest
from cvae.sweeps import optuna_private as P
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]
# Optuna warns that a storage's heartbeat is meant for Study.optimize: the sweeps keep it by hand (cvae.sweeps.queue).
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")


def test_optuna_is_the_version_the_fence_was_checked_against() -> None:
    pinned = re.search(r'"optuna==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert optuna.__version__ == pinned, ("the private API in cvae.sweeps.optuna_private was checked against "
                                          f"optuna {pinned}: rerun these tests on {optuna.__version__}, then pin it")


@pytest.fixture
def rdb(tmp_path: Path) -> RDBStorage:
    return RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=1)


def test_the_storage_and_the_ids_are_the_public_apis(rdb: RDBStorage) -> None:
    study = optuna.create_study(storage=rdb, study_name="fence")
    storage = P.storage_of(study)  # the RDB storage behind Optuna's cache, as create_study puts it
    assert type(storage) is type(P.cached_rdb_storage(rdb)) and storage.get_study_name_from_id(P.study_id(study)) == "fence"
    assert P.study_id(study) == rdb.get_study_id_from_name("fence")
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    for frozen in study.get_trials():
        assert P.trial_id(frozen) == rdb.get_trial_id_from_study_id_trial_number(P.study_id(study), frozen.number)
    live = study.ask()
    live.storage.set_trial_system_attr(P.trial_id(live), "slot", "s0")
    assert P.trial_id(live) == rdb.get_trial_id_from_study_id_trial_number(P.study_id(study), live.number)
    assert P.frozen_trial(live).system_attrs["slot"] == "s0" and P.frozen_trial(live).number == live.number


def test_stale_trials_are_those_the_public_fail_stale_trials_fails(rdb: RDBStorage) -> None:
    study = optuna.create_study(storage=rdb)
    stale, fresh = study.ask(), study.ask()
    rdb.record_heartbeat(P.trial_id(stale))
    time.sleep(2.2)  # past the 1 s grace period
    rdb.record_heartbeat(P.trial_id(fresh))
    assert P.has_heartbeat(rdb) and P.stale_trial_ids(study) == [P.trial_id(stale)]
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]


def test_only_a_storage_opened_with_a_heartbeat_has_one(tmp_path: Path) -> None:
    assert not P.has_heartbeat(RDBStorage(f"sqlite:///{tmp_path / 'plain.db'}"))
    assert not P.has_heartbeat(JournalStorage(JournalFileBackend(str(tmp_path / "journal.log"))))
    assert issubclass(RDBStorage, P.BaseHeartbeat)


def test_the_cache_is_the_one_get_storage_builds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cached.db'}"
    assert type(P.cached_rdb_storage(RDBStorage(url))) is type(optuna.storages.get_storage(url))


def test_artifacts_are_listed_under_the_prefix(tmp_path: Path, rdb: RDBStorage) -> None:
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    study = optuna.create_study(storage=rdb)
    trial = study.ask()
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "store").mkdir()
    upload_artifact(artifact_store=FileSystemArtifactStore(tmp_path / "store"), file_path=str(tmp_path / "a.txt"),
                    study_or_trial=trial)
    keys = [k for k in P.frozen_trial(trial).system_attrs if k.startswith(P.ARTIFACTS_ATTR_PREFIX)]
    assert len(keys) == 1
