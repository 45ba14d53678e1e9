"""Machines that drop off the network: a worker cut off mid-trial loses the trial to another and, when it comes
back, is fenced (writes nothing more of it).

The end-to-end test puts two workers on machines of its own (network namespaces, :mod:`tests.sweeps.netns`) whose
only link goes to a PostgreSQL server it starts on the host side of those links; it sends traffic nowhere else.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cvae.core.records import read_csv
from cvae.sweeps.queue import Fenced, Lease, claim, open_study
from cvae.sweeps.spec import load_spec
from cvae.sweeps.storage import open_storage
from netns import Network, unavailable
from optuna.trial import TrialState
from pg import PostgresServer, find_bindir
from test_runner import BASE, _wait_for, cvae, write_spec

from cvae.schema import REASON


# -- the lease, on its own -----------------------------------------------------------------------------------------
def _claimed(tmp_path: Path, tiny_dataset: Path, storage: str | None = None):
    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                                heartbeat={"interval": 1, "grace": 4}), storage=storage)
    study = open_study(spec, open_storage(spec), fill_queue=True)
    trial = claim(study, spec)
    assert trial is not None
    return study, trial


class _NoStorage:
    def __getattr__(self, name):
        raise AssertionError(f"a held lease called the storage ({name})")


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_a_lease_is_held_for_half_the_grace_then_renewed_or_fenced(tiny_dataset, tmp_path, storage):
    url = f"journal:{tmp_path / 'journal.log'}" if storage == "journal" else None
    study, trial = _claimed(tmp_path, tiny_dataset, url)
    lease = Lease(study, trial, grace=4)
    lease.beat()
    real, lease.storage = lease.storage, _NoStorage()
    lease.check()  # held: no round trip to the database for each epoch
    lease.storage = real

    lease.sent -= 3  # past half the grace: the lease asks the study, which still has the trial RUNNING
    lease.check()
    assert lease.held()

    real.set_trial_user_attr(trial._trial_id, REASON, "lost its worker")  # what another worker's reaper does
    real.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    lease.check()  # still within the half grace it had: the reaper cannot have failed it yet in real life
    lease.sent -= 3
    with pytest.raises(Fenced, match=f"trial {trial.number} was failed as stale"):
        lease.check()


# -- a worker cut off mid-trial ------------------------------------------------------------------------------------
def _network_or_skip() -> None:
    why = unavailable() or (None if find_bindir() else "PostgreSQL not installed")
    if why is None:
        return
    if os.environ.get("CVAE_REQUIRE_NETNS") == "1":
        pytest.fail(f"CVAE_REQUIRE_NETNS=1 but {why}", pytrace=False)
    pytest.skip(why)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_worker_cut_off_mid_trial_is_fenced_when_it_comes_back(tiny_dataset, tmp_path, env):
    """Worker a trains the only trial; its link is cut after its second epoch. Worker b reaps the trial once the
    heartbeat grace has passed and resumes its retry from a's last checkpoint to the end. Then a's link comes back:
    a finds it lost the trial and writes nothing (no second completion, no epoch twice, no file of the run folder
    changed), and exits cleanly."""
    _network_or_skip()
    epochs = 6
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                           heartbeat={"interval": 1, "grace": 4}, wandb={"project": "test", "mode": "disabled"},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": epochs})
    run = tmp_path / "out" / "t0000"
    with Network(["a", "b"]) as net, PostgresServer(listen=(net.host_address("a"), net.host_address("b")),
                                                    trust=net.subnets) as pg:
        here = pg.url
        at = {m: here.replace("@127.0.0.1:", f"@{net.host_address(m)}:") for m in ("a", "b")}
        init = cvae("sweep", "init", str(spec_path), "--storage", here, env=env)
        assert init.returncode == 0, init.stderr[-2000:]
        logs = {m: tmp_path / f"worker-{m}.log" for m in ("a", "b")}
        procs: dict[str, subprocess.Popen] = {}

        def start(machine: str) -> None:
            with logs[machine].open("w") as out:
                procs[machine] = net.popen(machine, [
                    sys.executable, "-m", "cvae", "sweep", "worker", str(spec_path), "--storage", at[machine],
                    "--threads", "1"], env={**env, "CVAE_WORKER": machine}, stdout=out, stderr=subprocess.STDOUT)

        try:
            start("a")
            _wait_for(lambda: (run / "metrics.csv").exists() and len(read_csv(run / "metrics.csv")) >= 2, 180,
                      "worker a's second epoch")
            net.cut("a")
            start("b")
            study = optuna.load_study(study_name="t", storage=here)
            _wait_for(lambda: TrialState.COMPLETE in [t.state for t in study.get_trials()], 180,
                      "worker b to complete the trial")
            _wait_for(lambda: procs["b"].poll() is not None, 60, "worker b to exit")
            before = _digests(run)
            net.restore("a")
            procs["a"].wait(timeout=120)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = {m: logs[m].read_text() for m in logs}
        assert procs["a"].returncode == 0 and procs["b"].returncode == 0, text
        trials = study.get_trials()

    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], text
    assert "lost its worker (no heartbeat for over 4 s)" in trials[0].user_attrs[REASON]
    assert "trial 0 was failed as stale" in text["a"] and "nothing more of it is written by this worker" in text["a"]
    assert "0 complete, 0 pruned, 0 failed, 1 lost to other workers (fenced)" in text["a"], text["a"]
    assert "resumed" in text["b"] and "at epoch 0" not in text["b"], text["b"]  # from a's checkpoint
    assert _digests(run) == before  # a wrote nothing: records, checkpoints, trial.json
    assert [int(r["epoch"]) for r in read_csv(run / "metrics.csv")] == list(range(epochs))
    assert sorted(trials[1].intermediate_values) == list(range(epochs))
