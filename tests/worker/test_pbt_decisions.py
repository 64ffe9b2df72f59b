"""Population-based training's decisions on real Optuna trials (no workers)."""

from __future__ import annotations

import math
from collections import Counter

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from ganhpo.chains import CHECKPOINT_ATTR
from ganhpo.spec import FloatRange, StrategySpec
from ganhpo.worker._pbt import choose_donor, explore, latest_links, rng_for

PBT = StrategySpec(name="pbt", quantile=0.25, hyperparams=("lr_g", "lr_d"))
SPACE = {
    "lr_g": FloatRange(5e-5, 5e-3, log=True),
    "lr_d": FloatRange(5e-5, 5e-3, log=True),
}
DISTRIBUTIONS = {
    "lr_g": FloatDistribution(5e-5, 5e-3, log=True),
    "lr_d": FloatDistribution(5e-5, 5e-3, log=True),
}


def member(
    number: int,
    curve: dict[int, float],
    *,
    state: TrialState = TrialState.RUNNING,
    history: list[int] | None = None,
    checkpoint: bool = True,
) -> FrozenTrial:
    trial = optuna.create_trial(
        state=state if state != TrialState.RUNNING else TrialState.WAITING,
        value=min(curve.values()) if state == TrialState.COMPLETE else None,
        params={"lr_g": 1e-3, "lr_d": 2e-3},
        distributions=DISTRIBUTIONS,
        intermediate_values=curve,
        system_attrs=({"retry_history": history} if history else {})
        | ({CHECKPOINT_ATTR: {"id": f"c{number}", "step": max(curve)}} if checkpoint else {}),
    )
    trial.number = number
    trial.state = state
    return trial


def test_members_are_chains_and_their_latest_trial_holds_the_state() -> None:
    trials = [
        member(0, {80: 900.0}, state=TrialState.PRUNED),
        member(1, {80: 500.0}),
        member(2, {80: 900.0, 160: 700.0}, state=TrialState.WAITING, history=[0]),
    ]
    assert {m: t.number for m, t in latest_links(trials).items()} == {0: 2, 1: 1}


def test_the_worst_member_exploits_one_of_the_best() -> None:
    trials = [member(i, {80: v}) for i, v in enumerate([300.0, 500.0, 700.0, 900.0])]
    worst, best = trials[3], trials[0]
    assert choose_donor(trials, worst, 80, PBT, rng_for(0, 3, 80)) is best
    for me in trials[:3]:  # ceil(4 * 0.25) = 1 member in each quantile
        assert choose_donor(trials, me, 80, PBT, rng_for(0, me.number, 80)) is None
    half = StrategySpec(name="pbt", quantile=0.5, hyperparams=("lr_g",))
    donors = {
        choose_donor(trials, trials[2], 80, half, rng_for(0, 2, s)).number  # type: ignore[union-attr]
        for s in range(40)
    }
    assert donors == {0, 1}  # either of the top half, at random


def test_members_behind_are_compared_by_their_latest_fid() -> None:
    """Asynchronous PBT: a member still in its first interval is ranked by what it reported;
    one that reported nothing yet is left out."""
    me = member(3, {80: 900.0, 160: 800.0})
    others = [member(0, {80: 300.0}), member(1, {80: 400.0}), member(2, {}, checkpoint=False)]
    assert choose_donor([*others, me], me, 80, PBT, rng_for(0, 3, 80)) is others[0]
    assert choose_donor([me], me, 160, PBT, rng_for(0, 3, 160)) is None  # nobody to compare


def test_a_state_behind_is_never_taken() -> None:
    """At step 160 the best member is still at 80: it ranks first, but going back to its state
    would retrain 80 paid steps (and a member set back again and again might never end), so the
    worst member goes on from its own state; a state at the same step or ahead is taken."""
    me = member(3, {80: 900.0, 160: 800.0})
    behind = [member(0, {80: 300.0}), member(1, {80: 400.0}), member(2, {80: 500.0})]
    assert choose_donor([*behind, me], me, 160, PBT, rng_for(0, 3, 160)) is None
    ahead = member(0, {80: 300.0, 160: 350.0, 240: 320.0})
    assert choose_donor([ahead, *behind[1:], me], me, 160, PBT, rng_for(0, 3, 160)) is ahead


def test_a_donor_needs_a_recorded_state() -> None:
    best = member(0, {80: 300.0}, checkpoint=False)  # e.g. finished: only its generator left
    done = member(1, {80: 400.0}, state=TrialState.COMPLETE)
    me = member(2, {80: 900.0})
    half = StrategySpec(name="pbt", quantile=0.5, hyperparams=("lr_g",))
    assert choose_donor([best, done, me], me, 80, half, rng_for(0, 2, 80)) is None


def test_explore_perturbs_by_the_factors_or_resamples_within_the_range() -> None:
    params = {"lr_g": 1e-3, "lr_d": 4.5e-3, "loss": "hinge"}
    seen: Counter[str] = Counter()
    for seed in range(400):
        out = explore(params, SPACE, PBT, rng_for(seed, 0, 80))
        assert out["loss"] == "hinge"  # what PBT does not perturb stays the donor's
        for name in ("lr_g", "lr_d"):
            ratio = out[name] / params[name]
            assert SPACE[name].low <= out[name] <= SPACE[name].high
            if math.isclose(ratio, 0.8) or math.isclose(ratio, 1.2):
                seen["factor"] += 1
            elif math.isclose(out[name], SPACE[name].high):
                seen["clipped"] += 1  # 4.5e-3 * 1.2 is above the range
            else:
                seen["resampled"] += 1
    assert seen["resampled"] / 800 == pytest.approx(0.25, abs=0.05)
    assert seen["clipped"] > 0 and seen["factor"] > 400
    assert explore(params, SPACE, PBT, rng_for(1, 0, 80)) == explore(
        params, SPACE, PBT, rng_for(1, 0, 80)
    )  # the same decision wherever it is made
