"""How a worker spends a study's budget: the strategies a spec's ``[strategy]`` names.

A strategy is what the worker asks after each intermediate evaluation of a trial (stop it as
hopeless, go on, prune it, or end its interval), which training hyperparameters a resumed state
may change, what ending an interval means, whether a completed trial keeps its final state, and
whether the study's budget admits new trials or a phase of growth. :class:`OptunaStrategy` lets
the study's pruner decide (its sampler has proposed the parameters) and stops collapsed and
hopeless trials (:mod:`ganhpo.worker._guard`); :class:`~ganhpo.worker._grow.GrowStrategy` adds
growth; :class:`PBTStrategy` runs population-based training, whose decisions are in
:mod:`ganhpo.worker._pbt`. The trainer knows nothing of any.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ganhpo._failpoints import failpoint
from ganhpo._optuna import storage_of, trial_id_of
from ganhpo.artifacts import read_artifact, remove_artifact, write_artifact
from ganhpo.chains import GROW_ATTR, PBT_ATTR, Ledger, checkpoint_of, member_of
from ganhpo.spec import StrategySpec, StudySpec
from ganhpo.storage import budget_lock
from ganhpo.train import EvalRecord, TrainConfig
from ganhpo.worker._guard import GuardRule, Point, verdict
from ganhpo.worker._handover import TakenOver, repair
from ganhpo.worker._pbt import choose_donor, explore, rng_for

__all__ = ["OptunaStrategy", "PBTStrategy", "Strategy"]

logger = logging.getLogger(__name__)

Decision = Literal["go on", "prune", "end interval"]
T = TypeVar("T")


class Worker(Protocol):
    """What a strategy uses of the worker that runs the trial (``ganhpo.worker.Worker``)."""

    study: optuna.Study
    spec: StudySpec
    storage: optuna.storages.RDBStorage
    artifacts: Any  # the study's artifact store, or None

    def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the database, retrying through outages."""
        ...

    def new_checkpoint_id(self) -> str:
        """A fresh id for a checkpoint file of the study."""
        ...

    def mark_checkpoint_pending(self, trial: optuna.Trial, artifact_id: str | None) -> None:
        """Record the id of a checkpoint of ``trial`` before its file is written."""
        ...

    def tell(
        self, trial: optuna.Trial, state: TrialState, values: list[float] | None = None
    ) -> None:
        """Tell the study the trial ended, through outages, once."""
        ...

    def _record(self, trial: optuna.Trial, reason: str, started: float, result: Any) -> Any:
        """Write the trial's status and results as user attributes."""
        ...


class Strategy:
    """The interface the worker asks; the default goes on to the end of every trial."""

    adopt: tuple[str, ...] = ()  # hyperparameters a resumed training state may change

    def stop_reason(
        self, w: Worker, trial: optuna.Trial, history: Sequence[EvalRecord], config: TrainConfig
    ) -> str:
        """Why the trial stops now, whatever the pruner says ("" to go on); ``history``: its
        evaluations so far (the last just reported), ``config``: what it trains."""
        return ""

    def after_evaluation(self, w: Worker, trial: optuna.Trial) -> Decision:
        """What the trial does after an intermediate evaluation it has just reported."""
        return "go on"

    def end_interval(
        self, w: Worker, trial: optuna.Trial, result: Any, started: float
    ) -> TrialState:
        """End the trial's interval (after ``after_evaluation`` said so); its final state."""
        raise NotImplementedError(f"{type(self).__name__} has no intervals")

    def keeps_final_state(self, trial: optuna.Trial) -> bool:
        """Whether the completed ``trial`` checkpoints its final state and keeps it."""
        return False

    def may_end_early(self, trial: optuna.Trial) -> bool:
        """Whether ``trial`` ends with a final evaluation where the compute budget runs out,
        short of its length (else it stops there without one)."""
        return False

    def search_refused(self, spec: StudySpec, ledger: Ledger) -> str:
        """Why no new trial may start, beyond the study's budgets ("" when one may)."""
        return ""

    def growth_due(self, spec: StudySpec, ledger: Ledger, refused: str) -> bool:
        """Whether :meth:`grow` has trials to enqueue now (``refused``: why no new trial may
        start, "" when one may)."""
        return False

    def grow(self, study: optuna.Study, spec: StudySpec, ledger: Ledger) -> list[int]:
        """Enqueue the trials that go on beyond their length, under the budget lock."""
        return []


