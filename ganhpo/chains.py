"""Trial chains: a trial handed over to another worker and its retries, counted once.

A trial whose worker was lost or stopped is failed and retried as a new trial with the same
parameters, seed, checkpoint and FID curve (Optuna's ``retry_history`` system attribute links a
retry to the trials before it). The chain is one trial of the study's budget; its failed links
are *hand-overs*. The compute a study spent is the sum of the training steps its trials
reserved (``steps_reserved``), each link of a chain counting what it trained; the device time
it spent is the sum of ``seconds_reserved``, each link's own training and evaluation time on its
device (an estimate for the interval it is training, replaced by the time measured at the
interval's end). This module reads that bookkeeping; ``ganhpo.worker`` writes it.

Population-based training uses the same links: a member is a chain, each of its trials one
interval of training (``PBT_ATTR`` on a trial that ended its interval says how its successor
goes on), so a population of N members is N trials of the budget however long they train.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from ganhpo._optuna import models, storage_of, study_id_of
from ganhpo.storage import connection, rdb_of

__all__ = [
    "CHECKPOINT_ATTR",
    "CHECKPOINT_ATTRS",
    "CHECKPOINT_PENDING_ATTR",
    "GROW_ATTR",
    "HANDOVERS_ATTR",
    "HANDOVER_ATTR",
    "LINK_ATTRS",
    "OVER_ESTIMATE_ATTR",
    "PBT_ATTR",
    "STARTED_STATES",
    "Ledger",
    "Rates",
    "chain_links",
    "checkpoint_files",
    "checkpoint_ids",
    "checkpoint_of",
    "counted_trials",
    "handovers",
    "member_of",
    "pending_checkpoint_of",
    "read_ledger",
    "retry_history",
    "seconds_over_estimates",
    "seconds_spent",
    "steps_spent",
]

# A system attribute set on a trial, while it still runs, before it is failed for a hand-over:
# {"reason": "..."}. A FAIL trial with it and without a retry is repaired by the next worker.
HANDOVER_ATTR = "ganhpo:handover"

# A system attribute set on a PBT member's trial at the end of its interval, before it is
# pruned: {"params", "checkpoint", "parent", ...}, what its successor starts from. A PRUNED
# trial with it and without a successor is repaired like a hand-over.
PBT_ATTR = "ganhpo:pbt-next"
# A system attribute set on a trial that grows a completed trial of a ``grow`` study beyond its
# length: {"from": the completed trial's number, "steps": where it starts, "length": its new
# length}. Set when the trial is enqueued (one transaction), so a study has grown once it has one.
GROW_ATTR = "ganhpo:grow"
# System attributes (machine bookkeeping that the dashboard does not show a person): the
# training state a trial can be resumed from, {"id": artifact id, "step": its step}, and the id
# of a checkpoint being written (recorded before its file is, so a worker that dies between the
# two leaves no file nobody knows of). Studies of earlier versions kept both as the user
# attributes ``checkpoint`` and ``checkpoint_pending`` (shown on the dashboard): still read.
CHECKPOINT_ATTR = "ganhpo:checkpoint"
CHECKPOINT_PENDING_ATTR = "ganhpo:checkpoint_pending"
CHECKPOINT_ATTRS = (CHECKPOINT_ATTR, CHECKPOINT_PENDING_ATTR)
LEGACY_CHECKPOINT_ATTRS = {
    CHECKPOINT_ATTR: "checkpoint",
    CHECKPOINT_PENDING_ATTR: "checkpoint_pending",
}
# A system attribute: how many times the chain up to this trial was handed over (lost, stopped,
# broken); study.max_retry bounds it. PBT intervals do not count.
HANDOVERS_ATTR = "ganhpo:handovers"

# User attributes that describe one link of a chain alone (its status, the compute it reserved,
# the device time it spent): a retry or a PBT successor starts without them.
# Device seconds a link's last interval took beyond its estimate (set where it did).
OVER_ESTIMATE_ATTR = "seconds_over_estimate"
LINK_ATTRS = ("status", "steps_reserved", "seconds_reserved", "device_seconds", OVER_ESTIMATE_ATTR)

# States of trials that count against the total budget (unless handed over to a retry).
STARTED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _checkpoint_attr(trial: FrozenTrial, key: str) -> object:
    if key in trial.system_attrs:
        return trial.system_attrs[key]
    return trial.user_attrs.get(LEGACY_CHECKPOINT_ATTRS[key])  # a study of an earlier version


def checkpoint_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """The recorded training state ``trial`` can be resumed from ({"id", "step"}), or None."""
    value = _checkpoint_attr(trial, CHECKPOINT_ATTR)
    return value if isinstance(value, dict) and value.get("id") else None


def pending_checkpoint_of(trial: FrozenTrial) -> str | None:
    """The id of the checkpoint ``trial``'s worker was writing when it was last recorded."""
    value = _checkpoint_attr(trial, CHECKPOINT_PENDING_ATTR)
    return str(value) if value else None


