"""The budget counted by the database (``read_ledger``) equals the count over loaded trials, on
PostgreSQL and SQLite, for every kind of chain a study holds."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ganhpo.chains import (
    HANDOVER_ATTR,
    HANDOVERS_ATTR,
    PBT_ATTR,
    Rates,
    chain_links,
    counted_trials,
    read_ledger,
    seconds_spent,
    steps_spent,
)
from ganhpo.storage import open_storage

DIST = {"lr_g": FloatDistribution(1e-5, 1e-2, log=True)}


def add(
    study: optuna.Study,
    state: TrialState,
    *,
    steps: int | None = None,
    history: list[int] | None = None,
    system_attrs: dict | None = None,
    user_attrs: dict | None = None,
) -> None:
    system = dict(system_attrs or {})
    user = dict(user_attrs or {})
    if steps is not None:
        user["steps_reserved"] = steps
    if history:
        system |= {"retry_history": history, "failed_trial": history[0]}
    study.add_trial(
        optuna.create_trial(
            state=state,
            value=1.0 if state == TrialState.COMPLETE else None,
            params={"lr_g": 1e-3},
            distributions=DIST,
            user_attrs=user,
            system_attrs=system,
        )
    )


def cost(seconds: float, per_step: float, per_image: float) -> dict[str, float]:
    return {
        "seconds_reserved": seconds,
        "seconds_per_step": per_step,
        "seconds_per_image": per_image,
    }


def fill(study: optuna.Study) -> None:
    # Device time: measured (0, 4), an estimate while running (11); the slowest rates.
    add(study, TrialState.COMPLETE, steps=240, user_attrs=cost(12.5, 0.05, 0.001))  # 0
    add(study, TrialState.FAIL, steps=80, system_attrs={HANDOVER_ATTR: {}})  # 1, handed over
    add(study, TrialState.FAIL, steps=160, history=[1], system_attrs={HANDOVER_ATTR: {}})  # 2
    add(study, TrialState.COMPLETE, steps=80, history=[1, 2])  # 3: chain 1 -> 2 -> 3
    add(study, TrialState.PRUNED, steps=40, user_attrs=cost(2.25, 0.0625, 2e-4))  # 4
    add(study, TrialState.FAIL, steps=120)  # 5: its own fault, counts
    add(study, TrialState.FAIL, steps=40, system_attrs={HANDOVER_ATTR: {}})  # 6: retry due
    add(  # 7: out of retries, stays failed and counts
        study, TrialState.FAIL, steps=40, system_attrs={HANDOVER_ATTR: {}, HANDOVERS_ATTR: 9}
    )
    add(study, TrialState.PRUNED, steps=80, system_attrs={PBT_ATTR: {"checkpoint": None}})  # 8
    add(study, TrialState.WAITING, history=[8])  # 9: member 8's next interval
    add(study, TrialState.PRUNED, steps=80, system_attrs={PBT_ATTR: {"checkpoint": None}})  # 10
    add(study, TrialState.RUNNING, steps=40, user_attrs={"seconds_reserved": 1e-3})  # 11
    add(study, TrialState.WAITING)  # 12: an enqueued baseline


def test_the_ledger_counts_what_the_trials_say(any_db_url: str) -> None:
    url = any_db_url
    study = optuna.create_study(study_name="s", storage=open_storage(url, create_schema=True))
    empty = read_ledger(study)
    assert (empty.counted, empty.steps, empty.seconds) == (0, 0, 0)
    assert empty.fastest == empty.slowest == Rates(0, 0)
    fill(study)
    trials = study.get_trials(deepcopy=False)
    ledger = read_ledger(study)
    # 0, 1-3, 4, 5, 6, 7, 10, 11; not 8-9 while its link is waiting (a waiting trial is taken
    # before any new one, and counts once it starts).
    assert ledger.counted == counted_trials(trials) == 8
    assert ledger.steps == steps_spent(trials) == 1000
    assert ledger.seconds == pytest.approx(seconds_spent(trials)) == 14.751
    assert ledger.fastest == Rates(0.05, 2e-4) and ledger.slowest == Rates(0.0625, 0.001)
    # Without a compute budget the sums are not read (an attribute of every trial); the rest is.
    light = read_ledger(study, costs=False)
    assert (light.steps, light.seconds, light.slowest) == (0, 0, Rates())
    assert (light.counted, light.links, light.marked) == (
        ledger.counted,
        ledger.links,
        ledger.marked,
    )
    assert ledger.links == chain_links(trials) == {1: 2, 2: 3, 8: 9}
    # Due a successor: the hand-overs without a retry (6, and 7, which repair refuses) and
    # the PBT interval without its next trial (10).
    assert sorted(ledger.marked) == [6, 7, 10]
    assert ledger.marked[6] == trials[6]._trial_id
