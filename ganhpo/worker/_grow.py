"""Strategy ``grow``: search with part of a compute budget, then train the best trials longer.

A study with a compute budget that searches trials of ``train.steps`` alone buys at best a
generator of that length, however large the budget: one run of the preset for the whole budget
can then beat the search (BENCHMARKS.md 1c). ``grow`` spends ``strategy.search_fraction`` of the
budget on the search (the sampler, the pruner and the guard, as strategy ``optuna``), keeping
the final training state of every completed trial; once the search's share is spent and its
last trials have ended, the ``top`` best completed trials each go on from that state for an
equal share of what is left (:func:`plan_growth`), and the study's best generator is the best
of all, grown or not.

A grown trial is a link of its parent's chain (``retry_history``), like a hand-over's retry or a
PBT interval: it has the parent's parameters, seed, curve and checkpoint, and its own length in
the user attribute ``length`` (which ``study best --as-config`` gives ``ganhpo train`` as
``train.steps``). It is enqueued in one transaction, under the budget lock, with
:data:`~ganhpo.chains.GROW_ATTR`: a study grows once. The parent keeps its checkpoint until the
study is done (:func:`ganhpo.worker._handover.sweep_checkpoints`), and a grown trial that is
lost is handed over and resumed like any other.
"""

from __future__ import annotations

import logging
import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from ganhpo.chains import (
    CHECKPOINT_PENDING_ATTR,
    GROW_ATTR,
    LINK_ATTRS,
    Ledger,
    checkpoint_of,
    handovers,
)
from ganhpo.chains import retry_history as _history
from ganhpo.spec import StudySpec
from ganhpo.worker._handover import add_waiting, link_system_attrs
from ganhpo.worker._strategy import Decision, OptunaStrategy, Worker

__all__ = ["GrowStrategy", "grown_length", "plan_growth"]

logger = logging.getLogger(__name__)

# Of what is left of a device-time budget, the share a grown trial's length is priced to use:
# its reservations stop it at the budget, before its final evaluation, if its rates estimate
# were too low.
DEVICE_TIME_MARGIN = 0.9


class GrowStrategy(OptunaStrategy):
    """The search of strategy ``optuna`` until its share of the budget is spent, then growth."""

    def after_evaluation(self, w: Worker, trial: optuna.Trial) -> Decision:
        if "grown_from" in trial.user_attrs:
            return "go on"  # beyond the pruner's max_resource: only the guard stops it
        return super().after_evaluation(w, trial)

    def may_end_early(self, trial: optuna.Trial) -> bool:
        return "grown_from" in trial.user_attrs

    def keeps_final_state(self, trial: optuna.Trial) -> bool:
        return "grown_from" not in trial.user_attrs

    def search_refused(self, spec: StudySpec, ledger: Ledger) -> str:
        if ledger.grown:
            return "the search is over and its best trials have grown"
        fraction = spec.strategy.search_fraction
        if spec.max_steps is not None and ledger.steps >= fraction * spec.max_steps:
            return (
                f"the search's share of the compute budget ({fraction:.0%} of "
                f"{spec.max_steps} steps) is spent; the best trials grow"
            )
        hours = spec.max_device_hours
        if hours is not None and ledger.seconds >= fraction * hours * 3600:
            return (
                f"the search's share of the device-time budget ({fraction:.0%} of "
                f"{spec.max_device_hours:g} h) is spent; the best trials grow"
            )
        return ""

    def growth_due(self, spec: StudySpec, ledger: Ledger, refused: str) -> bool:
        return bool(refused) and not (
            ledger.grown or ledger.running or ledger.waiting or ledger.marked
        )

    def grow(self, study: optuna.Study, spec: StudySpec, ledger: Ledger) -> list[int]:
        """Enqueue the grown trials (the caller holds the budget lock); their numbers."""
        return plan_growth(study, spec, ledger)


