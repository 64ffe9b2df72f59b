"""Population-based training with real workers on PostgreSQL, through kills.

A population of 4 members on 2 workers at a time: each member trains one evaluation interval
(80 steps) per trial and goes on as a new trial, from its own state or, in the bottom half,
from a better member's (exploit) with perturbed learning rates (explore). One worker is killed
between recording a member's next step and ending its interval, one between writing a
checkpoint and recording it (mid-interval); the population still ends, every member at its full
length, within the compute budget, with its lineage recorded and no file left behind.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
from faults import check_no_orphans, create_study, handed_over, load, start_worker
from optuna.trial import TrialState
from procs import finish, ganhpo

from ganhpo.chains import PBT_ATTR, counted_trials, member_of, retry_history, steps_spent

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)

MAX_STEPS = 1200  # 4 members of 240 steps, and room for the steps a killed worker loses
PBT = {
    "max_trials = 6 ": f"max_trials = 4\nmax_steps = {MAX_STEPS} ",
    "steps = 240": "steps = 240",  # checkpoints at every evaluation, as PBT needs
    "[pruner]": '[strategy]\nname = "pbt"\nquantile = 0.5\n\n[pruner]',
    # Member 1 learns hardly at all (learning rates at the bottom of the range): whenever it
    # ends an interval after another member reached that step, it is the worst and exploits.
    # (Otherwise whether any member exploits depends on the order the workers take them in.)
    'loss = "ns"\n': 'loss = "ns"\n\n[[baselines]]\nlr_g = 5e-5\nlr_d = 5e-5\nbeta1 = 0.5\n'
    'loss = "ns"\n',
}


def test_population_exploits_explores_and_survives_kills(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(postgres_url, tmp_path, env, PBT)
    waiting = load(postgres_url).get_trials(deepcopy=False)
    assert [t.state for t in waiting] == [TrialState.WAITING] * 4  # the whole population
    a = start_worker(postgres_url, tmp_path, env, "a", failpoint="pbt:marked:kill")
    b = start_worker(postgres_url, tmp_path, env, "b", failpoint="checkpoint:written:kill")
    assert finish(a) == -signal.SIGKILL and finish(b) == -signal.SIGKILL
    c = start_worker(postgres_url, tmp_path, env, "c")
    d = start_worker(postgres_url, tmp_path, env, "d")
    codes = [finish(c), finish(d)]
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in "abcd"}
    assert codes == [0, 0], logs

    trials = load(postgres_url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    # The budget: 4 members, each one chain of trials; the compute they reserved.
    assert counted_trials(trials) == 4
    assert steps_spent(trials) <= MAX_STEPS
    ends = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(member_of(t) for t in ends) == sorted({member_of(t) for t in trials}), [
        (t.number, member_of(t), t.state.name, t.user_attrs.get("status")) for t in trials
    ]
    assert all(t.user_attrs["steps"] == 240 and 240 in t.intermediate_values for t in ends)

    # Both kills were handed over and resumed from the last recorded checkpoint.
    lost = handed_over(trials)
    assert len(lost) == 2, [(t.number, t.user_attrs.get("status")) for t in trials]
    marked = [t for t in lost if PBT_ATTR in t.system_attrs]  # killed after its decision
    assert len(marked) == 1
    for t in lost:
        retry = next(r for r in trials if retry_history(r)[-1:] == [t.number])
        # Killed after its decision: from the checkpoint of its interval's end. Killed between
        # writing a checkpoint and recording it: from the one before (the file is removed).
        expected = 80 if t in marked else t.user_attrs.get("resumed_at_step", 0)
        assert retry.user_attrs["resumed_at_step"] == expected, t.number

    # Every interval after the first is a member's next trial, with its lineage; the other
    # trials that continue one are the two retries.
    intervals = [t for t in trials if "pbt" in t.user_attrs]
    assert len([t for t in trials if retry_history(t)]) == len(intervals) + 2
    assert all(t.user_attrs["pbt"]["member"] == member_of(t) for t in intervals)
    exploits = [t for t in intervals if (t.user_attrs.get("pbt") or {}).get("parent")]
    assert exploits, [t.user_attrs.get("status") for t in trials]
    by_number = {t.number: t for t in trials}
    for t in exploits:
        parent = t.user_attrs["pbt"]["parent"]
        donor = by_number[parent["trial"]]
        step = parent["step"]
        # It went on from the donor's state at that step: the donor's curve up to it, and
        # the step it resumed at.
        assert t.user_attrs["resumed_at_step"] == step
        assert {s: v for s, v in t.intermediate_values.items() if s <= step} == {
            s: v for s, v in donor.intermediate_values.items() if s <= step
        }
        # Explored: the donor's parameters with the learning rates perturbed, in range.
        assert {k: v for k, v in t.params.items() if not k.startswith("lr_")} == {
            k: v for k, v in donor.params.items() if not k.startswith("lr_")
        }
        for name in ("lr_g", "lr_d"):
            ratio = t.params[name] / donor.params[name]
            resampled = not (math.isclose(ratio, 0.8) or math.isclose(ratio, 1.2))
            assert 5e-5 <= t.params[name] <= 5e-3 and (resampled or ratio != 1)
        predecessor = by_number[retry_history(t)[-1]]
        assert (
            f"goes on from trial {donor.number}'s state at step {step}"
            in (predecessor.user_attrs["status"])
        )
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")

    shown = ganhpo("study", "trials", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert shown.returncode == 0 and "interval done at step 80" in shown.stdout
    shown = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert "strategy   pbt (population 4, every 80 steps; bottom 0.5 exploits top 0.5" in (
        shown.stdout
    )
    assert "trials     4 of 4: complete 4" in shown.stdout
    assert "hand-overs 2 " in shown.stdout and "\nintervals  " in shown.stdout
    print(
        f"PBT: {len(trials)} trials for 4 members, {len(exploits)} exploits, "
        f"{steps_spent(trials)} of {MAX_STEPS} steps"
    )
