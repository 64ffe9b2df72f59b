"""Optuna samplers and pruners by name: what a spec's ``[sampler]`` and ``[pruner]`` may name,
and building them from a :class:`ComponentSpec`.

Below both the spec parser (which builds each once to check it) and the study driver (which
builds them to run the study), so that neither imports the other.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna

from ganhpo.errors import ConfigError
from ganhpo.registry import Registry, closest

__all__ = [
    "NOISE_MARGIN",
    "PRUNERS",
    "SAMPLERS",
    "STD_ATTRS",
    "ComponentSpec",
    "NoiseMarginPruner",
    "build_pruner",
    "build_sampler",
    "validate_components",
]


@dataclass(frozen=True)
class ComponentSpec:
    """A sampler or pruner: a registered name and its keyword arguments."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()
    wrapped: ComponentSpec | None = None  # the pruner that ``patient`` wraps

    @property
    def kwargs(self) -> dict[str, Any]:
        """The arguments as a dict."""
        return dict(self.args)

    def describe(self) -> str:
        """One line, e.g. ``median(n_startup_trials=3, n_warmup_steps=0)``."""
        args = [f"{k}={v!r}" for k, v in self.args]
        if self.wrapped is not None:
            args.append(f"wrapped={self.wrapped.describe()}")
        return f"{self.name}({', '.join(args)})"


SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("sampler")
SAMPLERS.add("tpe", optuna.samplers.TPESampler)  # constant_liar=True by default in Optuna 5
SAMPLERS.add("random", optuna.samplers.RandomSampler)
SAMPLERS.add("gp", optuna.samplers.GPSampler)
SAMPLERS.add("cmaes", optuna.samplers.CmaEsSampler)
SAMPLERS.add("qmc", optuna.samplers.QMCSampler)
SAMPLERS.add("nsga2", optuna.samplers.NSGAIISampler)  # multi-objective: FID against a cost

PRUNERS: Registry[Callable[..., optuna.pruners.BasePruner]] = Registry("pruner")
PRUNERS.add("median", optuna.pruners.MedianPruner)
PRUNERS.add("percentile", optuna.pruners.PercentilePruner)
PRUNERS.add("successive-halving", optuna.pruners.SuccessiveHalvingPruner)
PRUNERS.add("hyperband", optuna.pruners.HyperbandPruner)
PRUNERS.add("patient", optuna.pruners.PatientPruner)
PRUNERS.add("wilcoxon", optuna.pruners.WilcoxonPruner)
PRUNERS.add("threshold", optuna.pruners.ThresholdPruner)
PRUNERS.add("none", optuna.pruners.NopPruner)


def _construct(kind: str, factory: Callable[..., Any], name: str, kwargs: dict[str, Any]) -> Any:
    params = inspect.signature(factory).parameters
    valid = [p for p in params if p not in ("self", "wrapped_pruner")]
    for key in kwargs:
        if key not in valid and key not in params:
            hint = closest(key, valid)
            raise ConfigError(
                f"{kind} {name!r} has no argument {key!r}"
                + (f"; did you mean {hint!r}?" if hint else "")
                + f"; valid: {', '.join(valid)}"
            )
    for key, value in kwargs.items():
        if key in params:
            _check_argument(kind, key, value, params[key])
    try:
        return factory(**kwargs)
    except ImportError as e:
        raise ConfigError(
            f"{kind} {name!r} needs a package that is not installed ({e}); install it "
            "or choose another"
        ) from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{kind} {name!r}: invalid arguments ({e})") from e


# The largest whole number an Optuna argument may be (start-up trials, warm-up steps, a seed):
# numpy's seeds end there, and a count beyond it is a typo that would never end.
_MAX_COUNT = 2**32 - 1


def _expected_type(param: inspect.Parameter) -> type | None:
    """bool, int or float: what an Optuna argument takes, from its default (or, without one,
    its annotation); None for anything else (a string, None, an object)."""
    default = param.default
    if default is inspect.Parameter.empty or default is None:  # "int", "float | None", ...
        name = getattr(param.annotation, "__name__", str(param.annotation))
        name = name.removesuffix(" | None").removeprefix("None | ")
        return {"bool": bool, "int": int, "float": float}.get(name)
    for tp in (bool, int, float):  # bool first: True is an int too
        if isinstance(default, tp):
            return tp
    return None