def checkpoint_files(recorded: dict[str, Any] | None, pending: str | None) -> list[str]:
    """The ids of a recorded checkpoint ({"id", "step"}) and of one being written."""
    ids = [str(recorded["id"])] if recorded else []
    return [*ids, pending] if pending and pending not in ids else ids


def checkpoint_ids(trial: FrozenTrial) -> list[str]:
    """The checkpoint files ``trial`` names (recorded, and being written)."""
    return checkpoint_files(checkpoint_of(trial), pending_checkpoint_of(trial))


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials this one retries, oldest first (Optuna's ``retry_history``
    system attribute, which ``RetryHeartbeatStaleTrialCallback.retry_history`` reads)."""
    return list(trial.system_attrs.get("retry_history", []))


def member_of(trial: FrozenTrial) -> int:
    """The number of the first trial of ``trial``'s chain (a PBT member's id)."""
    history = retry_history(trial)
    return history[0] if history else trial.number


def handovers(trial: FrozenTrial) -> int:
    """How many times the chain up to ``trial`` was handed over (not counting PBT intervals);
    chains recorded before PBT count every link."""
    return int(trial.system_attrs.get(HANDOVERS_ATTR, len(retry_history(trial))))


def chain_links(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Predecessor number -> the number of the retry that took it over."""
    links: dict[int, int] = {}
    for t in trials:
        history = retry_history(t)
        if history:
            links[history[-1]] = t.number
    return links