class OptunaStrategy(Strategy):
    """The sampler proposes each trial's parameters; the pruner stops the poor ones early, and
    the guard the collapsed and hopeless ones in every bracket."""

    def __init__(self, spec: StrategySpec | None = None, rule: GuardRule | None = None) -> None:
        self.guard = spec.guard if spec is not None else True
        self.rule = rule or GuardRule()

    def stop_reason(
        self, w: Worker, trial: optuna.Trial, history: Sequence[EvalRecord], config: TrainConfig
    ) -> str:
        length = config.train.steps
        if not self.guard or w.spec.cost is not None:
            return ""
        kid = w.spec.objective == "kid"
        points = [
            Point(r.step, r.kid if kid else r.fid, r.kid_std if kid else r.fid_std, r.d_loss)
            for r in history
            if not r.final
        ]
        rule = self.rule
        finished: list[tuple[float, dict[int, float]]] = []
        if (
            points
            and rule.hopeless_ratio is not None
            and points[-1].step >= rule.hopeless_from * length
        ):
            completed = w._db(w.study.get_trials, deepcopy=False, states=(TrialState.COMPLETE,))
            finished = [
                (float(t.value), dict(t.intermediate_values))
                for t in completed
                if t.value is not None and GROW_ATTR not in t.system_attrs
            ]
        return verdict(rule, points, finished, length=length, loss=config.train.loss)

    def after_evaluation(self, w: Worker, trial: optuna.Trial) -> Decision:
        if w.spec.cost is not None:
            return "go on"  # two objectives: no Optuna pruner ranks them (the spec has none)
        return "prune" if w._db(trial.should_prune) else "go on"


class PBTStrategy(Strategy):
    """Population-based training: one interval per trial, then exploit and explore."""

    def __init__(self, spec: StrategySpec) -> None:
        self.spec = spec
        self.adopt = spec.hyperparams

    def after_evaluation(self, w: Worker, trial: optuna.Trial) -> Decision:
        return "end interval"  # members are never pruned: the worst ones exploit the best

    def end_interval(
        self, w: Worker, trial: optuna.Trial, result: Any, started: float
    ) -> TrialState:
        """A PBT member's interval is done (evaluated and checkpointed): decide how it goes on,
        record that in the trial (``PBT_ATTR``), prune it, and enqueue its successor.

        Exploiting copies the better member's checkpoint to a new artifact first (recorded as
        ``checkpoint_pending`` before it is written, so that whoever resumes this trial after a
        crash removes a copy nobody uses). Each step leaves a state the next worker repairs,
        as a hand-over does.
        """
        step = result.steps
        rng = rng_for(w.spec.seed, trial.number, step)
        trials = w._db(w.study.get_trials, deepcopy=False)
        me = next(t for t in trials if t.number == trial.number)
        donor = choose_donor(trials, me, step, self.spec, rng)
        plan = self._exploit(w, trial, donor, rng) if donor is not None else None
        if plan is None:
            plan = {"params": dict(trial.params), "checkpoint": checkpoint_of(me)}
            reason = f"interval done at step {step}; goes on from its own state"
        else:
            parent = plan["parent"]
            reason = (
                f"interval done at step {step}; goes on from trial {parent['trial']}'s state "
                f"at step {parent['step']} (member {parent['member']}), explored: "
                + ", ".join(f"{k} {plan['params'][k]:.3g}" for k in self.spec.hyperparams
                            if k in plan["params"])
            )  # fmt: skip
        w._record(trial, reason, started, result)
        storage = storage_of(w.study)
        try:
            w._db(storage.set_trial_system_attr, trial_id_of(trial), PBT_ATTR, plan)
            failpoint("pbt:marked")
            w.tell(trial, TrialState.PRUNED)
        except UpdateFinishedTrialError as e:
            raise TakenOver("the trial is no longer running") from e
        failpoint("pbt:pruned")
        w._db(_locked_repair, w)
        own = checkpoint_of(me)
        if plan.get("parent") is not None and own and w.artifacts is not None:
            remove_artifact(w.artifacts, own["id"])  # the successor starts elsewhere
        logger.info("trial %d: %s", trial.number, reason)
        return TrialState.PRUNED

    def _exploit(
        self, w: Worker, trial: optuna.Trial, donor: FrozenTrial, rng: random.Random
    ) -> dict[str, Any] | None:
        """Copy ``donor``'s recorded training state for this member's successor and perturb
        its parameters; None when the state went away meanwhile (the donor moved on)."""
        if w.artifacts is None:
            return None
        checkpoint = checkpoint_of(donor)
        if not checkpoint:
            return None
        copy_id = w.new_checkpoint_id()
        w.mark_checkpoint_pending(trial, copy_id)
        try:
            data = read_artifact(w.artifacts, checkpoint["id"])
        except (OSError, optuna.artifacts.exceptions.ArtifactNotFound) as e:
            logger.info("trial %d: trial %d's state is gone (%s)", trial.number, donor.number, e)
            return None
        write_artifact(w.artifacts, data, kind="checkpoint", artifact_id=copy_id)
        failpoint("pbt:copied")
        return {
            "params": explore(dict(donor.params), w.spec.space, self.spec, rng),
            "checkpoint": {"id": copy_id, "step": checkpoint["step"]},
            "parent": {
                "trial": donor.number,
                "member": member_of(donor),
                "step": checkpoint["step"],
            },
        }


def _locked_repair(w: Worker) -> None:
    """Enqueue the successors the study lacks, under the budget lock (one try of it: what a
    try did under the lock is undone with it when it fails)."""
    with budget_lock(w.storage, w.study.study_name):
        repair(w.study, max_retry=w.spec.max_retry)
