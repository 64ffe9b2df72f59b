"""A worker frozen (SIGSTOP; a suspended VM) while it holds the study's budget lock.

Real ``ganhpo worker`` processes on a real PostgreSQL. What a worker does under the lock (count
the budget, take or create a trial) is done in the lock's transaction: the server ends a
transaction silent for ``_LOCK_IDLE_LIMIT_S``, and the lock and all that was done under it
with it. So the others wait seconds, not the 300 s they waited before; and the frozen worker,
woken, finds its work undone, does it again against what the others did meanwhile (here: the
budget is spent), says it was frozen, and leaves no trial past the budget. Two instants: frozen
after counting the budget, before taking a trial; frozen after taking it, before the commit.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy
from faults import check_all_finished, create_study, load, start_worker
from optuna.trial import TrialState
from procs import QUICK, finish, ganhpo, wait_for

from ganhpo.spec import load_study_spec
from ganhpo.storage import _LOCK_IDLE_LIMIT_S, open_storage
from ganhpo.study import create_study as create_optuna_study
from ganhpo.study import load_study
from ganhpo.worker import Worker, WorkerOptions


@pytest.mark.slow  # started first (tests/conftest.py)
@pytest.mark.parametrize("instant", ["lock:held", "lock:committing"])
def test_a_worker_frozen_holding_the_budget_lock_stalls_no_one_and_spends_nothing(
    postgres_url: str, tmp_path: Path, env: dict[str, str], instant: str
) -> None:
    create_study(postgres_url, tmp_path, env)  # a budget of one trial
    a = start_worker(postgres_url, tmp_path, env, "a", failpoint=f"{instant}#1:stop")
    a_log = tmp_path / "a.log"
    wait_for(
        lambda: f"failpoint {instant}: stop" in a_log.read_text(), 120, f"a to freeze at {instant}"
    )
    frozen_at = time.monotonic()
    b = start_worker(postgres_url, tmp_path, env, "b")

    def running() -> bool:
        return any(t.state == TrialState.RUNNING for t in load(postgres_url).get_trials())

    # b starts the budget's one trial once the server has ended a's transaction: within the
    # limit and b's start-up (seconds), where it waited 300 s before.
    assert _LOCK_IDLE_LIMIT_S <= 30
    wait_for(running, 120, "worker b to start the study's trial")
    waited = time.monotonic() - frozen_at
    assert waited < _LOCK_IDLE_LIMIT_S + 40, waited
    assert finish(b) == 0, (tmp_path / "b.log").read_text()

    os.kill(a.pid, signal.SIGCONT)
    code = finish(a, timeout=120)
    log = a_log.read_text()
    assert code == 0, log
    assert "was frozen or suspended (or the database stalled) for" in log, log
    assert "the study's budget of 1 trials is spent" in log, log
    assert "Traceback" not in log and "unreachable" not in log, log

    trials = check_all_finished(postgres_url, 1)  # none RUNNING or WAITING, one counted
    assert len(trials) == 1, [(t.number, t.state) for t in trials]
    shown = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert "trials     1 of 1: complete 1\n" in shown.stdout, shown.stdout


def test_a_database_call_frozen_past_the_retry_timeout_is_still_retried(tmp_path: Path) -> None:
    """The retry timeout counts from the first failure: a worker frozen inside a database call
    for longer than ``--db-retry-timeout`` (its lock's transaction ended meanwhile) retries it
    when it wakes, where it gave up at once, saying the database had been unreachable."""
    spec = load_study_spec(QUICK)
    storage = open_storage(f"sqlite:///{tmp_path / 'ganhpo.db'}", create_schema=True)
    create_optuna_study(spec, storage)
    options = WorkerOptions(db_retry_timeout=2.0)
    w = Worker(load_study(spec.name, storage), spec, options, storage=storage)
    calls: list[float] = []

    def frozen_then_failed() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(3.0)  # frozen inside the call, past the retry timeout
            raise sqlalchemy.exc.OperationalError(
                "COMMIT", {}, ConnectionError("terminating connection due to idle timeout")
            )
        return "done"

    assert w._db(frozen_then_failed) == "done"
    assert len(calls) == 2
