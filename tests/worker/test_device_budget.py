"""A budget in device time (``study.max_device_hours``): training and evaluation seconds over
all trials, reserved an evaluation interval at a time from measured rates.

First the bookkeeping, step by step, with a stand-in for the trainer's clock (so the seconds are
exact); then real workers on PostgreSQL, one of them SIGKILLed mid-trial, spending a budget.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from faults import checkpoint_of, create_study, kill_and_replace, load, start_worker
from optuna.trial import TrialState
from procs import finish, ganhpo, spec_variant, wait_for

from ganhpo.chains import (
    OVER_ESTIMATE_ATTR,
    read_ledger,
    retry_history,
    seconds_over_estimates,
    seconds_spent,
)
from ganhpo.cli import main
from ganhpo.spec import load_study_spec
from ganhpo.storage import open_storage
from ganhpo.study import create_study as create_optuna_study
from ganhpo.study import load_study
from ganhpo.train.loop import TrainResult
from ganhpo.worker import Worker, WorkerOptions
from ganhpo.worker._worker import CALIBRATION_STEPS, _Clock

# Trials of a fixed length (strategy optuna; grow, the default of a compute budget, is tested in
# tests/worker/test_grow_budget.py).
FIXED = {"[pruner]": '[strategy]\nname = "optuna"\nguard = false\n\n[pruner]'}


def clock(step: int, train: float, evals: float, evaluated: int) -> SimpleNamespace:
    """What ``Worker._reserve`` reads of a trainer: its step and device seconds so far."""
    history = [SimpleNamespace(num_samples=500)] * evaluated
    return SimpleNamespace(step=step, train_seconds=train, eval_seconds=evals, history=history)


def test_device_seconds_are_reserved_from_measured_rates(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # quick.toml: 240 steps, evaluations of 500 images at 80 and 160, 1000 at the end; 36 s.
    spec = load_study_spec(
        spec_variant(tmp_path, {"max_trials = 6 ": "max_device_hours = 0.01 ", **FIXED})
    )
    storage = open_storage(postgres_url, create_schema=True)
    create_optuna_study(spec, storage)
    w = Worker(load_study(spec.name, storage), spec, WorkerOptions(), storage=storage)

    def reserved(trial: object) -> float:
        return float(trial.user_attrs["seconds_reserved"])  # type: ignore[attr-defined]

    a = w.next_trial()
    assert a is not None
    # Nothing measured yet, by the trial or the study: 5 calibration steps, then its rate
    # (0.1 s a step) prices the rest of the interval: 75 steps, 7.5 s, on top of 0.5 used.
    assert w._reserve(a, clock(0, 0.0, 0.0, 0)) == CALIBRATION_STEPS == 5
    assert reserved(a) == 0
    assert w._reserve(a, clock(5, 0.5, 0.0, 0)) == 80 and reserved(a) == 8.0
    # After the interval, 1 ms an evaluated image too: 80 steps and 500 images, 8.5 s.
    assert w._reserve(a, clock(80, 8.0, 0.5, 1)) == 160 and reserved(a) == 17.0
    assert a.user_attrs["seconds_per_step"] == 0.1

    b = w.next_trial()  # 17 s spent; a new trial's first interval at the study's rates: 8.5
    assert b is not None
    assert w._reserve(b, clock(0, 0.0, 0.0, 0)) == 5 and reserved(b) == 0.5
    # b is a network 2.5 times slower a step: its interval (19.25 s) does not fit, and it
    # stops after its calibration steps, having reserved what they took.
    assert w._reserve(b, clock(5, 1.25, 0.0, 0)) == 5 and reserved(b) == 1.25
    # Rates of calibration steps (the first step warms up) price no other trial.
    assert read_ledger(w.study).slowest.per_step == 0.1 and "seconds_per_step" not in b.user_attrs
    # a's last interval ends with the final evaluation of 1000 images, at its own 1.5 ms an
    # image: 8 + 1.5 s.
    assert w._reserve(a, clock(160, 16.0, 1.5, 2)) == 240 and reserved(a) == 27.0
    assert read_ledger(w.study).seconds == pytest.approx(28.25)
    assert w.next_trial() is None  # a new trial's first interval (8 + 0.75 s) does not fit
    assert w.spent == "the study's device-time budget of 0.01 h is spent"
    # a ends: its record replaces its estimate by the time it took, training and evaluation.
    w._record(a, "completed", time.monotonic(), TrainResult(240, False, [], 24.5, 1.5))
    assert reserved(a) == a.user_attrs["device_seconds"] == 26.0
    assert OVER_ESTIMATE_ATTR not in a.user_attrs  # it took less than it had reserved
    # A retry resumed at step 160 counts only its own seconds, and calibrates again (another
    # device, perhaps); a waiting trial is taken even when no new one fits.
    w.study.enqueue_trial({})
    retry = w.next_trial()
    assert retry is not None
    w._link_start = _Clock(step=160, train_seconds=16.0, eval_seconds=1.5, images=1000)
    assert w._reserve(retry, clock(160, 16.0, 1.5, 2)) == 165 and reserved(retry) == 0.5
    # 0.1 s a step, and the trial's 1.5 ms an image: 7.5 + 1.5 s more does not fit in 36.
    assert w._reserve(retry, clock(165, 16.5, 1.5, 2)) == 165 and reserved(retry) == 0.5
    assert read_ledger(w.study).seconds == pytest.approx(26.0 + 1.25 + 0.5)
    # b's calibration steps took 12 s where 1.25 were reserved (the machine slowed down): the
    # budget is overrun, by what b's record says, and study show says so.
    w._link_start = _Clock(step=0, train_seconds=0.0, eval_seconds=0.0, images=0)  # b's link
    w._record(b, "completed", time.monotonic(), TrainResult(5, False, [], 12.0, 0.0))
    assert reserved(b) == 12.0 and b.user_attrs[OVER_ESTIMATE_ATTR] == 10.75
    trials = w.study.get_trials(deepcopy=False)
    assert seconds_spent(trials) == 38.5 and seconds_over_estimates(trials) == 10.75
    assert main(["study", "show", spec.name, "--storage", postgres_url]) == 0
    shown = capsys.readouterr().out
    assert "device     0.0107 of 0.01 device-hours spent (107 %), 0 left\n" in shown, shown
    assert (
        "over the budget by 0.000694 device-hours: the last intervals of trials took 0.00299 h "
        "longer than their measured rates predicted\n"
    ) in shown, shown


HOURS = 0.012  # 43.2 s of training and evaluation: about four of these trials on one core


@pytest.mark.slow  # started first (tests/conftest.py)
def test_workers_spend_a_device_time_budget(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(
        postgres_url, tmp_path, env, {"max_trials = 1 ": f"max_device_hours = {HOURS} ", **FIXED}
    )
    budget = HOURS * 3600
    workers = [start_worker(postgres_url, tmp_path, env, f"w{i}") for i in range(2)]

    def in_second_interval() -> bool:  # its first measured, its second estimated
        ckpt = checkpoint_of(postgres_url, 0)
        return bool(ckpt and ckpt["step"] >= 120)

    wait_for(in_second_interval, 300, "trial 0's checkpoint at step 120")
    kill_and_replace(postgres_url, tmp_path, env, workers)
    codes = [finish(w) for w in workers]
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert codes == [0, 0], logs
    assert f"the study's device-time budget of {HOURS:g} h is spent" in logs
    assert f"/{HOURS:g} device-h" in logs  # the progress lines show what is spent

    study = load(postgres_url)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    for t in ended:  # what each link reserved is what it measured
        assert t.user_attrs["seconds_reserved"] == t.user_attrs["device_seconds"] > 0
    killed = trials[0]  # what it reserved stays spent: its retry counts its own time
    assert killed.state == TrialState.FAIL and killed.user_attrs["seconds_reserved"] > 0
    assert any(retry_history(t) == [0] for t in trials)
    spent = seconds_spent(trials)
    ledger = read_ledger(study)
    first_interval = 80 * ledger.fastest.per_step + 500 * ledger.fastest.per_image
    # Used up to what no new trial's first interval fits in, and over it by no more than what
    # the intervals in flight at the end took beyond their estimates, which each records.
    over = seconds_over_estimates(trials)
    assert budget - first_interval < spent <= budget + over + 1e-9, (spent, budget, over)
    shown = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert f"device     {spent / 3600:.3g} of {HOURS:g} device-hours spent" in shown.stdout
    assert ("over the budget by" in shown.stdout) == (spent > budget), shown.stdout
    print(
        f"device budget: {spent:.1f} of {budget:.1f} s over {len(trials)} trials, "
        f"{over:.2f} s beyond estimates"
    )
