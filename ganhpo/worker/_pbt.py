"""Population-based training's decisions, on a study's trials (pure functions, no I/O).

The population is the study's chains (:func:`ganhpo.chains.member_of`): each member trains one
evaluation interval per trial and goes on as a new trial. At the end of an interval a member
compares its FID with the other members' FIDs *at the same step*; in the bottom ``quantile``
it continues from the full training state of a member in the top ``quantile`` (exploit), with
that member's parameters perturbed (explore); otherwise it continues from its own state. This
is Ray Tune's ``PopulationBasedTraining`` (truncation selection, perturbation factors 0.8/1.2,
resampling with probability 0.25), run on the study database and artifact store.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ganhpo.chains import checkpoint_of, member_of
from ganhpo.spec import FloatRange, ParamSpace, StrategySpec

__all__ = ["choose_donor", "explore", "latest_links", "rng_for"]


def rng_for(seed: int, trial_number: int, step: int) -> random.Random:
    """The random choices of one member's decision: the same wherever and however often it is
    made (a worker that dies mid-decision and its successor choose alike)."""
    return random.Random(f"ganhpo-pbt:{seed}:{trial_number}:{step}")


def latest_links(trials: Sequence[FrozenTrial]) -> dict[int, FrozenTrial]:
    """Each member's latest trial (the one that holds or will hold its training state)."""
    latest: dict[int, FrozenTrial] = {}
    for t in trials:
        member = member_of(t)
        if member not in latest or t.number > latest[member].number:
            latest[member] = t
    return latest


def choose_donor(
    trials: Sequence[FrozenTrial],
    me: FrozenTrial,
    step: int,
    strategy: StrategySpec,
    rng: random.Random,
) -> FrozenTrial | None:
    """The latest trial of the member ``me`` should exploit at ``step``, or None to go on.

    Members are ranked by their FID at ``step``, or, for members that have not reached it yet,
    by their latest FID before it (asynchronous PBT, as Ray Tune's default: members take turns
    on the workers, and waiting for the slowest would stall them); members without any FID yet
    are left out. Lower is better. With n ranked, the top and bottom quantiles hold
    ceil(n * quantile) members each; ``me`` exploits when it is in the bottom one, from a member
    of the top one chosen at random among those whose training state is recorded at ``step``
    or later. A state behind ``step`` is never taken: going back would retrain steps the budget
    already paid for, and a member set back again and again might never reach its length.
    """
    latest = latest_links(trials)
    mine = member_of(me)
    latest[mine] = me
    scores: dict[int, float] = {}
    for member, t in latest.items():
        reached = [s for s in t.intermediate_values if s <= step]
        value = t.intermediate_values[max(reached)] if reached else None
        if value is not None and math.isfinite(value):
            scores[member] = value
    if mine not in scores or len(scores) < 2:
        return None
    ranked = sorted(scores, key=lambda m: (scores[m], m))  # best first
    k = math.ceil(len(ranked) * strategy.quantile)
    if mine not in ranked[-k:] or mine in ranked[:k]:
        return None
    donors = [
        latest[m]
        for m in ranked[:k]
        if _state_step(latest[m]) >= step
        and latest[m].state in (TrialState.RUNNING, TrialState.WAITING)
    ]
    return donors[rng.randrange(len(donors))] if donors else None


def _state_step(trial: FrozenTrial) -> int:
    """The step of ``trial``'s recorded training state; -1 when none is recorded."""
    checkpoint = checkpoint_of(trial)
    return int(checkpoint["step"]) if checkpoint else -1


def explore(
    params: dict[str, Any],
    space: dict[str, ParamSpace],
    strategy: StrategySpec,
    rng: random.Random,
) -> dict[str, Any]:
    """``params`` with each of the strategy's hyperparameters perturbed: drawn again from its
    range with probability ``resample_probability`` (log-uniformly for a log range), else
    multiplied by one of ``perturbation_factors``; kept inside the range."""
    out = dict(params)
    for name in strategy.hyperparams:
        dist = space[name]
        assert isinstance(dist, FloatRange), name
        if name not in out:
            continue  # a conditional parameter the donor does not use
        if rng.random() < strategy.resample_probability:
            if dist.log:
                value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
            else:
                value = rng.uniform(dist.low, dist.high)
        else:
            value = float(out[name]) * rng.choice(strategy.perturbation_factors)
        out[name] = min(max(value, dist.low), dist.high)
    return out
