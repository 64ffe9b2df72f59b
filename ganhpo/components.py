"""Optuna samplers and pruners by name: what a spec's ``[sampler]`` and ``[pruner]`` may name,
and building them from a :class:`ComponentSpec`.

Below both the spec parser (which builds each once to check it) and the study driver (which
builds them to run the study), so that neither imports the other.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from ganhpo.errors import ConfigError
from ganhpo.registry import Registry, closest

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "ComponentSpec",
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
    try:
        return factory(**kwargs)
    except ImportError as e:
        raise ConfigError(
            f"{kind} {name!r} needs a package that is not installed ({e}); install it "
            "or choose another"
        ) from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{kind} {name!r}: invalid arguments ({e})") from e


def build_sampler(spec: ComponentSpec, *, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler a spec names; ``seed`` is used unless the spec sets one."""
    factory = SAMPLERS.get(spec.name)
    kwargs = spec.kwargs
    if "seed" in inspect.signature(factory).parameters:
        kwargs.setdefault("seed", seed)
    return _construct("sampler", factory, spec.name, kwargs)  # type: ignore[no-any-return]


def build_pruner(spec: ComponentSpec) -> optuna.pruners.BasePruner:
    """The pruner a spec names (``patient`` wraps ``[pruner.wrapped]``)."""
    factory = PRUNERS.get(spec.name)
    kwargs = spec.kwargs
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
