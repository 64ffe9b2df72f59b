"""Samplers and pruners by name, and the noise-aware pruner, on real in-memory Optuna studies."""

from __future__ import annotations

import optuna
import pytest

from ganhpo.components import ComponentSpec, NoiseMarginPruner, build_pruner
from ganhpo.errors import ConfigError


def study_with(pruner: optuna.pruners.BasePruner, values: list[float]) -> optuna.Study:
    """A study whose completed trials reported ``values`` at step 100."""
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for value in values:
        trial = study.ask()
        trial.report(value, 100)
        study.tell(trial, value)
    return study


def judged(study: optuna.Study, value: float, std: float | None) -> bool:
    """Whether a new trial reporting ``value`` (with sampling std ``std``) at step 100 is pruned."""
    trial = study.ask()
    if std is not None:
        trial.set_user_attr("fid_std", {"100": std})
    trial.report(value, 100)
    return trial.should_prune()


def median(**extra: object) -> ComponentSpec:
    args = {"n_startup_trials": 3, "n_warmup_steps": 0, **extra}
    return ComponentSpec("median", tuple(args.items()))


def test_noise_margin_spares_a_trial_within_its_noise_of_the_median() -> None:
    plain = study_with(build_pruner(median()), [40.0, 50.0, 60.0])
    assert judged(plain, 53.0, std=2.0)  # worse than the median 50: pruned
    aware = study_with(build_pruner(median(noise_margin=2)), [40.0, 50.0, 60.0])
    assert isinstance(aware.pruner, NoiseMarginPruner)
    assert not judged(aware, 53.0, std=2.0)  # 53 - 2 * 2 = 49 is not worse than 50
    assert judged(aware, 55.0, std=2.0)  # 51 still is
    assert judged(aware, 53.0, std=None)  # no std recorded: judged as measured


def test_noise_margin_does_not_change_what_is_stored() -> None:
    study = study_with(build_pruner(median(noise_margin=2)), [40.0, 50.0, 60.0])
    judged(study, 53.0, std=2.0)
    assert study.trials[-1].intermediate_values == {100: 53.0}


def test_noise_margin_wraps_any_pruner_and_keeps_its_own_checks() -> None:
    spec = ComponentSpec("successive-halving", (("min_resource", 1), ("noise_margin", 1.5)))
    pruner = build_pruner(spec, std_attr="kid_std_curve")
    assert isinstance(pruner, NoiseMarginPruner) and pruner.std_attr == "kid_std_curve"
    assert isinstance(pruner.pruner, optuna.pruners.SuccessiveHalvingPruner)
    with pytest.raises(ConfigError, match="has no argument 'patiense'"):
        build_pruner(median(patiense=3, noise_margin=1))


@pytest.mark.parametrize("margin", [-1, float("nan"), float("inf"), "two", True])
def test_bad_noise_margin_is_one_line(margin: object) -> None:
    with pytest.raises(ConfigError, match=r"pruner\.noise_margin = .* is invalid; use a number"):
        build_pruner(median(noise_margin=margin))
