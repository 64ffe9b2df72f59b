"""Checkpoint files that no trial needs are swept; every other file stays (real Optuna studies
on SQLite, a real directory store; the instants that leave such files behind are tested with
real workers in test_handover.py)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ganhpo.artifacts import list_artifacts, open_artifact_store, write_artifact
from ganhpo.chains import (
    CHECKPOINT_ATTR,
    CHECKPOINT_PENDING_ATTR,
    HANDOVER_ATTR,
    HANDOVERS_ATTR,
    LEGACY_CHECKPOINT_ATTRS,
    PBT_ATTR,
)
from ganhpo.worker._handover import study_key, sweep_checkpoints

DIST = {"lr_g": FloatDistribution(1e-5, 1e-2, log=True)}


def add(
    study: optuna.Study,
    state: TrialState,
    *,
    checkpoint: str | None = None,
    pending: str | None = None,
    system_attrs: dict | None = None,
    legacy: bool = False,
) -> None:
    """``legacy``: the checkpoint attributes where studies of earlier versions kept them (user
    attributes, which the dashboard shows)."""
    recorded = {CHECKPOINT_ATTR: {"id": checkpoint, "step": 80}} if checkpoint else {}
    recorded |= {CHECKPOINT_PENDING_ATTR: pending} if pending else {}
    user_attrs: dict = {}
    system_attrs = dict(system_attrs or {})
    if legacy:
        user_attrs = {LEGACY_CHECKPOINT_ATTRS[k]: v for k, v in recorded.items()}
    else:
        system_attrs |= recorded
    study.add_trial(
        optuna.create_trial(
            state=state,
            value=1.0 if state == TrialState.COMPLETE else None,
            params={"lr_g": 1e-3},
            distributions=DIST,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["system-attrs", "legacy-user-attrs"])
def test_only_files_no_trial_can_resume_from_are_removed(tmp_path: Path, legacy: bool) -> None:
    study = optuna.create_study(study_name="a", storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    store = open_artifact_store(str(tmp_path / "artifacts"), create=True)
    key = study_key(study)
    assert study_key(study) == key  # made once, then read
    ids = {name: f"checkpoint-{key}-{name}" for name in "abcdefghi"}
    for artifact_id in ids.values():
        write_artifact(store, b"state", kind="checkpoint", artifact_id=artifact_id)
    write_artifact(store, b"png", kind="grid", artifact_id="grid-1")  # not a checkpoint

    add(
        study, TrialState.COMPLETE, checkpoint=ids["a"], legacy=legacy
    )  # killed between tell and removal
    add(
        study, TrialState.WAITING, checkpoint=ids["b"], legacy=legacy
    )  # a retry that will resume from it
    # Running: its recorded checkpoint and the one being written are both needed; the one
    # it replaced (killed between recording the new one and removing the old: "c") is not.
    add(study, TrialState.RUNNING, checkpoint=ids["d"], pending=ids["e"], legacy=legacy)
    # Failed for a hand-over, retry not yet enqueued (repair will, from its checkpoint).
    add(
        study, TrialState.FAIL, checkpoint=ids["f"], system_attrs={HANDOVER_ATTR: {}}, legacy=legacy
    )
    # The same, but out of retries (max_retry = 2): it stays failed, nobody resumes it.
    add(
        study,
        TrialState.FAIL,
        checkpoint=ids["g"],
        system_attrs={HANDOVER_ATTR: {}, HANDOVERS_ATTR: 2},
        legacy=legacy,
    )
    # A PBT member's interval ended, successor not yet enqueued: its plan's state is needed.
    plan = {"params": {}, "checkpoint": {"id": ids["h"], "step": 80}, "parent": None}
    add(study, TrialState.PRUNED, checkpoint=ids["i"], system_attrs={PBT_ATTR: plan}, legacy=legacy)

    removed = sweep_checkpoints(study, store, max_retry=2)
    assert sorted(removed) == sorted([ids["a"], ids["c"], ids["g"]])
    left = set(list_artifacts(store, ""))
    assert left == {ids[n] for n in "bdefhi"} | {"grid-1"}
    assert sweep_checkpoints(study, store, max_retry=2) == []  # nothing more to do


def test_a_sweep_never_touches_another_study_in_the_same_store(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    a = optuna.create_study(study_name="a", storage=storage)
    b = optuna.create_study(study_name="b", storage=storage)
    # shared, like ./ganhpo-artifacts
    store = open_artifact_store(str(tmp_path / "artifacts"), create=True)
    assert study_key(a) != study_key(b)
    mine = f"checkpoint-{study_key(a)}-x"
    theirs = f"checkpoint-{study_key(b)}-x"
    old_format = "checkpoint-0b4d1f4e-87c2-4cf0-9f0b-1c1a4e6f0a31"  # before keys existed
    for artifact_id in (mine, theirs, old_format):
        write_artifact(store, b"state", kind="checkpoint", artifact_id=artifact_id)
    add(b, TrialState.RUNNING, checkpoint=theirs)
    assert sweep_checkpoints(a, store, max_retry=3) == [mine]
    assert set(list_artifacts(store, "checkpoint-")) == {theirs, old_format}
