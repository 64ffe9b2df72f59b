"""The scan for trials whose worker fell silent finds what Optuna's finds, and reads only them.

Every worker scans before each trial it takes and while it waits for a study's last trials;
Optuna's own scan (``RDBStorage._get_stale_trial_ids``) loads every running trial with its
heartbeat, so with hundreds of workers the scans grew with the square of them.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import TrialState

from ganhpo.storage import open_storage, record_heartbeat
from ganhpo.worker._handover import stale_trial_ids

GRACE = 60


def test_the_stale_scan_finds_what_optunas_finds_reading_only_the_stale(any_db_url: str) -> None:
    url = any_db_url
    storage = open_storage(url, create_schema=True, heartbeat_interval=1, grace_period=GRACE)
    study = optuna.create_study(study_name="s", storage=storage)
    for _ in range(30):  # other workers' trials, beating
        storage.record_heartbeat(study.ask()._trial_id)
    silent = [study.ask()._trial_id for _ in range(3)]
    done = study.ask()
    for trial_id in [*silent, done._trial_id]:
        storage.record_heartbeat(trial_id)
    study.tell(done, 1.0)  # finished: never stale, however old its last beat
    study.ask()  # never beat: adopted by the scan's caller, not stale yet
    beat = models.TrialHeartbeatModel
    with storage.engine.begin() as conn:
        conn.execute(
            sqlalchemy.update(beat)
            .where(beat.trial_id.in_([*silent, done._trial_id]))
            .values(heartbeat=datetime.datetime(2000, 1, 1))
        )

    rows: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        rows.append(cursor.rowcount)

    sqlalchemy.event.listen(storage.engine, "after_cursor_execute", count)
    try:
        found = stale_trial_ids(study, GRACE)
    finally:
        sqlalchemy.event.remove(storage.engine, "after_cursor_execute", count)
    assert found == sorted(storage._get_stale_trial_ids(study._study_id)) == silent
    if url.startswith("postgresql"):  # psycopg2 counts the rows a SELECT returned
        assert sum(rows) == 1 + len(silent), rows  # the server's clock, then the stale ids


def test_a_heartbeat_is_optunas_in_one_transaction_and_says_the_trials_state(
    any_db_url: str,
) -> None:
    url = any_db_url
    storage = open_storage(url, create_schema=True, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="s", storage=storage)
    fresh, silent, done = study.ask(), study.ask(), study.ask()
    transactions: list[int] = []
    sqlalchemy.event.listen(storage.engine, "begin", lambda *a: transactions.append(1))
    for t in (fresh, silent, done):
        assert record_heartbeat(storage, t._trial_id) == TrialState.RUNNING  # first beats
    assert len(transactions) == 3
    study.tell(done, 1.0)
    assert record_heartbeat(storage, done._trial_id) == TrialState.COMPLETE
    time.sleep(3)  # past the grace period: both silent
    assert record_heartbeat(storage, fresh._trial_id) == TrialState.RUNNING  # a later beat
    expected = [silent._trial_id]
    assert storage._get_stale_trial_ids(study._study_id) == expected  # Optuna reads our beats
    assert stale_trial_ids(study, 2) == expected
