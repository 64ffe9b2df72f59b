"""Dead workers, signals, a restarting database, diverging GANs, secrets: nothing is lost.

Real worker processes against a real PostgreSQL; the restart test uses the suite's private
server (never the machine's shared one).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy
from faults import (
    FAST,
    check_all_finished,
    check_no_orphans,
    checkpoint_of,
    first_worker_at_checkpoint,
    load,
    run_worker_to_the_end,
    start_worker,
)
from optuna.trial import TrialState
from procs import finish, ganhpo, spec_variant, wait_for, worker_env

from ganhpo.storage import open_storage


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache")


def test_killed_worker_trial_is_resumed_from_its_checkpoint(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    a, ckpt = first_worker_at_checkpoint(postgres_url, tmp_path, env)
    os.kill(a.pid, signal.SIGKILL)
    assert finish(a) == -signal.SIGKILL
    artifacts = tmp_path / "ganhpo-artifacts"
    assert (artifacts / ckpt["id"]).is_file()

    b_log = run_worker_to_the_end(postgres_url, tmp_path, env, "b")

    trials = check_all_finished(postgres_url, 1)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [0]  # failed by the heartbeat check, then retried
    retry = next(t for t in trials if t.user_attrs.get("resumed_from_trial") == 0)
    resumed_at = retry.user_attrs["resumed_at_step"]
    assert resumed_at >= ckpt["step"] >= 40  # from its checkpoint, not from step 0
    assert (
        retry.params == failed[0].params
        and retry.user_attrs["seed"] == failed[0].user_attrs["seed"]
    )
    assert f"resumes trial 0 at step {resumed_at}" in b_log
    # The replaced checkpoints were removed: generators and sample grids remain.
    assert not [p for p in artifacts.iterdir() if p.name.startswith("checkpoint-")]
    assert not (artifacts / ckpt["id"]).exists()
    generators = {t.user_attrs["generator"] for t in trials if t.state == TrialState.COMPLETE}
    assert all((artifacts / g).is_file() for g in generators) and len(generators) == 1


def test_sigterm_hands_the_trial_back_and_exits_promptly(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    a, _ = first_worker_at_checkpoint(postgres_url, tmp_path, env)
    sent = time.monotonic()
    a.send_signal(signal.SIGTERM)
    code = finish(a, timeout=30)
    took = time.monotonic() - sent
    log = (tmp_path / "a.log").read_text()
    assert code == 0, log
    assert took < 10, took
    assert "stopped by SIGTERM" in log

    first = load(postgres_url).get_trials(deepcopy=False)[0]
    assert first.state == TrialState.FAIL
    status = first.user_attrs["status"]
    assert status.startswith("interrupted by SIGTERM at step ") and status.endswith("handed back")
    stopped_at = int(status.split("at step ")[1].split(":")[0])

    b_log = run_worker_to_the_end(postgres_url, tmp_path, env, "b")
    trials = check_all_finished(postgres_url, 1)
    retry = next(t for t in trials if t.user_attrs.get("resumed_from_trial") == 0)
    assert retry.user_attrs["resumed_at_step"] == stopped_at > 0
    assert f"resumes trial 0 at step {stopped_at}" in b_log
    print(f"SIGTERM: exited after {took:.1f} s; trial 0 resumed at step {stopped_at}")


def test_postgres_restart_mid_study(private_postgres, tmp_path: Path, env: dict[str, str]) -> None:
    url = private_postgres.create_database(f"restart_{os.getpid()}")
    spec = spec_variant(tmp_path, {**FAST, "max_trials = 6 ": "max_trials = 2 "})
    assert (
        ganhpo("study", "create", str(spec), "--storage", url, cwd=tmp_path, env=env).returncode
        == 0
    )
    workers = [start_worker(url, tmp_path, env, f"w{i}") for i in range(2)]
    wait_for(lambda: checkpoint_of(url, 0) or checkpoint_of(url, 1), 300, "a checkpoint")
    private_postgres.stop()
    try:
        # Down until a worker needs it (a report, a checkpoint) and retries; a fixed few seconds
        # could fall between two of its database calls.
        wait_for(
            lambda: any(
                "database unavailable; retrying" in (tmp_path / f"w{i}.log").read_text()
                for i in range(2)
            ),
            120,
            "a worker to find the database down",
        )
        time.sleep(2)
    finally:
        private_postgres.start()
    for i, w in enumerate(workers):
        assert finish(w) == 0, (tmp_path / f"w{i}.log").read_text()
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert "database unavailable; retrying" in logs
    check_all_finished(url, 2)


def test_diverging_trial_is_pruned_and_the_worker_goes_on(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # The first (baseline) trial: huge learning rates and no second-moment damping.
    diverging = 'lr_g = 0.5\nlr_d = 0.5\nbeta1 = 0.5\nbeta2 = 0.0\nloss = "wasserstein"'
    replacements = {
        **FAST,
        "max_trials = 6 ": "max_trials = 2 ",
        "lr_g = { low = 5e-5, high = 5e-3": "lr_g = { low = 5e-5, high = 0.5",
        "lr_d = { low = 5e-5, high = 5e-3": "lr_d = { low = 5e-5, high = 0.5",
        'lr_g = 5e-4\nlr_d = 5e-4\nbeta1 = 0.5\nloss = "ns"': diverging,
        '"ns", "hinge"': '"ns", "wasserstein"',
    }
    spec = spec_variant(tmp_path, replacements)
    assert ganhpo("study", "create", str(spec), cwd=tmp_path, env=env).returncode == 0
    result = ganhpo("worker", "--study", "quick", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    trials = load(f"sqlite:///{tmp_path / 'ganhpo.db'}").get_trials(deepcopy=False)
    assert len(trials) == 2
    first = trials[0]
    assert first.state == TrialState.PRUNED
    assert first.user_attrs["status"].startswith("diverged at step ")
    assert "loss is nan" in first.user_attrs["status"] or "inf" in first.user_attrs["status"]
    assert trials[1].state == TrialState.COMPLETE


def test_password_never_appears_anywhere(
    private_postgres, tmp_path: Path, env: dict[str, str]
) -> None:
    password = private_postgres.password
    url = private_postgres.create_database(f"secret_{os.getpid()}")
    assert password in url or "%" in url
    storage_file = tmp_path / "storage-url"
    storage_file.write_text(url + "\n")
    spec = spec_variant(tmp_path, {**FAST, "max_trials = 6 ": "max_trials = 1 "})
    outputs = []
    for args in (
        ["study", "create", str(spec), "--storage-file", str(storage_file)],
        ["worker", "--study", "quick", "--storage-file", str(storage_file), "-v"],
        ["study", "show", "quick", "--storage-file", str(storage_file), "--json"],
        ["study", "trials", "quick", "--storage-file", str(storage_file), "--json"],
        ["study", "list", "--storage-file", str(storage_file)],
        # Errors too: a wrong database name in the same URL, from the environment.
        ["study", "show", "quick", "--connect-timeout", "1"],
    ):
        run_env = dict(env)
        if args[-1] == "1":
            run_env["GANHPO_STORAGE"] = url.rsplit("/", 1)[0] + "/no_such_db"
        result = ganhpo(*args, cwd=tmp_path, env=run_env)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == (1 if args[-1] == "1" else 0), result.stderr
    assert "does not exist" in outputs[-1]
    for text in outputs:
        assert password not in text
    # The database: every text value of every table.
    engine = sqlalchemy.create_engine(open_storage(url).engine.url)
    with engine.connect() as conn:
        tables = conn.execute(
            sqlalchemy.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ).scalars()
        dump = json.dumps(
            [
                list(map(str, row))
                for t in list(tables)
                for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{t}"'))
            ]
        )
    engine.dispose()
    assert "quick" in dump and password not in dump
    # The artifact store (checkpoints, generators).
    for f in (tmp_path / "ganhpo-artifacts").iterdir():
        assert password.encode() not in f.read_bytes()


def test_sigterm_while_the_database_is_down_exits_within_seconds(
    private_postgres, tmp_path: Path, env: dict[str, str]
) -> None:
    from ganhpo.worker import STOP_GRACE_S

    url = private_postgres.create_database(f"sigterm_down_{os.getpid()}")
    one = {"max_trials = 6 ": "max_trials = 1 "}
    a, ckpt = first_worker_at_checkpoint(url, tmp_path, env, replacements=one)
    private_postgres.stop()
    try:
        sent = time.monotonic()
        a.send_signal(signal.SIGTERM)
        code = finish(a, timeout=120)
        took = time.monotonic() - sent
    finally:
        private_postgres.start()
    log = (tmp_path / "a.log").read_text()
    assert code == 0, log
    assert took < STOP_GRACE_S + 5, took
    assert "trial 0 not handed back" in log and "takes it over after the grace period" in log
    assert "Traceback" not in log

    # As after a kill: another worker takes trial 0 over and resumes its recorded checkpoint.
    b_log = run_worker_to_the_end(url, tmp_path, env, "b")
    trials = check_all_finished(url, 1)
    retry = next(t for t in trials if t.user_attrs.get("resumed_from_trial") == 0)
    assert retry.user_attrs["resumed_at_step"] >= ckpt["step"] >= 40
    assert "trial 0: worker lost on" in b_log
    check_no_orphans(url, tmp_path / "ganhpo-artifacts")
    print(f"SIGTERM with the database down: exited after {took:.1f} s")
