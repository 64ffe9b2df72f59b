"""Chaos: workers SIGKILLed at random and replaced, for two minutes; the budget stays exact.

Three real ``ganhpo worker`` processes on PostgreSQL share a budget of 8 trials; every 5-12 s
one of them, chosen at random, is SIGKILLed and a new one started in its place. At the end
exactly 8 trials count, none is RUNNING or WAITING, every trial killed after a checkpoint was
resumed from it, nothing is left behind in the artifact store, and ``study show`` says so.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faults import check_no_orphans, create_study, handed_over, load, retry_of, start_worker
from optuna.trial import TrialState
from procs import finish, ganhpo

from ganhpo.chains import checkpoint_of, counted_trials

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)

BUDGET = 8
CHAOS_SECONDS = 120

# Longer trials than FAST's (960 steps, evaluated every 320, checkpointed every 80), so that
# kills land mid-trial; max_retry high enough that no chain runs out of retries.
CHAOS = {
    "max_trials = 6 ": f"max_trials = {BUDGET} ",
    "steps = 240": "steps = 960\ncheckpoint_every = 80",
    "every = 80 ": "every = 320 ",
    'description = "': 'heartbeat_interval = 1\ngrace_period = 4\nmax_retry = 50\ndescription = "',
}


def test_random_kills_for_two_minutes(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(postgres_url, tmp_path, env, CHAOS)
    rng = random.Random(0)
    started = 0
    workers: list[subprocess.Popen[str]] = []

    def spawn() -> None:
        nonlocal started
        workers.append(start_worker(postgres_url, tmp_path, env, f"w{started}"))
        started += 1

    for _ in range(3):
        spawn()
    kills = 0
    killed: set[int] = set()
    end = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < end:
        # Every 5-12 s: often enough that at least 5 kills land before a fast machine spends the
        # budget (every 10-20 s gave 4 on CI's), rarely enough that trials move on between them
        # (each resumes from its predecessor's checkpoint, taken every 80 steps).
        time.sleep(rng.uniform(5, 12))
        alive = [w for w in workers if w.poll() is None]
        if not alive:
            break  # the budget was spent before the chaos ended
        victim = rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        code = finish(victim, timeout=30)
        assert code in (-signal.SIGKILL, 0), code  # 0: it had just finished the budget
        if code == -signal.SIGKILL:
            killed.add(id(victim))
            kills += 1
        spawn()
    # Every worker not killed, including those that already exited because the budget was
    # spent before the chaos ended (on a fast machine), exits 0.
    codes = [finish(w) for w in workers if id(w) not in killed]
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("w*.log")))
    assert codes and all(code == 0 for code in codes), logs

    trials = load(postgres_url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert counted_trials(trials) == BUDGET
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == BUDGET  # no pruner, no failure: every counted chain completed
    lost = handed_over(trials)
    assert len(trials) == BUDGET + len(lost)
    resumed_from_checkpoint = 0
    lost_numbers = {t.number for t in lost}
    for t in lost:
        retry = retry_of(trials, t.number)
        checkpoint = checkpoint_of(t)
        if "resumed_at_step" not in retry.user_attrs:
            # Its worker was killed too before it resumed anything: it passed the same
            # checkpoint on, untouched.
            assert retry.number in lost_numbers
            assert checkpoint_of(retry) == checkpoint
        elif checkpoint is not None:
            assert retry.user_attrs["resumed_at_step"] == checkpoint["step"] > 0
            resumed_from_checkpoint += 1
        # A chain keeps its configuration and seed.
        assert retry.params == t.params or not t.params
        if "seed" in t.user_attrs:
            assert retry.user_attrs.get("seed") == t.user_attrs["seed"]
    for t in complete:
        assert t.user_attrs["steps"] == 960 and sorted(t.intermediate_values) == [320, 640, 960]
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")

    shown = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert f"trials     {BUDGET} of {BUDGET}: complete {BUDGET}\n" in shown.stdout, shown.stdout
    assert (f"hand-overs {len(lost)} " in shown.stdout) == bool(lost)
    info = json.loads(
        ganhpo(
            "study", "show", "quick", "--storage", postgres_url, "--json", cwd=tmp_path, env=env
        ).stdout
    )
    assert info["budget"]["used"] == BUDGET and info["hand_overs"] == len(lost)
    print(
        f"chaos: {kills} kills, {len(lost)} hand-overs ({resumed_from_checkpoint} from a "
        f"checkpoint), {len(trials)} trials for a budget of {BUDGET}"
    )
    assert kills >= 5 and lost
