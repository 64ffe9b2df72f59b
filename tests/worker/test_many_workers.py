"""Many workers on one small database server: 40 real ``ganhpo worker`` processes against a
private PostgreSQL whose ``max_connections`` is 50 finish a study's budget exactly.

A worker holds no connection while it trains (no pool: one connection per transaction), so the
server's limit bounds the workers talking at one instant, not those that exist; the budget lock
is tried in a transaction of its own, so waiters hold no connection; a worker that still finds
the server full waits and tries again. Before that, each worker kept up to three pooled
connections open, and forty of them could not fit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import TINY, ConnectionWatch, load
from optuna.trial import TrialState
from pg import PrivateServer
from procs import finish, ganhpo, spec_variant, start, wait_for

from ganhpo.chains import counted_trials

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)

WORKERS = 40
MAX_CONNECTIONS = 50  # of which PostgreSQL keeps 3 for superusers (superuser_reserved_connections)
BUDGET = 60


@pytest.fixture
def small_server() -> Iterator[PrivateServer]:
    with PrivateServer(settings={"max_connections": str(MAX_CONNECTIONS)}) as server:
        yield server


def test_forty_workers_on_a_server_of_fifty_connections(
    small_server: PrivateServer, tmp_path: Path, env: dict[str, str]
) -> None:
    url = small_server.create_database("many")
    spec = spec_variant(tmp_path, {**TINY, "max_trials = 6 ": f"max_trials = {BUDGET} "})
    created = ganhpo("study", "create", str(spec), "--storage", url, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    # The statistics of the real data are cached before the crowd starts (each worker would
    # otherwise compute them), so the workers start as they do on a study already running.
    warm = ganhpo(
        "worker", "--study", "quick", "--storage", url, "--n-trials", "1", cwd=tmp_path, env=env
    )
    assert warm.returncode == 0, warm.stderr

    watch = ConnectionWatch(small_server.url("postgres"))
    watch.start()
    started = time.monotonic()
    workers = [
        start(
            "worker",
            "--study",
            "quick",
            "--storage",
            url,
            cwd=tmp_path,
            env=env,
            log=tmp_path / f"w{i}.log",
        )
        for i in range(WORKERS)
    ]
    codes = [finish(w, timeout=1200) for w in workers]
    took = time.monotonic() - started
    watch.done.set()
    watch.join()
    logs = {i: (tmp_path / f"w{i}.log").read_text() for i in range(WORKERS)}
    failed = {i: log[-2000:] for i, log in logs.items() if codes[i] != 0}
    assert not failed, failed
    assert not [i for i, log in logs.items() if "Traceback" in log or "error:" in log]
    # A worker that finds the server full waits and tries again (back-pressure, not an outage).
    limited = sum(log.count("at its connection limit") for log in logs.values())

    trials = load(url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert counted_trials(trials) == BUDGET == len(trials)  # nothing handed over, nothing extra
    ran = sum(1 for log in logs.values() if " started: " in log)
    print(  # the watcher's own connection is one of those it counted
        f"{WORKERS} workers, {BUDGET} trials in {took:.0f} s; {ran} workers ran a trial; "
        f"peak client connections {watch.peak - 1} of {MAX_CONNECTIONS}; the server was full "
        f"{limited} time(s)"
    )


@pytest.fixture
def tiny_server() -> Iterator[PrivateServer]:
    with PrivateServer(settings={"max_connections": "6"}) as server:
        yield server


def test_a_full_server_is_waited_for_past_the_retry_timeout(
    tiny_server: PrivateServer, tmp_path: Path, env: dict[str, str]
) -> None:
    """All of the server's connections are taken for 20 s while a worker trains; its
    --db-retry-timeout is 3 s. A server that refuses for being full is there: the worker waits
    and finishes its trial, where it used to give up after 3 s ("unreachable") and exit 1."""
    import psycopg2

    url = tiny_server.create_database("full")
    spec = spec_variant(
        tmp_path, {**TINY, "max_trials = 6 ": "max_trials = 1 ", "steps = 20": "steps = 400"}
    )
    created = ganhpo("study", "create", str(spec), "--storage", url, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    log = tmp_path / "w.log"
    worker = start(
        "worker", "--study", "quick", "--storage", url, "--db-retry-timeout", "3",
        cwd=tmp_path, env=env, log=log,
    )  # fmt: skip
    wait_for(lambda: "started: " in log.read_text(), 300, "the trial to start")
    taken = []
    try:
        while True:  # every slot, superusers' included (the worker logs in as one)
            try:
                taken.append(psycopg2.connect(tiny_server.url("postgres")))
            except psycopg2.OperationalError as e:
                assert "too many clients" in str(e), e
                break
        time.sleep(20)
    finally:
        for conn in taken:
            conn.close()
    assert finish(worker, timeout=600) == 0, log.read_text()
    text = log.read_text()
    assert "at its connection limit" in text and "trial 0 complete" in text, text
    assert "unreachable" not in text