def _check_argument(kind: str, key: str, value: Any, param: inspect.Parameter) -> None:
    """Refuse what Optuna would take and then misuse (TPE takes n_startup_trials = -5): a
    count must be a whole number from 0 (or its negative default, an "off") to 2^32 - 1, a float
    a finite number, a flag true or false. Other arguments are Optuna's to check."""
    expected = _expected_type(param)
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"{kind}.{key} = {value!r} is invalid; use true or false")
    if expected is int:
        low = min(0, param.default) if isinstance(param.default, int) else 0
        if not (number and isinstance(value, int) and low <= value <= _MAX_COUNT):
            raise ConfigError(
                f"{kind}.{key} = {value!r} is invalid; use a whole number from {low} to "
                f"{_MAX_COUNT:,}"
            )
    if expected is float and not (number and math.isfinite(value)):
        raise ConfigError(f"{kind}.{key} = {value!r} is invalid; use a finite number")


def build_sampler(spec: ComponentSpec, *, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler a spec names; ``seed`` is used unless the spec sets one."""
    factory = SAMPLERS.get(spec.name)
    kwargs = spec.kwargs
    if seed is not None and "seed" in inspect.signature(factory).parameters:
        kwargs.setdefault("seed", seed)  # None: the factory's own default (no seed)
    return _construct("sampler", factory, spec.name, kwargs)  # type: ignore[no-any-return]


# The trial attribute holding each evaluation's sampling std of the objective, {step: std}.
STD_ATTRS = {"fid": "fid_std", "kid": "kid_std_curve"}
# The [pruner] key that makes any pruner noise-aware (see NoiseMarginPruner).
NOISE_MARGIN = "noise_margin"


class NoiseMarginPruner(optuna.pruners.BasePruner):
    """Any Optuna pruner, shown each trial's value ``margin`` sampling stds better than measured.

    An intermediate FID is an estimate from a few thousand samples: its std (recorded with the
    evaluation in the trial attribute ``std_attr`` as {step: std}) says how far it may be from
    the generator's true FID. With ``margin = 2`` a trial is pruned only when even FID − 2·std is
    worse than the wrapped pruner's threshold, so sampling noise alone rarely stops a trial
    that is as good as the others. Steps without a recorded std are judged as measured.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, margin: float, std_attr: str) -> None:
        if not (margin >= 0 and math.isfinite(margin)):
            raise ConfigError(f"pruner.{NOISE_MARGIN} = {margin} is invalid; use a number >= 0")
        self.pruner = pruner
        self.margin = margin
        self.std_attr = std_attr

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        stds = trial.user_attrs.get(self.std_attr)
        std = stds.get(str(step)) if isinstance(stds, dict) and step is not None else None
        if isinstance(std, (int, float)) and math.isfinite(std) and std > 0 and self.margin > 0:
            assert step is not None
            trial = copy.copy(trial)
            values = dict(trial.intermediate_values)
            values[step] -= self.margin * float(std)  # FID and KID are minimised
            trial.intermediate_values = values
        return bool(self.pruner.prune(study, trial))


def build_pruner(
    spec: ComponentSpec, *, std_attr: str = STD_ATTRS["fid"]
) -> optuna.pruners.BasePruner:
    """The pruner a spec names (``patient`` wraps ``[pruner.wrapped]``); with ``noise_margin``
    it is wrapped in a :class:`NoiseMarginPruner` reading the stds from ``std_attr``."""
    kwargs = spec.kwargs
    if NOISE_MARGIN in kwargs:
        margin = kwargs.pop(NOISE_MARGIN)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)):
            raise ConfigError(
                f"pruner.{NOISE_MARGIN} = {margin!r} is invalid; use a number of stds >= 0, e.g. 2"
            )
        inner = replace(spec, args=tuple(kwargs.items()))
        return NoiseMarginPruner(build_pruner(inner), float(margin), std_attr)
    factory = PRUNERS.get(spec.name)
    if spec.name == "patient":
        if spec.wrapped is None:
            raise ConfigError(
                'pruner "patient" wraps another: add [pruner.wrapped] with name = "median" (say)'
            )
        kwargs["wrapped_pruner"] = build_pruner(spec.wrapped)
    elif spec.wrapped is not None:
        raise ConfigError(f"pruner {spec.name!r} wraps nothing; drop [pruner.wrapped]")
    if spec.name == "patient" and "patience" not in kwargs:
        raise ConfigError('pruner "patient" needs patience = N (evaluations without improvement)')
    return _construct("pruner", factory, spec.name, kwargs)  # type: ignore[no-any-return]


def validate_components(sampler: ComponentSpec, pruner: ComponentSpec, *, seed: int) -> None:
    """Build both once so bad names and arguments fail before anything is written."""
    build_sampler(sampler, seed=seed)
    build_pruner(pruner)
