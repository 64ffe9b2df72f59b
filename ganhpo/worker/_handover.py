"""Handing trials over between workers, at any instant of their life.

A trial whose worker stops (SIGTERM), dies (SIGKILL, a lost machine) or cannot run it here (a
broken environment) is *handed over*: it is marked with why, failed, and a retry of it (same
parameters, seed, checkpoint and FID curve) is enqueued as a WAITING trial for the next worker.
Those are three database transactions, and a worker can die between any two of them, so each
step leaves a state the next worker repairs:

- RUNNING without a heartbeat row (killed between ``ask`` and its first heartbeat): the next
  worker records one for it, so Optuna's stale-trial scan sees it go silent (Optuna skips
  trials that never beat);
- RUNNING and silent for the grace period (killed, frozen, or marked then killed): failed and
  handed over by whoever scans first;
- FAIL with the hand-over mark but no retry (killed between the two transactions, e.g. by a
  second SIGTERM during a hand-back): the retry is enqueued by :func:`repair`, which every
  worker runs under the budget lock before it counts the budget;
- a checkpoint file no trial needs any more (killed between recording a new checkpoint and
  removing the old one, or between telling a trial finished and removing its last one):
  removed by :func:`sweep_checkpoints`, which every worker runs when it starts and when the
  study is done.

A handed-over trial and its retries count once against the study's budget.

A PBT member ends each interval the same way: its successor is described in the ``PBT_ATTR``
mark before the trial is pruned, and :func:`repair` enqueues it if the worker died in between.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ganhpo._failpoints import failpoint
from ganhpo._optuna import models, storage_of, study_id_of
from ganhpo.artifacts import ArtifactStore, list_artifacts, remove_artifact
from ganhpo.chains import (
    CHECKPOINT_ATTR,
    CHECKPOINT_ATTRS,
    HANDOVER_ATTR,
    HANDOVERS_ATTR,
    LEGACY_CHECKPOINT_ATTRS,
    LINK_ATTRS,
    PBT_ATTR,
    Ledger,
    chain_links,
    checkpoint_ids,
    handovers,
    read_ledger,
    retry_history,
)
from ganhpo.storage import budget_lock, connection, rdb_of

__all__ = [
    "TakenOver",
    "add_waiting",
    "adopt_silent_trials",
    "fail_stale_trials",
    "hand_over",
    "link_system_attrs",
    "mark_handover",
    "repair",
    "retry_trial",
    "stale_trial_ids",
    "study_key",
    "sweep_checkpoints",
    "trial_by_number",
]

logger = logging.getLogger(__name__)

# A study system attribute: a random key made once per study, the prefix of its checkpoint
# files, so that a sweep of one study never touches another's in a store they share.
STUDY_KEY_ATTR = "ganhpo:store-key"


class TakenOver(Exception):
    """This worker's trial was finished by another worker (taken for dead); drop the copy."""


def adopt_silent_trials(study: optuna.Study) -> list[int]:
    """Record a first heartbeat for RUNNING trials that have none (their worker died before its
    first one), so that they go stale after the grace period like any other silent trial."""

    rdb = rdb_of(storage_of(study))
    with connection(rdb) as conn:
        ids = list(
            conn.execute(
                sqlalchemy.select(models.TrialModel.trial_id)
                .outerjoin(
                    models.TrialHeartbeatModel,
                    models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id,
                )
                .where(
                    models.TrialModel.study_id == study_id_of(study),
                    models.TrialModel.state == TrialState.RUNNING,
                    models.TrialHeartbeatModel.trial_heartbeat_id.is_(None),
                )
            ).scalars()
        )
    for trial_id in ids:
        # If its own worker records the first beat at the same moment, Optuna keeps one row.
        rdb.record_heartbeat(trial_id)
    return ids


