"""A budget in compute: training steps over all trials, shared exactly by every worker.

Three real workers on PostgreSQL, one of them SIGKILLed mid-trial and replaced: the steps the
trials reserved add up to the budget exactly, the lost worker's trial is resumed from its
checkpoint, trials cut by the budget stop at an evaluation, and nothing is left running.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import checkpoint_of, create_study, kill_and_replace, load, retry_of, start_worker
from optuna.trial import TrialState
from procs import finish, ganhpo, wait_for

from ganhpo.chains import steps_spent

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)

MAX_STEPS = 1040  # 13 evaluation intervals of 80 steps: about 4 trials of 240
# Trials of a fixed length (strategy optuna): the budget ends the search itself, cutting trials
# (strategy grow, the default of a compute budget, is tested in tests/worker/test_grow.py).
FIXED = {"[pruner]": '[strategy]\nname = "optuna"\nguard = false\n\n[pruner]'}


def test_three_workers_spend_the_compute_budget_exactly(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(
        postgres_url, tmp_path, env, {"max_trials = 6 ": f"max_steps = {MAX_STEPS} ", **FIXED}
    )
    workers = [start_worker(postgres_url, tmp_path, env, f"w{i}") for i in range(3)]
    wait_for(lambda: checkpoint_of(postgres_url, 0), 300, "trial 0's first checkpoint")
    kill_and_replace(postgres_url, tmp_path, env, workers)
    codes = [finish(w) for w in workers]
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert codes == [0, 0, 0], logs
    assert f"the study's compute budget of {MAX_STEPS} steps is spent" in logs

    trials = load(postgres_url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    # Reserved by all trials, the lost one included: never more than the budget, and what is
    # left is less than one evaluation interval (80 steps; a resumed trial's first one is
    # shorter), which no trial can use.
    spent = steps_spent(trials)
    assert MAX_STEPS - 80 < spent <= MAX_STEPS
    # Every step trained by a trial that ended was reserved, once.
    trained = {
        t.number: t.user_attrs.get("steps", 0) - t.user_attrs.get("resumed_at_step", 0)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    }
    reserved = {t.number: t.user_attrs.get("steps_reserved", 0) for t in trials}
    assert all(trained[n] == reserved[n] for n in trained), (trained, reserved)
    retry = retry_of(trials, 0)
    assert retry.user_attrs["resumed_at_step"] >= 40
    cut = [t for t in trials if "compute budget is spent" in t.user_attrs.get("status", "")]
    assert cut and all(t.state == TrialState.PRUNED for t in cut)
    for t in cut:  # stopped right after an evaluation, which is kept
        assert t.user_attrs["steps"] % 80 == 0
        assert t.user_attrs["steps"] == 0 or max(t.intermediate_values) == t.user_attrs["steps"]

    shown = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    percent = f"{100 * spent / MAX_STEPS:.0f}"
    expected = f"compute    {spent} of {MAX_STEPS} training steps spent ({percent} %)"
    assert f"{expected}, {MAX_STEPS - spent} left" in shown.stdout, shown.stdout
    assert f"/{MAX_STEPS} steps" in logs  # the progress lines show what is spent
    print(f"compute budget: {spent} of {MAX_STEPS} steps reserved over {len(trials)} trials")
