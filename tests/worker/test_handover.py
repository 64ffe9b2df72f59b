"""A trial is handed over whenever its worker dies or stops, at any instant of its life.

Real ``ganhpo worker`` processes on a real PostgreSQL. ``$GANHPO_FAILPOINT`` (see
``ganhpo/_failpoints.py``) puts a worker into one exact instant: between ``ask`` and its first
heartbeat, between two transactions of a hand-back, between writing a checkpoint and recording
it. Each test then checks that another worker finishes the study's budget exactly.
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
    check_all_finished,
    check_no_orphans,
    create_study,
    first_worker_at_checkpoint,
    handed_over,
    load,
    retry_of,
    run_worker_to_the_end,
    start_worker,
)
from optuna.trial import TrialState
from procs import finish, ganhpo, spec_variant, wait_for

from ganhpo.chains import checkpoint_of
from ganhpo.storage import open_storage

GRACE = 4  # study.grace_period of the FAST spec (tests/faults.py)


def heartbeat_rows(url: str) -> int:
    engine = open_storage(url).engine
    with engine.connect() as conn:
        return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats")).scalar())


def test_worker_killed_between_ask_and_its_first_heartbeat(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(postgres_url, tmp_path, env, {"max_trials = 6 ": "max_trials = 1 "})
    a = start_worker(postgres_url, tmp_path, env, "a", failpoint="worker:asked:kill")
    assert finish(a, timeout=120) == -signal.SIGKILL
    # The state the bug was about: a RUNNING trial that never beat (Optuna's scan skips it).
    assert [t.state for t in load(postgres_url).get_trials()] == [TrialState.RUNNING]
    assert heartbeat_rows(postgres_url) == 0

    started = time.monotonic()
    b = start_worker(postgres_url, tmp_path, env, "b")
    assert finish(b, timeout=300) == 0, (tmp_path / "b.log").read_text()
    took = time.monotonic() - started

    trials = check_all_finished(postgres_url, 1)
    lost = handed_over(trials)
    assert [t.number for t in lost] == [0]
    assert lost[0].user_attrs["status"] == (
        f"worker lost on an unknown host (no heartbeat for {GRACE} s)"
    )
    retry = retry_of(trials, 0)
    # Trial 0 died before it sampled anything; its retry is still the baseline it was enqueued as.
    assert lost[0].params == {} and retry.user_attrs["resumed_at_step"] == 0
    assert retry.params == {"lr_g": 5e-4, "lr_d": 5e-4, "beta1": 0.5, "loss": "ns"}
    print(f"killed after ask: the other worker finished the budget in {took:.0f} s")


def test_second_sigterm_during_the_hand_back_loses_nothing(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    # Worker a pauses between failing its trial and enqueuing the retry (two transactions).
    a, _ = first_worker_at_checkpoint(
        postgres_url,
        tmp_path,
        env,
        failpoint="handover:failed:sleep=120",
        replacements={"max_trials = 6 ": "max_trials = 1 "},
    )
    a.send_signal(signal.SIGTERM)
    log = tmp_path / "a.log"
    wait_for(lambda: "failpoint handover:failed" in log.read_text(), 60, "the hand-back window")
    a.send_signal(signal.SIGTERM)
    assert finish(a, timeout=30) == 130, log.read_text()

    trials = load(postgres_url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL]  # failed, and no retry enqueued yet
    status = trials[0].user_attrs["status"]
    assert status.startswith("interrupted by SIGTERM at step ") and status.endswith("handed back")
    stopped_at = int(status.split("at step ")[1].split(":")[0])

    b_log = run_worker_to_the_end(postgres_url, tmp_path, env, "b")
    trials = check_all_finished(postgres_url, 1)  # the budget: trial 0 counted once
    retry = retry_of(trials, 0)
    assert retry.user_attrs["resumed_at_step"] == stopped_at > 0
    assert f"trial 0 handed over as trial {retry.number}" in b_log
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")


@pytest.mark.slow
def test_frozen_worker_whose_trial_was_taken_over_drops_its_copy(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    # The FID curve trial 0 has when nothing happens to it (same spec, seed and parameters).
    reference = tmp_path / "reference"
    reference.mkdir()
    ref_url = f"sqlite:///{reference / 'ganhpo.db'}"
    create_study(ref_url, reference, env, {"max_trials = 6 ": "max_trials = 1 "})
    run_worker_to_the_end(ref_url, reference, env, "ref")
    expected = load(ref_url).get_trials()[0].intermediate_values
    assert sorted(expected) == [80, 160, 240]

    a, ckpt = first_worker_at_checkpoint(
        postgres_url, tmp_path, env, replacements={"max_trials = 6 ": "max_trials = 2 "}
    )
    os.kill(a.pid, signal.SIGSTOP)
    time.sleep(GRACE + 1)  # a is silent past the grace period
    b = start_worker(postgres_url, tmp_path, env, "b")

    def retry_running() -> bool:
        trials = load(postgres_url).get_trials(deepcopy=False)
        return any(
            t.system_attrs.get("retry_history") == [0] and "resumed_at_step" in t.user_attrs
            for t in trials
        )

    wait_for(retry_running, 120, "worker b to resume trial 0")
    os.kill(a.pid, signal.SIGCONT)
    a_code, b_code = finish(a), finish(b)
    a_log, b_log = (tmp_path / "a.log").read_text(), (tmp_path / "b.log").read_text()
    assert (a_code, b_code) == (0, 0), a_log + b_log
    assert "trial 0 was taken over by another worker; dropping my copy" in a_log
    assert "Traceback" not in a_log

    trials = check_all_finished(postgres_url, 2)
    lost = handed_over(trials)
    assert [t.number for t in lost] == [0]
    retry = retry_of(trials, 0)
    assert retry.user_attrs["resumed_at_step"] >= ckpt["step"] >= 40
    assert retry.intermediate_values == expected  # bit for bit: the same training, resumed
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")

    # What a person reads: the budget, the hand-over, the chain.
    shown = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert "trials     2 of 2: complete 2\n" in shown.stdout, shown.stdout
    assert "hand-overs 1 " in shown.stdout
    rows = ganhpo(
        "study", "trials", "quick", "--storage", postgres_url, "--json", cwd=tmp_path, env=env
    )
    by_number = {r["number"]: r for r in json.loads(rows.stdout)}
    host = lost[0].user_attrs["host"]
    assert by_number[0]["status"] == (
        f"worker lost on {host} (no heartbeat for {GRACE} s); resumed as trial {retry.number}"
    )
    assert by_number[0]["resumed_as"] == retry.number
    assert by_number[retry.number]["resumed_from"] == 0
    assert by_number[retry.number]["status"] == "completed"


@pytest.mark.parametrize(
    ("failpoint", "sigterm"),
    [
        # Taken (RUNNING, counted) under the lock, not yet opened for sampling: taken over as a
        # silent trial that never reported.
        ("worker:opening:kill", False),
        # Written, not yet recorded in the trial: the resumer removes the pending file.
        ("checkpoint:written:kill", False),
        # The second one recorded, the first not yet removed: the sweep removes it.
        ("checkpoint:recorded#2:kill", False),
        # SIGTERM, marked for the hand-over, still RUNNING: taken over as a silent trial. (Failed
        # but not yet re-enqueued is the second-SIGTERM test's window.)
        ("handover:marked:kill", True),
    ],
)
def test_killed_at_any_instant_of_a_trial(
    failpoint: str, sigterm: bool, postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    replacements = {"max_trials = 6 ": "max_trials = 1 "}
    if sigterm:
        a, _ = first_worker_at_checkpoint(
            postgres_url, tmp_path, env, failpoint=failpoint, replacements=replacements
        )
        a.send_signal(signal.SIGTERM)
    else:
        create_study(postgres_url, tmp_path, env, replacements)
        a = start_worker(postgres_url, tmp_path, env, "a", failpoint=failpoint)
    assert finish(a, timeout=300) == -signal.SIGKILL, (tmp_path / "a.log").read_text()
    point = failpoint.rsplit(":", 1)[0].partition("#")[0]
    assert f"failpoint {point}" in (tmp_path / "a.log").read_text()

    run_worker_to_the_end(postgres_url, tmp_path, env, "b")
    trials = check_all_finished(postgres_url, 1)
    retry = retry_of(trials, 0)
    lost_at = checkpoint_of(trials[0])
    if lost_at is not None:  # resumed from the last checkpoint that was recorded
        assert retry.user_attrs["resumed_at_step"] == lost_at["step"] > 0
    # Even the checkpoint written but not recorded (checkpoint:written) was removed: the worker
    # that resumed the trial knew it was pending.
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")


@pytest.mark.parametrize("instant", ["finish:recorded", "finish:told"])
def test_killed_while_its_trial_ends(
    instant: str, postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """Killed after the trial's results are recorded but before it is told finished: it is
    resumed from its last checkpoint, not from step 0. Killed after the tell, before its
    checkpoint is removed: the trial stays complete and the next worker removes the file."""
    create_study(postgres_url, tmp_path, env, {"max_trials = 6 ": "max_trials = 1 "})
    a = start_worker(postgres_url, tmp_path, env, "a", failpoint=f"{instant}:kill")
    assert finish(a, timeout=300) == -signal.SIGKILL, (tmp_path / "a.log").read_text()
    killed = load(postgres_url).get_trials(deepcopy=False)[0]
    assert killed.state == (
        TrialState.RUNNING if instant == "finish:recorded" else TrialState.COMPLETE
    )
    last = checkpoint_of(killed)
    assert last["step"] == 240  # the trial's last state, still recorded at the kill

    b_log = run_worker_to_the_end(postgres_url, tmp_path, env, "b")
    trials = check_all_finished(postgres_url, 1)
    if instant == "finish:recorded":
        assert retry_of(trials, 0).user_attrs["resumed_at_step"] == 240
    else:
        assert len(trials) == 1 and "removed 1 checkpoint(s) no trial needs" in b_log
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")


def test_a_tell_whose_answer_was_lost_is_not_told_twice(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """The first trial's tell goes through, then the connection drops before its answer
    arrives (a transient database error right after the commit). The worker retries: it finds
    the trial complete and goes on, where telling it again ("Cannot tell a COMPLETE trial")
    ended the worker with a traceback (seen with 500 simulated workers, bench/db_load.py)."""
    create_study(postgres_url, tmp_path, env, {"max_trials = 6 ": "max_trials = 2 "})
    a = start_worker(postgres_url, tmp_path, env, "a", failpoint="tell:done#1:dberror")
    code = finish(a, timeout=300)
    log = (tmp_path / "a.log").read_text()
    assert code == 0, log
    assert "failpoint tell:done: dberror" in log and "database unavailable; retrying" in log
    assert "Traceback" not in log and "Cannot tell" not in log
    check_all_finished(postgres_url, 2)


def test_the_quick_spec_checkpoints_without_asking(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    # studies/quick.toml as shipped (no checkpoint_every), with only a shorter grace period.
    spec = spec_variant(
        tmp_path,
        {
            "max_trials = 6 ": "max_trials = 1 ",
            'description = "': 'heartbeat_interval = 1\ngrace_period = 4\ndescription = "',
        },
    )
    created = ganhpo("study", "create", str(spec), "--storage", postgres_url, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    a = start_worker(postgres_url, tmp_path, env, "a")

    def first_checkpoint() -> dict | None:
        trials = load(postgres_url).get_trials(deepcopy=False)
        return checkpoint_of(trials[0]) if trials else None

    ckpt = wait_for(first_checkpoint, 300, "trial 0's first checkpoint")
    assert ckpt["step"] == 80  # type: ignore[index]  # at the first evaluation ([eval] every)
    os.kill(a.pid, signal.SIGKILL)
    assert finish(a) == -signal.SIGKILL
    run_worker_to_the_end(postgres_url, tmp_path, env, "b")
    trials = load(postgres_url).get_trials()
    assert retry_of(trials, 0).user_attrs["resumed_at_step"] == 80
    assert retry_of(trials, 0).state == TrialState.COMPLETE


def test_frozen_after_recording_its_end_then_taken_over_drops_its_copy(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """Frozen after recording its trial's results, before telling it finished: another worker
    takes the trial over and finishes it. Woken, the frozen worker's tell finds the trial
    failed (handed over): it drops its copy and goes on, where it crashed with Optuna's
    ``ValueError: Cannot tell a FAIL trial.`` (the first tell did not look)."""
    create_study(postgres_url, tmp_path, env, {"max_trials = 6 ": "max_trials = 1 "})
    a = start_worker(postgres_url, tmp_path, env, "a", failpoint="finish:recorded:stop")
    wait_for(
        lambda: "failpoint finish:recorded: stop" in (tmp_path / "a.log").read_text(),
        300,
        "worker a to freeze after recording trial 0's end",
    )
    time.sleep(GRACE + 1)  # a is silent past the grace period
    b_log = run_worker_to_the_end(postgres_url, tmp_path, env, "b")
    assert "trial 0: worker lost on" in b_log
    os.kill(a.pid, signal.SIGCONT)
    code = finish(a, timeout=300)
    a_log = (tmp_path / "a.log").read_text()
    assert code == 0, a_log
    assert "trial 0 was taken over by another worker; dropping my copy" in a_log
    assert "Traceback" not in a_log and "Cannot tell" not in a_log
    trials = check_all_finished(postgres_url, 1)
    assert retry_of(trials, 0).user_attrs["resumed_at_step"] == 240
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")