def stale_trial_ids(study: optuna.Study, grace_period: int) -> list[int]:
    """RUNNING trials whose last heartbeat is older than ``grace_period`` seconds, by the
    database's clock (Optuna's rule), found by one query that returns only them: Optuna's own
    scan loads every running trial of the study, and every worker scans before each trial and
    while it waits, so with hundreds of workers the scans grew with the square of them."""

    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    with connection(rdb_of(storage_of(study))) as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
        limit = now.replace(tzinfo=None) - datetime.timedelta(seconds=grace_period)
        return list(
            conn.execute(
                sqlalchemy.select(trial.trial_id)
                .join(beat, beat.trial_id == trial.trial_id)
                .where(
                    trial.study_id == study_id_of(study),
                    trial.state == TrialState.RUNNING,
                    beat.heartbeat < limit,
                )
                .order_by(trial.trial_id)
            ).scalars()
        )


def mark_handover(storage: optuna.storages.BaseStorage, trial_id: int, reason: str) -> bool:
    """Mark a running trial for a hand-over, with ``reason`` as its status.

    False when the trial has already finished (another worker took it over, or it ended).
    """
    try:
        storage.set_trial_user_attr(trial_id, "status", reason)
        storage.set_trial_system_attr(trial_id, HANDOVER_ATTR, {"reason": reason})
    except UpdateFinishedTrialError:
        return False
    return True


def hand_over(study: optuna.Study, trial_id: int, reason: str, *, max_retry: int) -> bool:
    """Mark, fail and enqueue a retry of a running trial (unless it was retried ``max_retry``
    times). False when the trial had finished already: nothing was changed."""
    storage = storage_of(study)
    if not mark_handover(storage, trial_id, reason):
        return False
    failpoint("handover:marked")
    try:
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False  # finished meanwhile: by its own worker, or failed by another scanner
    failpoint("handover:failed")
    with budget_lock(storage, study.study_name):
        repair(study, max_retry=max_retry)
    return True


def repair(
    study: optuna.Study, *, max_retry: int, ledger: Ledger | None = None
) -> list[FrozenTrial]:
    """Enqueue the missing successors of handed-over trials and of PBT intervals; the caller
    holds the budget lock. ``ledger`` (read under the lock) saves a query when the caller has
    it. Only the trials to repair are loaded. Returns the trials enqueued."""
    if ledger is None:
        ledger = read_ledger(study, costs=False)
    storage = storage_of(study)
    enqueued: list[FrozenTrial | None] = []
    for _, trial_id in sorted(ledger.marked.items()):
        trial = storage.get_trial(trial_id)
        if trial.state == TrialState.FAIL and HANDOVER_ATTR in trial.system_attrs:
            enqueued.append(retry_trial(study, trial, max_retry=max_retry))
        elif trial.state == TrialState.PRUNED and PBT_ATTR in trial.system_attrs:
            enqueued.append(_enqueue_next_interval(study, trial))
    return [t for t in enqueued if t is not None]


def retry_trial(
    study: optuna.Study, trial: FrozenTrial, *, max_retry: int, from_start: bool = False
) -> FrozenTrial | None:
    """Enqueue a retry of the failed ``trial`` unless it was retried ``max_retry`` times (then
    it stays failed and counts). The caller holds the budget lock and knows it has no retry.
    ``from_start``: the retry trains from step 0 (the trial ended, and its checkpoint is gone)."""
    history = [*retry_history(trial), trial.number]
    count = handovers(trial) + 1
    if count > max_retry:
        logger.warning(
            "trial %d was handed over %d times; it stays failed (study.max_retry = %d)",
            trial.number,
            count,
            max_retry,
        )
        return None
    return _enqueue_retry(study, trial, history, count, from_start=from_start)