def counted_trials(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count against the budget: started ones, a handed-over chain counted once."""
    handed_over = {n for t in trials for n in retry_history(t)}
    return sum(1 for t in trials if t.state in STARTED_STATES and t.number not in handed_over)


def steps_spent(trials: Sequence[FrozenTrial]) -> int:
    """Training steps reserved by all trials: the compute budget spent (a retry counts only the
    steps it trains itself; what a lost worker reserved stays spent)."""
    return sum(int(t.user_attrs.get("steps_reserved", 0)) for t in trials)


def seconds_spent(trials: Sequence[FrozenTrial]) -> float:
    """Device seconds reserved by all trials: the device-time budget spent (measured for what
    they trained, estimated for the interval a running trial is in)."""
    return sum(float(t.user_attrs.get("seconds_reserved", 0.0)) for t in trials)


def seconds_over_estimates(trials: Sequence[FrozenTrial]) -> float:
    """Device seconds that the last intervals of trials took beyond what they reserved: what
    the device-time budget can be overrun by (every other interval's excess was known, and
    budgeted for, when the next interval was reserved)."""
    return sum(float(t.user_attrs.get(OVER_ESTIMATE_ATTR, 0.0)) for t in trials)


# User attributes of a trial's cost on its device, summed or maximised by read_ledger.
_COST_SUMS = ("steps_reserved", "seconds_reserved")
# Per-step training time and per-image evaluation time a trial measured over an interval: the
# fastest and the slowest of the study price a new trial's first interval before it has
# measured its own.
_COST_RATES = ("seconds_per_step", "seconds_per_image")


@dataclass(frozen=True)
class Rates:
    """Device seconds per training step and per evaluated image (0: none measured yet)."""

    per_step: float = 0.0
    per_image: float = 0.0


@dataclass(frozen=True)
class Ledger:
    """What a study has spent and what is left to repair, counted by the database itself:
    the same numbers as :func:`counted_trials`, :func:`steps_spent` and :func:`chain_links`
    on the whole study, without loading its trials (a few queries of integers and short
    texts, however many trials the study holds)."""

    counted: int  # trials that count against study.max_trials
    running: int  # trials running now
    waiting: int  # trials waiting to be taken (retries, PBT intervals, baselines)
    steps: int  # training steps reserved, against study.max_steps
    seconds: float  # device seconds reserved, against study.max_device_hours
    fastest: Rates  # the cheapest rates any trial of the study measured
    slowest: Rates  # the dearest
    links: dict[int, int]  # predecessor number -> the number of the trial that continues it
    marked: dict[int, int]  # number -> trial id of ended trials whose successor is due:
    # FAIL with the hand-over mark, PRUNED with a PBT decision, and no successor yet
    grown: int = 0  # trials that grow a completed one (strategy grow), whatever their state


def read_ledger(study: optuna.Study, *, costs: bool = True) -> Ledger:
    """The study's :class:`Ledger`, in one transaction (call it under the budget lock).

    ``costs=False`` leaves the compute spent at 0: summing it reads an attribute of every trial
    of the study (about 80 ms at 10,000 trials here), which a study without a compute budget
    need not pay under the lock that every worker's start goes through.
    """

    trial, sysattr, userattr = (
        models.TrialModel,
        models.TrialSystemAttributeModel,
        (models.TrialUserAttributeModel),
    )
    in_study = trial.study_id == study_id_of(study)
    with connection(rdb_of(storage_of(study))) as conn:
        by_state = {
            TrialState(state): int(n)
            for state, n in conn.execute(
                sqlalchemy.select(trial.state, sqlalchemy.func.count())
                .where(in_study)
                .group_by(trial.state)
            ).all()
        }
        histories = conn.execute(
            sqlalchemy.select(trial.number, sysattr.value_json)
            .join(sysattr, sysattr.trial_id == trial.trial_id)
            .where(in_study, sysattr.key == "retry_history")
        ).all()
        as_float = sqlalchemy.cast(userattr.value_json, sqlalchemy.Float)
        spent = (
            {
                key: (total, low, high)
                for key, total, low, high in conn.execute(
                    sqlalchemy.select(
                        userattr.key,
                        sqlalchemy.func.sum(as_float),
                        sqlalchemy.func.min(as_float),
                        sqlalchemy.func.max(as_float),
                    )
                    .join(trial, userattr.trial_id == trial.trial_id)
                    .where(in_study, userattr.key.in_(_COST_SUMS + _COST_RATES))
                    .group_by(userattr.key)
                ).all()
            }
            if costs
            else {}
        )
        grown = conn.execute(
            sqlalchemy.select(sqlalchemy.func.count())
            .select_from(sysattr)
            .join(trial, sysattr.trial_id == trial.trial_id)
            .where(in_study, sysattr.key == GROW_ATTR)
        ).scalar_one()
        candidates = conn.execute(
            sqlalchemy.select(trial.number, trial.trial_id)
            .join(sysattr, sysattr.trial_id == trial.trial_id)
            .where(
                in_study,
                sqlalchemy.or_(
                    sqlalchemy.and_(trial.state == TrialState.FAIL, sysattr.key == HANDOVER_ATTR),
                    sqlalchemy.and_(trial.state == TrialState.PRUNED, sysattr.key == PBT_ATTR),
                ),
            )
        ).all()
    links: dict[int, int] = {}
    handed_over: set[int] = set()
    for number, value in histories:
        history = json.loads(value)
        if history:
            links[history[-1]] = number
            handed_over.update(history)
    # Every trial a successor continues is a started one (a FAIL or a PRUNED trial).
    return Ledger(
        counted=sum(by_state.get(state, 0) for state in STARTED_STATES) - len(handed_over),
        running=by_state.get(TrialState.RUNNING, 0),
        waiting=by_state.get(TrialState.WAITING, 0),
        steps=round(spent.get("steps_reserved", (0, 0, 0))[0]),
        seconds=float(spent.get("seconds_reserved", (0, 0, 0))[0]),
        fastest=Rates(*(float(spent.get(k, (0, 0, 0))[1]) for k in _COST_RATES)),
        slowest=Rates(*(float(spent.get(k, (0, 0, 0))[2]) for k in _COST_RATES)),
        links=links,
        marked={n: i for n, i in candidates if n not in links},
        grown=int(grown),
    )
