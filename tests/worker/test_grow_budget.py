"""Strategy ``grow``'s bookkeeping, step by step, in device time and in steps: how long a grown
trial is planned to train (:func:`ganhpo.worker._grow.grown_length`), and where the budget left
ends it, with its final evaluation, when it turns out shorter than planned (a stand-in for the
trainer's clock, so the seconds are exact).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from procs import spec_variant

from ganhpo.chains import Ledger, Rates
from ganhpo.spec import load_study_spec
from ganhpo.storage import open_storage, set_user_attrs
from ganhpo.study import create_study as create_optuna_study
from ganhpo.study import load_study
from ganhpo.worker import Worker, WorkerOptions
from ganhpo.worker._grow import grown_length
from ganhpo.worker._worker import _Clock

GROW = {"[pruner]": '[strategy]\nname = "grow"\n\n[pruner]'}


def ledger(steps: int = 0, seconds: float = 0.0) -> Ledger:
    return Ledger(
        counted=2, running=0, waiting=0, steps=steps, seconds=seconds,
        fastest=Rates(0.05, 0.001), slowest=Rates(0.2, 0.002), links={}, marked={},
    )  # fmt: skip


def parent(**attrs: object) -> optuna.trial.FrozenTrial:
    return optuna.create_trial(value=100.0, user_attrs={"steps": 240, **attrs})


def test_a_grown_trial_is_planned_to_use_its_share_of_what_is_left(tmp_path: Path) -> None:
    steps = load_study_spec(
        spec_variant(tmp_path, {**GROW, "max_trials = 6 ": "max_steps = 2000 "})
    )
    # 2000 - 800 spent = 1200 left: all of it for one, 600 each for two.
    assert grown_length(steps, parent(), ledger(steps=800), 1) == 240 + 1200
    assert grown_length(steps, parent(), ledger(steps=800), 2) == 240 + 600
    assert grown_length(steps, parent(), ledger(steps=2000), 1) == 240  # nothing left

    # quick.toml: evaluations of 500 images every 80 steps, 1000 at the end. 0.01 h = 36 s,
    # 16 spent: 20 s left, 18 of it planned (a 10 % margin for the estimates).
    hours = load_study_spec(
        spec_variant(tmp_path, {**GROW, "max_trials = 6 ": "max_device_hours = 0.01 "}, "h.toml")
    )
    rated = parent(seconds_per_step=0.1, seconds_per_image=0.002)
    # 0.1 s a step + 500 images x 2 ms per 80 steps = 0.1125 s a step; 18 - 2 s final = 16 s.
    assert grown_length(hours, rated, ledger(seconds=16.0), 1) == 240 + int(16 / 0.1125)
    # A parent that measured no rate is priced at the study's slowest (0.2 s, 2 ms).
    assert grown_length(hours, parent(), ledger(seconds=16.0), 1) == 240 + int(16 / 0.2125)


def clock(step: int, train: float, evals: float, evaluated: int, steps: int) -> SimpleNamespace:
    """What ``Worker._reserve`` reads of a trainer (its step, device seconds and length) and
    the one thing it may do to it: end it earlier (``end_at``)."""
    history = [SimpleNamespace(num_samples=500)] * evaluated
    config = SimpleNamespace(train=SimpleNamespace(steps=steps))
    trainer = SimpleNamespace(
        step=step, train_seconds=train, eval_seconds=evals, history=history, config=config
    )
    trainer.end_at = lambda n: setattr(config, "train", SimpleNamespace(steps=n))
    return trainer


@pytest.mark.parametrize("budget", ["max_steps = 600 ", "max_device_hours = 0.01 "])
def test_a_grown_trial_ends_where_the_budget_runs_out_with_its_final_evaluation(
    budget: str, postgres_url: str, tmp_path: Path
) -> None:
    spec = load_study_spec(spec_variant(tmp_path, {**GROW, "max_trials = 6 ": budget}))
    storage = open_storage(postgres_url, create_schema=True)
    create_optuna_study(spec, storage)
    w = Worker(load_study(spec.name, storage), spec, WorkerOptions(), storage=storage)
    w.study.enqueue_trial({}, user_attrs={"grown_from": 0, "length": 1000})
    other = w.next_trial()  # the baseline, a search trial: it spent the rest
    grown = w.next_trial()
    assert grown is not None and other is not None
    assert "grown_from" in grown.user_attrs and "grown_from" not in other.user_attrs
    if budget.startswith("max_steps"):
        set_user_attrs(storage, other._trial_id, {"steps_reserved": 540})
        # Resumed at 400: the next interval (80 steps) does not fit in the 60 left: the grown
        # trial reserves those 60 and ends at 460 with its final evaluation.
        trainer = clock(400, 0.0, 0.0, 0, 1000)
        assert w._reserve(grown, trainer, 1000) == 460
        assert trainer.config.train.steps == 460 == grown.user_attrs["length"]
        assert grown.user_attrs["steps_reserved"] == 60
        # The search trial, which may not end early, stops where its interval does not fit.
        assert w._reserve(other, clock(160, 0.0, 0.0, 0, 240), 240) == 160
    else:
        set_user_attrs(storage, other._trial_id, {"seconds_reserved": 25.95})
        # 10.05 s left of 36. Resumed at step 400, this link first trains 5 calibration steps
        # (priced at the study's slowest rate: none measured, 0 s).
        w._link_start = _Clock(step=400)
        trainer = clock(400, 0.0, 0.0, 0, 1000)
        assert w._reserve(grown, trainer, 1000) == 405
        # They took 0.5 s, and an evaluation of 500 images 2 s (4 ms an image): 2.5 s used, 7.55
        # left. The interval to 480 (75 steps and 500 images: 9.5 s) does not fit; its
        # final evaluation (1000 images, 4 s) and 35 steps (3.5 s) do.
        now = clock(405, 0.5, 2.0, 1, 1000)
        assert w._reserve(grown, now, 1000) == 440
        assert now.config.train.steps == 440 == grown.user_attrs["length"]
        assert grown.user_attrs["seconds_reserved"] == pytest.approx(2.5 + 7.5)