def _enqueue_retry(
    study: optuna.Study,
    trial: FrozenTrial,
    history: list[int],
    count: int,
    *,
    from_start: bool = False,
) -> FrozenTrial:
    """A WAITING copy of ``trial``: its parameters, user attributes (seed, checkpoint, grids)
    and FID curve, with Optuna's retry bookkeeping (``RetryHeartbeatStaleTrialCallback``'s)."""
    system_attrs = link_system_attrs(trial, history, count)
    # Its own status and compute to come; the predecessor keeps the steps it reserved. Where
    # the predecessor resumed from is its own: a retry whose worker dies before it resumes
    # must not claim its predecessor's resumed_at_step (the chaos test caught one).
    dropped: tuple[str, ...] = (*LINK_ATTRS, "resumed_from_trial", "resumed_at_step")
    if from_start:
        dropped += tuple(LEGACY_CHECKPOINT_ATTRS.values())
        system_attrs = {k: v for k, v in system_attrs.items() if k not in CHECKPOINT_ATTRS}
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in dropped}
    retry = add_waiting(
        study,
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
            intermediate_values=trial.intermediate_values,
        ),
    )
    logger.info("trial %d handed over as trial %d", trial.number, retry.number)
    return retry


def link_system_attrs(trial: FrozenTrial, history: list[int], count: int) -> dict[str, Any]:
    """The system attributes of the trial that continues ``trial`` (a retry, a PBT interval, a
    grown trial): its own, less the marks that asked for a successor, with Optuna's retry
    bookkeeping (``history``: the chain's numbers so far) and ``count`` hand-overs."""
    system_attrs = {
        k: v for k, v in trial.system_attrs.items() if k not in (HANDOVER_ATTR, PBT_ATTR)
    }
    return system_attrs | {
        "failed_trial": history[0],
        "retry_history": history,
        HANDOVERS_ATTR: count,
    }


def add_waiting(study: optuna.Study, template: FrozenTrial) -> FrozenTrial:
    """Add ``template`` to the study (as ``Study.add_trial``) and return it as stored."""
    storage = storage_of(study)
    return storage.get_trial(storage.create_new_trial(study_id_of(study), template_trial=template))


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of the study, as stored."""
    storage = storage_of(study)
    return storage.get_trial(
        storage.get_trial_id_from_study_id_trial_number(study_id_of(study), number)
    )


def _enqueue_next_interval(study: optuna.Study, trial: FrozenTrial) -> FrozenTrial:
    """The WAITING trial that continues the PBT member ``trial`` as its ``PBT_ATTR`` mark says:
    from its own state, or from a better member's (``parent``) with perturbed parameters, that
    member's seed and that member's FID curve up to the state's step."""
    info = trial.system_attrs[PBT_ATTR]
    history = [*retry_history(trial), trial.number]
    system_attrs = link_system_attrs(trial, history, handovers(trial))  # not a hand-over
    user_attrs = {
        k: v
        for k, v in trial.user_attrs.items()
        if k not in (*LINK_ATTRS, "resumed_from_trial", "resumed_at_step",
                     *LEGACY_CHECKPOINT_ATTRS.values())
    }  # fmt: skip
    system_attrs[CHECKPOINT_ATTR] = info["checkpoint"]
    parent = info.get("parent")
    source = trial
    intermediate = dict(trial.intermediate_values)
    if parent is not None:
        source = trial_by_number(study, parent["trial"])
        user_attrs["seed"] = source.user_attrs.get("seed", user_attrs.get("seed"))
        intermediate = {s: v for s, v in source.intermediate_values.items() if s <= parent["step"]}
        for key in ("fid_std", "kid_std_curve", "grid"):
            if key in source.user_attrs:
                user_attrs[key] = source.user_attrs[key]
    user_attrs["pbt"] = {"member": history[0], "interval": len(history), "parent": parent}
    params = info["params"]
    successor = add_waiting(
        study,
        optuna.create_trial(
            state=TrialState.WAITING,
            params=params,
            distributions={k: source.distributions[k] for k in params},
            user_attrs=user_attrs,
            system_attrs=system_attrs,
            intermediate_values=intermediate,
        ),
    )
    logger.info(
        "PBT member %d goes on as trial %d%s",
        history[0],
        successor.number,
        ""
        if parent is None
        else f", from trial {parent['trial']}'s state at step {parent['step']}",
    )
    return successor


