"""ganhpo's trial cache (``ganhpo.storage.TrialCache``, Optuna's cache with a lighter read of
finished trials) answers every question as Optuna's own, and a question about finished trials
alone without reading the running ones again."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ganhpo.storage import TrialCache, open_storage, set_user_attrs

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def snapshot(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[Any, ...]]:
    return [
        (t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs) for t in trials
    ]


def test_the_cache_answers_as_optunas_while_trials_start_and_end(any_db_url: str) -> None:
    url = any_db_url
    optuna.create_study(study_name="s", storage=open_storage(url, create_schema=True))
    other = optuna.load_study(study_name="s", storage=open_storage(url))  # another worker
    cached = optuna.load_study(study_name="s", storage=TrialCache(open_storage(url)))

    def check(full: bool = True) -> None:
        truth = optuna.load_study(study_name="s", storage=open_storage(url))  # a fresh read
        for states in [FINISHED, (TrialState.COMPLETE,), (TrialState.PRUNED, TrialState.FAIL)]:
            assert snapshot(cached.get_trials(deepcopy=False, states=states)) == snapshot(
                truth.get_trials(deepcopy=False, states=states)
            ), states
        if full:  # Optuna's own read, which brings the running trials up to date too
            assert snapshot(cached.get_trials(deepcopy=False)) == snapshot(truth.get_trials())

    running = []
    for i in range(6):
        t = other.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        t.report(float(i), 1)
        t.set_user_attr("status", "running")
        running.append(t)
    check()  # all running: cached as such
    other.tell(running[0], 0.5)
    other.tell(running[1], state=TrialState.PRUNED)
    check(full=False)  # two finished since they were cached as running
    other.enqueue_trial({"x": 0.25})  # a waiting one
    late = other.ask()  # takes the waiting trial
    other.tell(late, 0.25)
    check(full=False)  # one created and finished since the last look
    other.tell(running[2], state=TrialState.FAIL)
    running[3].set_user_attr("status", "still running")
    check()
    for t in running[3:]:
        other.tell(t, 1.0)
    check()


def test_a_question_about_finished_trials_reads_only_what_finished(postgres_url: str) -> None:
    optuna.create_study(study_name="s", storage=open_storage(postgres_url, create_schema=True))
    other = optuna.load_study(study_name="s", storage=open_storage(postgres_url))
    trials = []
    for _ in range(40):
        t = other.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        for step in range(5):
            t.report(0.1 * step, step)
        t.set_user_attr("status", "running")
        trials.append(t)
    for t in trials[:10]:
        other.tell(t, 1.0)
    storage = TrialCache(open_storage(postgres_url))
    cached = optuna.load_study(study_name="s", storage=storage)
    assert len(cached.get_trials(deepcopy=False)) == 40  # a full read, as Optuna's

    rows: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if cursor.description is not None:
            rows.append(cursor.rowcount)

    engine = storage._backend.engine
    sqlalchemy.event.listen(engine, "after_cursor_execute", count)
    try:
        # The median pruner's question, with nothing finished since: 30 ids and states.
        assert len(cached.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 10
        assert sum(rows) == 30, rows
        rows.clear()
        other.tell(trials[10], 1.0)  # one finished: it alone is read whole
        assert len(cached.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 11
        ids_and_states, whole = 30, 1 + 1 + 5 + 1 + 1  # trial, param, curve, attr, value
        assert sum(rows) <= ids_and_states + whole + 1, rows  # + the study's existence check
    finally:
        sqlalchemy.event.remove(engine, "after_cursor_execute", count)
    # Optuna's own cache reads the 30 running trials whole for the same question.
    plain = optuna.load_study(study_name="s", storage=open_storage(postgres_url))
    plain.get_trials(deepcopy=False)
    rows.clear()
    sqlalchemy.event.listen(plain._storage._backend.engine, "after_cursor_execute", count)
    plain.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert sum(rows) > 8 * 29, rows


def test_several_user_attributes_are_set_in_one_transaction_as_optuna_sets_one(
    any_db_url: str,
) -> None:
    url = any_db_url
    storage = open_storage(url, create_schema=True)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.set_user_attr("status", "running")
    transactions: list[int] = []
    sqlalchemy.event.listen(storage.engine, "begin", lambda *a: transactions.append(1))
    set_user_attrs(storage, trial._trial_id, {"status": "done", "fid": 12.5, "grid": {"a": [1]}})
    assert len(transactions) == 1
    assert storage.get_trial(trial._trial_id).user_attrs == {
        "status": "done", "fid": 12.5, "grid": {"a": [1]}
    }  # fmt: skip
    study.tell(trial, 1.0)
    with pytest.raises(UpdateFinishedTrialError, match="has already finished"):
        set_user_attrs(storage, trial._trial_id, {"status": "late"})
    assert storage.get_trial(trial._trial_id).user_attrs["status"] == "done"
