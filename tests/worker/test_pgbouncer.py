"""Workers through PgBouncer in transaction mode (Debian's ``pgbouncer``, started here on a
private port): the budget is exact, and the server sees no more connections than PgBouncer's
pool however many workers there are.

What this needs of ganhpo: a budget lock that lives in one transaction (PgBouncer gives each
transaction a server connection, and may give the next one another), tried rather than waited
for (waiters blocked in the server would hold the pool's few connections while the lock's
holder waits for one), and no prepared statements or session state across transactions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import TINY, ConnectionWatch, load
from optuna.trial import TrialState
from pg import PgBouncer, PrivateServer
from procs import finish, ganhpo, spec_variant, start

from ganhpo.chains import counted_trials

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)

WORKERS = 8
POOL = 3  # server connections PgBouncer keeps for the study's database
BUDGET = 16


@pytest.fixture
def bounced() -> Iterator[tuple[PrivateServer, PgBouncer]]:
    with PrivateServer() as server:
        server.create_database("bounced")
        with PgBouncer(server, ["bounced"], pool_size=POOL) as bouncer:
            yield server, bouncer


def test_workers_through_pgbouncer_spend_the_budget_exactly(
    bounced: tuple[PrivateServer, PgBouncer], tmp_path: Path, env: dict[str, str]
) -> None:
    server, bouncer = bounced
    url = bouncer.url("bounced")
    spec = spec_variant(tmp_path, {**TINY, "max_trials = 6 ": f"max_trials = {BUDGET} "})
    # Even the schema is created through PgBouncer.
    created = ganhpo("study", "create", str(spec), "--storage", url, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr

    watch = ConnectionWatch(server.url("postgres"))
    watch.start()
    started = time.monotonic()
    workers = [
        # A generous connect timeout: on a loaded 2-core machine PgBouncer's first answers to
        # eight workers starting at once can take longer than the default 30 s.
        start("worker", "--study", "quick", "--storage", url, "--connect-timeout", "300",
              cwd=tmp_path, env=env, log=tmp_path / f"w{i}.log")
        for i in range(WORKERS)
    ]  # fmt: skip
    codes = [finish(w, timeout=900) for w in workers]
    took = time.monotonic() - started
    watch.done.set()
    watch.join()
    logs = {i: (tmp_path / f"w{i}.log").read_text() for i in range(WORKERS)}
    assert codes == [0] * WORKERS, {i: log[-2000:] for i, log in logs.items() if codes[i]}

    trials = load(url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert counted_trials(trials) == BUDGET == len(trials)
    # The server saw PgBouncer's pool, not the workers (the watcher's connection aside).
    assert 1 <= watch.peak - 1 <= POOL, watch.peak
    shown = ganhpo("study", "show", "quick", "--storage", url, cwd=tmp_path, env=env)
    assert f"trials     {BUDGET} of {BUDGET}" in shown.stdout, shown.stdout + shown.stderr
    print(
        f"{WORKERS} workers through PgBouncer (pool {POOL}): {BUDGET} trials in {took:.0f} s, "
        f"peak server connections {watch.peak - 1}"
    )


def test_opening_the_storage_needs_one_server_connection_at_a_time() -> None:
    """Optuna's schema check holds a connection while it opens a second: behind a pool of one,
    it waits forever for itself (and behind a small pool, workers starting together each hold
    one and wait for another: seen as a PgBouncer test that hung until its timeout)."""
    import threading

    from ganhpo.storage import open_storage

    with PrivateServer() as server:
        server.create_database("one")
        open_storage(server.url("one"), create_schema=True).engine.dispose()  # the schema
        with PgBouncer(server, ["one"], pool_size=1) as bouncer:
            opened: list[object] = []
            thread = threading.Thread(
                target=lambda: opened.append(open_storage(bouncer.url("one"))), daemon=True
            )
            thread.start()
            thread.join(60)
            assert opened, "opening the storage through a pool of one connection hung"
