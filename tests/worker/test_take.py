"""Taking a trial (``Worker.next_trial``) on PostgreSQL: waiting trials first, in order; and
under the budget lock, which serializes every worker's start, nothing but a few small queries
(none reads the study's running trials, whose number grows with the workers)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from procs import QUICK

from ganhpo.spec import load_study_spec
from ganhpo.storage import open_storage
from ganhpo.study import create_study, load_study, suggest_params
from ganhpo.worker import Worker, WorkerOptions
from ganhpo.worker import _worker as worker_module


def worker_on(url: str, waiting: int = 0) -> Worker:
    spec = load_study_spec(QUICK)  # one baseline: trial 0 waits from the start
    storage = open_storage(url, create_schema=True)
    study = create_study(spec, storage)
    for _ in range(waiting):
        study.enqueue_trial({})
    return Worker(load_study(spec.name, storage), spec, WorkerOptions(), storage=storage)


def test_waiting_trials_are_taken_in_order_then_new_ones(postgres_url: str) -> None:
    w = worker_on(postgres_url, waiting=2)
    taken, params = [], []
    for _ in range(5):
        trial = w.next_trial()
        assert trial is not None
        # Its parameters are set at once, as the worker does: a trial taken from the queue
        # must be known to the study's trial cache by then (KeyError before it was synced).
        params.append(suggest_params(trial, w.spec))
        taken.append(trial.number)
    assert taken == [0, 1, 2, 3, 4]
    trials = w.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.RUNNING] * 5
    # The baseline's enqueued values are the trial's fixed parameters; the others sampled.
    assert params[0]["lr_g"] == 5e-4 and len({p["lr_g"] for p in params}) == 5
    w.budget = 5
    assert w.next_trial() is None and "budget of 5 trials is spent" in w.spent


def test_a_waiting_trial_someone_else_took_is_skipped(postgres_url: str) -> None:
    w = worker_on(postgres_url, waiting=1)
    other = optuna.load_study(study_name="quick", storage=open_storage(postgres_url))
    first = other.ask()  # a plain Optuna client, outside ganhpo's lock, takes trial 0
    assert first.number == 0
    taken = w.next_trial()
    assert taken is not None and taken.number == 1


@contextlib.contextmanager
def statements_under_the_lock(w: Worker, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL the worker runs while it holds the budget lock."""
    locked: list[bool] = [False]
    seen: list[str] = []
    real_lock = worker_module.budget_lock

    @contextlib.contextmanager
    def watched(*args: Any, **kwargs: Any) -> Iterator[None]:
        with real_lock(*args, **kwargs):
            locked[0] = True
            try:
                yield
            finally:
                locked[0] = False

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if locked[0]:
            seen.append(statement)

    monkeypatch.setattr(worker_module, "budget_lock", watched)
    sqlalchemy.event.listen(w.storage.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy.event.remove(w.storage.engine, "before_cursor_execute", record)


def test_the_lock_is_held_for_a_few_queries_not_the_running_trials(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 running trials of other workers, with parameters and curves: taking a trial under
    the lock must not read them (``Study.ask`` read every unfinished trial there, then sampled
    with the lock still held: the serialized part grew with the number of workers)."""
    w = worker_on(postgres_url)
    w.budget = 100  # more than the quick study's 6 trials
    others = optuna.load_study(study_name="quick", storage=open_storage(postgres_url))
    for _ in range(30):
        t = others.ask()
        suggest_params(t, w.spec)
        t.report(100.0, 80)
    others.enqueue_trial({})  # trial 30 waits
    w.study.get_trials(deepcopy=False)  # the worker's cache holds them, as after earlier asks
    with statements_under_the_lock(w, monkeypatch) as seen:
        trial = w.next_trial()
    assert trial is not None and trial.number == 30  # the waiting one, after the 30
    joined = "\n".join(seen)
    assert seen and len(seen) <= 15, joined
    for table in ("trial_params", "trial_intermediate_values", "trial_values"):
        assert table not in joined, (table, joined)


def test_an_outage_while_opening_a_trial_opens_it_again_and_takes_no_other(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The trial is taken (RUNNING, counted) under the lock; a database error after that, while
    the worker opens it, must retry the opening: taking another would leave the first running
    without a heartbeat until the grace period hands it over."""
    w = worker_on(postgres_url)
    monkeypatch.setenv("GANHPO_FAILPOINT", "worker:opening#1:dberror")
    with caplog.at_level(logging.WARNING, logger="ganhpo._failpoints"):
        trial = w.next_trial()
    fired = [r.getMessage() for r in caplog.records if r.name == "ganhpo._failpoints"]
    assert fired == ["failpoint worker:opening: dberror"]  # the error did happen, once
    assert trial is not None and trial.number == 0
    states = [t.state for t in w.study.get_trials(deepcopy=False)]
    assert states == [TrialState.RUNNING]


def test_a_worker_waiting_for_the_last_trials_neither_locks_nor_reads_them(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget is spent and 30 trials of other workers run: a worker that finds nothing to
    take (and waits for them to end, in case one is handed over) must not queue for the budget
    lock, nor read the running trials, every few seconds: with hundreds of workers waiting for
    a study's last trials, both grew with the workers (the lock is what every start goes
    through; the trials were read to count the running ones)."""
    w = worker_on(postgres_url)
    w.budget = 30
    others = optuna.load_study(study_name="quick", storage=open_storage(postgres_url))
    for _ in range(30):
        t = others.ask()
        suggest_params(t, w.spec)
        t.report(100.0, 80)
    w.study.get_trials(deepcopy=False)  # the worker's cache holds them, as after earlier asks
    locked: list[bool] = []
    monkeypatch.setattr(worker_module, "budget_lock", lambda *a, **k: locked.append(True))
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sqlalchemy.event.listen(w.storage.engine, "before_cursor_execute", record)
    try:
        assert w.next_trial() is None
    finally:
        sqlalchemy.event.remove(w.storage.engine, "before_cursor_execute", record)
    assert w.spent == "the study's budget of 30 trials is spent"
    assert w.ledger is not None and w.ledger.running == 30  # what the wait loop counts
    assert not locked
    joined = "\n".join(seen)
    assert seen and len(seen) <= 6, joined
    for table in ("trial_params", "trial_intermediate_values", "trial_values"):
        assert table not in joined, (table, joined)
