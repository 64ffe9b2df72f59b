"""The guard that stops collapsed and hopeless trials (``ganhpo.worker._guard``): the rule on
curves with known answers, then real workers whose trials collapse on MNIST, stopped in every
bracket of Hyperband, the one that never prunes included.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from faults import create_study, load, start_worker
from optuna.trial import TrialState
from procs import finish

from ganhpo.components import build_pruner
from ganhpo.spec import ComponentSpec
from ganhpo.worker._guard import GuardRule, Point, verdict

RULE = GuardRule()


def curve(*values: tuple[float, float]) -> list[Point]:
    """Evaluations every 100 steps: (FID, D's loss), FID's std 5."""
    return [Point(100 * (i + 1), fid, 5.0, d) for i, (fid, d) in enumerate(values)]


def test_a_collapse_is_three_evaluations_of_a_perfect_d_and_no_gain() -> None:
    collapsed = curve((1200, 0.5), (1190, 0.03), (1195, 0.01), (1180, 0.004))
    assert verdict(RULE, collapsed[:3], [], length=1000, loss="ns") == ""  # two so far
    why = verdict(RULE, collapsed, [], length=1000, loss="ns")
    assert why.startswith("collapsed at step 400: D's loss under 0.1 for 3 evaluations")
    # D wins but G still learns (FID 10 % better over the window): not collapsed.
    learning = curve((1200, 0.5), (1100, 0.03), (900, 0.01), (800, 0.004))
    assert verdict(RULE, learning, [], length=1000, loss="ns") == ""
    # A healthy D: not collapsed, however flat the FID.
    flat = curve(*[(1200, 1.3)] * 6)
    assert verdict(RULE, flat, [], length=1000, loss="ns") == ""
    # A Wasserstein critic's loss has no floor at 0.
    assert verdict(RULE, collapsed, [], length=1000, loss="wasserstein") == ""


def test_no_hope_is_far_beyond_the_better_finished_trials_late_enough() -> None:
    # Finished trials: two good (their curves at 300: 100 and 150) and two bad ones.
    finished = [
        (40.0, {100: 700.0, 200: 300.0, 300: 100.0}),
        (60.0, {100: 900.0, 200: 400.0, 300: 150.0}),
        (900.0, {100: 1200.0, 200: 1100.0, 300: 1000.0}),
        (950.0, {100: 1300.0, 200: 1200.0, 300: 1100.0}),
    ]
    healthy = 1.3  # D's loss: no collapse
    # At step 300 (0.3 of 1000): 3 x 150 = 450 is the limit, with 3 std (5) of margin.
    far = curve((1200, healthy), (1100, healthy), (466, healthy))
    why = verdict(RULE, far, finished, length=1000, loss="ns")
    assert why.startswith("no hope at step 300: FID 466.0 is over 3 times 150.0")
    near = curve((1200, healthy), (1100, healthy), (464, healthy))  # within the std margin
    assert verdict(RULE, near, finished, length=1000, loss="ns") == ""
    # The same FID before 0.3 of the trial's length: evaluations there are too noisy.
    assert verdict(RULE, far, finished, length=1001, loss="ns") == ""
    # One finished good trial is not enough to compare with.
    assert verdict(RULE, far, finished[:1] + finished[2:3], length=1000, loss="ns") == ""
    # Without the rule (hopeless_ratio None), only collapses stop.
    assert verdict(GuardRule(hopeless_ratio=None), far, finished, length=1000, loss="ns") == ""
    # A NaN std (none measured) adds no margin.
    nan = [*far[:2], Point(300, 451.0, math.nan, healthy)]
    assert verdict(RULE, nan, finished, length=1000, loss="ns").startswith("no hope")


# quick.toml whose every trial collapses within 80 steps (D's learning rate 30 times G's:
# D's loss at 0.03 by step 80, FID stuck near 1,200), Hyperband from step 80 to 240 over
# evaluations every 40 steps: two brackets, the second one's first rung at 240, the end (it
# never prunes). No checkpoints, no PBT: what is tested is where trials stop.
COLLAPSING = {
    "max_trials = 6 ": "max_trials = 8\nmax_steps = 100000 ",
    "every = 80 ": "every = 40 ",
    "lr_g = { low = 5e-5, high = 5e-3, log = true }": "lr_g = { low = 1e-5, high = 1.2e-5 }",
    "lr_d = { low = 5e-5, high = 5e-3, log = true }": "lr_d = { low = 3e-4, high = 3.6e-4 }",
    'loss = { choices = ["ns", "hinge"] }': 'loss = { choices = ["ns"] }',
    'name = "none"': 'name = "hyperband"\nmin_resource = 80\nmax_resource = 240\n'
    "reduction_factor = 3",
    "lr_g = 5e-4\nlr_d = 5e-4": "lr_g = 1e-5\nlr_d = 3e-4",
    "[pruner]": "[strategy]\nguard = true  # what is tested (FAST turns it off)\n\n[pruner]",
}


@pytest.mark.slow  # started first (tests/conftest.py)
def test_collapsed_trials_stop_in_every_hyperband_bracket(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(postgres_url, tmp_path, env, COLLAPSING)
    worker = start_worker(postgres_url, tmp_path, env, "w")
    assert finish(worker) == 0, (tmp_path / "w.log").read_text()

    study = load(postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8
    pruner = build_pruner(
        ComponentSpec(
            "hyperband", (("max_resource", 240), ("min_resource", 80), ("reduction_factor", 3))
        ),
        std_attr="fid_std",
    )
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    pruner._try_initialization(study)  # Optuna's own bracket of each trial (a private helper)
    brackets = {t.number: pruner._get_bracket_id(study, t) for t in trials}
    assert set(brackets.values()) == {0, 1}, brackets  # both brackets hold trials
    for t in trials:
        status = t.user_attrs["status"]
        # Bracket 1 never prunes before the end: the guard stops all of them.
        assert t.state == TrialState.PRUNED, (t.number, brackets[t.number], status)
        if brackets[t.number] == 1:
            assert status.startswith("stopped: collapsed at step "), status
        else:  # bracket 0 prunes at its rung, 80; the first trial there goes on
            assert status.startswith(("stopped: collapsed at step ", "pruned at step 80"))
    first_in_0 = min(n for n, b in brackets.items() if b == 0)
    assert trials[first_in_0].user_attrs["status"].startswith("stopped: collapsed at step ")
    assert "collapsed at step " in (tmp_path / "w.log").read_text()
    for t in trials:
        print(f"trial {t.number} bracket {brackets[t.number]}: {t.user_attrs['status']}")