def grown_length(spec: StudySpec, parent: FrozenTrial, ledger: Ledger, share: int) -> int:
    """The length a grown trial of ``parent`` trains to: its own, plus the steps that its
    ``1 / share`` of the compute left buys (at the parent's measured rates for a device-time
    budget, evaluations included). Its own length when nothing is left."""
    start = int(parent.user_attrs.get("steps", spec.base.train.steps))
    ev = spec.base.eval
    extra = 0
    if spec.max_steps is not None:
        extra = (spec.max_steps - ledger.steps) // share
    if spec.max_device_hours is not None:
        left = (spec.max_device_hours * 3600 - ledger.seconds) / share * DEVICE_TIME_MARGIN
        per_step = float(parent.user_attrs.get("seconds_per_step") or ledger.slowest.per_step)
        per_image = float(parent.user_attrs.get("seconds_per_image") or ledger.slowest.per_image)
        per_interval_step = per_step + (ev.samples * per_image / ev.every if ev.every else 0.0)
        if per_interval_step > 0:
            seconds_steps = math.floor((left - ev.final_samples * per_image) / per_interval_step)
            extra = seconds_steps if spec.max_steps is None else min(extra, seconds_steps)
        else:
            extra = 0
    return start + max(0, extra)


def _growable(trial: FrozenTrial) -> bool:
    """A completed search trial whose final training state was kept."""
    checkpoint = checkpoint_of(trial)
    return (
        trial.state == TrialState.COMPLETE
        and GROW_ATTR not in trial.system_attrs
        and isinstance(checkpoint, dict)
        and checkpoint.get("step") == trial.user_attrs.get("steps")
    )


def plan_growth(study: optuna.Study, spec: StudySpec, ledger: Ledger) -> list[int]:
    """Enqueue a grown trial for each of the ``strategy.top`` best completed trials that kept
    their final state, under the budget lock; the new trials' numbers (none when no trial can
    grow, or no compute is left for one more evaluation interval each)."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    completed = [t for t in finished if _growable(t)]
    if not completed:
        if finished:
            logger.warning(
                "no completed trial kept its final state (workers need an artifact store, "
                "--artifacts): none grows"
            )
        else:
            logger.info("no trial completed: none grows")
        return []
    chosen = sorted(completed, key=lambda t: (t.value, t.number))[: spec.strategy.top]
    numbers = []
    for parent in chosen:
        length = grown_length(spec, parent, ledger, len(chosen))
        start = int(parent.user_attrs["steps"])
        if length - start < max(1, spec.base.eval.every or 1):
            logger.info("trial %d: too little compute left to grow it", parent.number)
            continue
        numbers.append(_enqueue_grown(study, parent, length).number)
    return numbers


def _enqueue_grown(study: optuna.Study, parent: FrozenTrial, length: int) -> FrozenTrial:
    """The WAITING trial that continues ``parent`` from its final state to ``length`` steps."""
    history = [*_history(parent), parent.number]
    start = int(parent.user_attrs["steps"])
    # Growing is not a hand-over.
    system_attrs = link_system_attrs(parent, history, handovers(parent))
    system_attrs[GROW_ATTR] = {"from": parent.number, "steps": start, "length": length}
    system_attrs.pop(CHECKPOINT_PENDING_ATTR, None)
    user_attrs = {
        k: v
        for k, v in parent.user_attrs.items()
        if k not in (*LINK_ATTRS, "resumed_from_trial", "resumed_at_step", "checkpoint_pending")
    }
    user_attrs |= {"length": length, "grown_from": parent.number}
    intermediate = dict(parent.intermediate_values)
    assert parent.value is not None  # a completed trial
    intermediate[start] = parent.value  # its final evaluation: the curve goes on from there
    grown = add_waiting(
        study,
        optuna.create_trial(
            state=TrialState.WAITING,
            params=parent.params,
            distributions=parent.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
            intermediate_values=intermediate,
        ),
    )
    logger.info(
        "trial %d grows as trial %d: from step %d to %d", parent.number, grown.number, start,
        length,
    )  # fmt: skip
    return grown