def fail_stale_trials(study: optuna.Study, *, max_retry: int, grace_period: int) -> list[int]:
    """Hand over every trial whose worker has been silent for the grace period; returns their
    numbers. Safe to run from every worker at once: each trial is handed over once."""
    adopt_silent_trials(study)
    rdb = rdb_of(storage_of(study))
    handed = []
    for trial_id in stale_trial_ids(study, grace_period):
        frozen = rdb.get_trial(trial_id)
        host = frozen.user_attrs.get("host", "an unknown host")
        reason = f"worker lost on {host} (no heartbeat for {grace_period} s)"
        if hand_over(study, trial_id, reason, max_retry=max_retry):
            handed.append(frozen.number)
            logger.warning("trial %d: %s; handed over", frozen.number, reason)
    return handed


def needed_checkpoints(
    trials: Sequence[FrozenTrial], *, max_retry: int, keep_completed: bool = False
) -> set[str]:
    """The checkpoint ids some trial may still resume from: those of running and waiting
    trials, of ended trials whose retry or next PBT interval :func:`repair` will enqueue, and
    with ``keep_completed`` those of completed trials (a strategy that may grow them)."""
    links = chain_links(trials)
    needed: set[str] = set()
    for t in trials:
        awaiting = t.number not in links and (
            (
                t.state == TrialState.FAIL
                and HANDOVER_ATTR in t.system_attrs
                and handovers(t) < max_retry
            )
            or (t.state == TrialState.PRUNED and PBT_ATTR in t.system_attrs)
        )
        kept = keep_completed and t.state == TrialState.COMPLETE
        if t.state not in (TrialState.RUNNING, TrialState.WAITING) and not (awaiting or kept):
            continue
        needed.update(checkpoint_ids(t))
        plan = t.system_attrs.get(PBT_ATTR) or {}
        if plan.get("checkpoint"):
            needed.add(plan["checkpoint"]["id"])
    return needed


def study_key(study: optuna.Study) -> str:
    """The study's random key (made by the first worker that asks, under the budget lock):
    its checkpoint files are ``checkpoint-KEY-...``. Studies of one database or of several
    may share an artifact store (``./ganhpo-artifacts`` by default)."""
    storage = storage_of(study)

    def read() -> str | None:
        return storage.get_study_system_attrs(study_id_of(study)).get(STUDY_KEY_ATTR)

    key = read()
    if key is None:
        with budget_lock(storage, study.study_name):
            key = read()
            if key is None:
                key = uuid.uuid4().hex[:12]
                storage.set_study_system_attr(study_id_of(study), STUDY_KEY_ATTR, key)
    return str(key)


def sweep_checkpoints(
    study: optuna.Study, store: ArtifactStore, *, max_retry: int, keep_completed: bool = False
) -> list[str]:
    """Remove the study's checkpoint files that no trial needs (see
    :func:`needed_checkpoints`): those a worker killed at the wrong instant left behind, and
    (without ``keep_completed``) the final states that completed trials kept to grow.
    Returns the ids removed. Other studies' files (another key) are never touched.

    Safe while other workers run: the store is listed *before* the trials are read, and every
    checkpoint id is recorded in its trial before its file is written, so a file that exists
    at the listing is known to the trials read after it.
    """
    files = list_artifacts(store, f"checkpoint-{study_key(study)}-")
    if not files:
        return []
    needed = needed_checkpoints(
        study.get_trials(deepcopy=False), max_retry=max_retry, keep_completed=keep_completed
    )
    removed = [f for f in files if f not in needed]
    for artifact_id in removed:
        remove_artifact(store, artifact_id)
    if removed:
        logger.info("removed %d checkpoint(s) no trial needs", len(removed))
    return removed
