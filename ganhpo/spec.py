"""The one parser of user input: TOML files -> frozen, typed objects.

Only this module reads raw TOML. Unknown keys are rejected with the closest valid key,
wrong types and bad values with the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ganhpo.components import ComponentSpec, validate_components
from ganhpo.errors import ConfigError
from ganhpo.registry import closest
from ganhpo.train.config import SEED_RANGE, TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CONDITIONS",
    "DEFAULT_PRUNER",
    "STUDY_NAME_MAX_LENGTH",
    "Choice",
    "ComponentSpec",
    "Condition",
    "FloatRange",
    "IntRange",
    "ParamSpace",
    "StudySpec",
    "check_study_name",
    "default_pruner",
    "default_sampler",
    "fixed_value",
    "from_dict",
    "load_study_spec",
    "load_toml",
    "load_train_config",
    "parse_study_spec",
    "parse_train_config",
    "study_spec_to_dict",
]

T = TypeVar("T")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read: {e}") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}; fix the syntax there") from e


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int, float, bool, str, X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:  # TOML has no null: a default merged in (a baseline's other values)
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _convert(value, args[0], key)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table ([{key}]), not {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    scalar = _SCALARS.get(tp)
    if scalar is None:
        raise TypeError(f"unsupported annotation {_type_name(tp)} for {key}")  # internal
    return scalar(value, key)


def _as_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} = {value!r} must be true or false")
    return value


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} = {value!r} must be an integer")
    return value


def _as_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} = {value!r} must be a number")
    if not math.isfinite(value):  # TOML writes nan and inf; no setting means either
        raise ConfigError(f"{key} = {value!r} is invalid; use a finite number")
    return float(value)


def _as_str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} = {value!r} must be a string")
    return value


# The TOML scalars a spec's keys take, each with its check (what _convert applies).
_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _as_bool,
    int: _as_int,
    float: _as_float,
    str: _as_str,
}


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a TOML table, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    options_field = getattr(cls, "OPTIONS_FIELD", None)
    if options_field is not None and options_field in data:
        raise ConfigError(
            f"unknown key '{prefix}{options_field}'; write a builder's keys as they are"
        )
    if options_field is not None and cls.accepts_options(data):  # type: ignore[attr-defined]
        # A user builder's own keys ([model] of arch = "package.module:function").
        options = {k: v for k, v in data.items() if k not in names}
        data = {k: v for k, v in data.items() if k in names}
        data[options_field] = tuple(sorted(options.items()))
    for key in data:
        if key not in names:
            valid = [n for n in names if n != options_field]
            hint = closest(key, valid)
            where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            suggestion = f"did you mean {hint!r}?" if hint else f"valid keys: {', '.join(valid)}"
            if options_field is not None:
                suggestion += (
                    '; keys of your own need your own networks (arch = "package.module:function")'
                )
            raise ConfigError(f"unknown key '{prefix}{key}' in {where}; {suggestion}")
    kwargs = {
        k: v if k == options_field else _convert(v, hints[k], f"{prefix}{k}")
        for k, v in data.items()
    }
    return cls(**kwargs)


def _check_batch_fits(config: TrainConfig, batch_sizes: list[tuple[str, int]]) -> None:
    """Refuse a batch larger than the dataset as configured, counted without loading it.

    ``batch_sizes`` pairs each largest batch size with how to name it in the message. A
    dataset that is not on this machine (a path only the workers have) is checked against
    ``dataset.limit`` alone.
    """
    from ganhpo.data import dataset_size

    ds = config.dataset
    size = dataset_size(
        ds.name, split=ds.split, path=ds.path, limit=ds.limit, holdout=ds.holdout or 0.0
    )
    if size is not None:
        where = f", {ds.path}" if ds.path is not None else ""
        what = f"the dataset ({ds.name}{where}, {ds.split} split: {size} images)"
        capped = ds.limit is not None and size == ds.limit
    elif ds.limit is not None:
        size, what, capped = ds.limit, f"dataset.limit = {ds.limit}", True
    else:
        return
    for label, value in batch_sizes:
        if value > size:
            raise ConfigError(
                f"{label} is larger than {what}; use a batch size of at most {size}"
                + (" or raise dataset.limit" if capped else "")
            )


def parse_train_config(data: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from parsed TOML (sections dataset, model, train, eval).

    Besides every value's own range, the batch must fit in the dataset (see
    :func:`ganhpo.data.dataset_size`), so that a run cannot fail on that after loading it.
    """
    try:
        config = from_dict(TrainConfig, data)
        batch = config.train.batch_size
        _check_batch_fits(config, [(f"train.batch_size = {batch}", batch)])
        return config
    except ConfigError as e:
        raise type(e)(f"{source}: {e}") from e


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a ``ganhpo train`` configuration file."""
    return parse_train_config(load_toml(path), source=str(path))


# ------------------------------------------------------------------------------ study specs


@dataclass(frozen=True)
class FloatRange:
    """A float searched in [low, high], log-uniformly when ``log``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclass(frozen=True)
class IntRange:
    """An integer searched in [low, high]."""

    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """A value chosen among ``choices``."""

    choices: tuple[Any, ...]


ParamSpace = FloatRange | IntRange | Choice


STRATEGIES = ("optuna", "grow", "pbt")
# Strategy grow's share of the compute budget for the search, by default: chosen among 0.25,
# 0.5 and 0.75 (and fixed-length trials) on repetitions 0-2 of bench/compute_budget.py, and
# reported on repetitions 3-5 (BENCHMARKS.md 1c). The default strategy of a study with a
# compute budget (and one objective) is grow with it.
DEFAULT_SEARCH_FRACTION = 0.25
# The keys of [strategy] each strategy takes (besides its name).
STRATEGY_KEYS = {
    "optuna": ("guard",),
    "grow": ("guard", "search_fraction", "top"),
    "pbt": ("quantile", "resample_probability", "perturbation_factors", "hyperparams"),
}


@dataclass(frozen=True)
class StrategySpec:
    """How a study spends its budget (``[strategy]``).

    ``optuna`` (the default): the sampler proposes each trial's parameters and the pruner stops
    poor trials early; every trial trains at most ``train.steps``. ``grow`` (a compute budget
    only): the same search until ``search_fraction`` of the compute budget is spent, then the
    ``top`` best completed trials go on from their final training state for what is left of
    the budget, shared equally: the study's best generator may train longer than
    ``train.steps``. Both stop a collapsed or hopeless trial in every bracket of the pruner
    (``guard``, :mod:`ganhpo.worker._guard`). ``pbt``: population-based training (Jaderberg et
    al. 2017, as in Ray Tune): ``study.max_trials`` members train side by side; at each
    evaluation a member in the bottom ``quantile`` continues from the full training state of
    one in the top ``quantile`` (exploit), with its ``hyperparams`` multiplied by one of
    ``perturbation_factors`` or, with ``resample_probability``, drawn again from ``[search]``
    (explore).
    """

    name: str = "optuna"
    quantile: float = 0.25
    resample_probability: float = 0.25
    perturbation_factors: tuple[float, ...] = (0.8, 1.2)
    hyperparams: tuple[str, ...] = ()  # pbt: searched parameters it perturbs
    guard: bool = True  # optuna, grow: stop collapsed and hopeless trials
    search_fraction: float = DEFAULT_SEARCH_FRACTION  # grow: the search's share of the budget
    top: int = 1  # grow: how many of the best trials go on


@dataclass(frozen=True)
class StudySpec:
    """A whole study: what to train, what to search, how to sample and prune."""

    name: str
    base: TrainConfig  # the fixed values; searched ones override base.train
    search: tuple[tuple[str, ParamSpace], ...]  # ordered: a condition's parent comes first
    sampler: ComponentSpec
    pruner: ComponentSpec
    objective: str = "fid"  # fid or kid
    # A multi-objective study's second objective, minimised with the first (COSTS), or None.
    cost: str | None = None
    direction: str = "minimize"
    seed: int = 0
    max_trials: int | None = None  # the total budget shared by all workers
    # The compute budget shared by all workers: training steps (G updates) over all trials.
    max_steps: int | None = None
    # The compute budget in device time (GPU-hours): training and evaluation over all trials.
    max_device_hours: float | None = None
    baselines: tuple[tuple[tuple[str, Any], ...], ...] = ()  # configurations enqueued first
    description: str = ""
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats
    grace_period: int = 120  # a trial silent this long is failed and handed to another worker
    max_retry: int = 3  # times one trial is handed over before it stays failed
    strategy: StrategySpec = StrategySpec()

    @property
    def objectives(self) -> tuple[str, ...]:
        """What the study minimises: the metric, then the cost of a multi-objective study."""
        return (self.objective,) if self.cost is None else (self.objective, self.cost)

    @property
    def space(self) -> dict[str, ParamSpace]:
        """The search space as a dict."""
        return dict(self.search)


@dataclass(frozen=True)
class Condition:
    """When a searched parameter exists: its ``parent`` has ``value`` (or, with ``negate``,
    any other value)."""

    parent: str
    value: Any
    negate: bool = False

    def holds(self, parent_value: Any) -> bool:
        return (parent_value == self.value) != self.negate

    def __str__(self) -> str:
        return f"{self.parent} {'!=' if self.negate else '='} {self.value!r}"


# A searched parameter that only exists under one value of its parent (or all but one).
CONDITIONS: dict[str, Condition] = {
    "gp_weight": Condition("penalty", "gp"),
    "r1_gamma": Condition("penalty", "r1"),
    "ema_decay": Condition("ema", True),
    "fm_weight": Condition("feature_matching", True),
    "cr_weight": Condition("consistency", True),
    "rotation_weight": Condition("rotation", True),
    # resnet's D always has spectral normalisation: under it, the choice would be noise.
    "spectral_norm": Condition("arch", "resnet", negate=True),
}


def fixed_value(base: TrainConfig, name: str) -> Any:
    """The value a trial has for ``name`` (a ``[train]`` or ``[model]`` key) unless it is
    searched."""
    if hasattr(base.train, name):
        return getattr(base.train, name)
    return getattr(base.model, name)


_NOT_SEARCHABLE = {"steps": "it is the budget", "checkpoint_every": "it is not a hyperparameter"}
# The largest budgets a study may set: beyond them a value is a typo (2**63 - 1 trials).
MAX_TRIALS = 1_000_000
MAX_TOTAL_STEPS = 1_000_000_000_000  # a million trials of a million steps
MAX_DEVICE_HOURS = 1_000_000.0  # 114 device-years

_STUDY_KEYS = (
    "name", "objective", "direction", "seed", "max_trials", "max_steps", "max_device_hours",
    "description",
    "heartbeat_interval", "grace_period", "max_retry",
)  # fmt: skip

# (lowest, highest, unit) of the fault-tolerance settings: beyond these a value is a mistake
# (an hour between heartbeats, a week of silence, 100 hand-overs), and a heartbeat interval of
# 1e12 s would overflow the worker's timed wait.
_FAULT_BOUNDS = {
    "heartbeat_interval": (1, 3600, " s"),
    "grace_period": (2, 7 * 24 * 3600, " s (a week)"),
    "max_retry": (0, 100, ""),
}

# The longest study name Optuna's database holds: its column studies.study_name is a
# VARCHAR(MAX_INDEXED_STRING_LENGTH) (optuna/storages/_rdb/models.py), which PostgreSQL
# enforces when the study is created.
STUDY_NAME_MAX_LENGTH = 512
# Characters a study name cannot hold: control characters (NUL is refused by PostgreSQL, the
# others break one-line output and command lines), line separators, and the surrogates that
# stand for bytes that were not UTF-8 on a command line (no database can encode them).
_NAME_FORBIDDEN = {
    "Cc": "a control character",
    "Cs": "a byte that is not UTF-8",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def _shorten(text: str, keep: int = 40) -> str:
    return repr(text) if len(text) <= keep else repr(text[:keep]) + "..."


def check_study_name(name: object, key: str) -> str:
    """``name`` when every study database can store it; else a ConfigError naming ``key``.

    A study name is a non-blank string of at most :data:`STUDY_NAME_MAX_LENGTH` characters
    without control characters. Used for ``study.name`` and ``ganhpo study create --name``.
    """
    if not isinstance(name, str) or not name.strip():
        got = "" if name is None else f"; got {name!r}"
        raise ConfigError(f'{key} must be a non-empty string such as "mnist-dcgan"{got}')
    if len(name) > STUDY_NAME_MAX_LENGTH:
        raise ConfigError(
            f"{key} = {_shorten(name)} has {len(name)} characters; the study database holds "
            f"at most {STUDY_NAME_MAX_LENGTH}: use a shorter name"
        )
    for char in name:
        problem = _NAME_FORBIDDEN.get(unicodedata.category(char))
        if problem is not None:
            raise ConfigError(
                f"{key} = {_shorten(name)} contains {char!r}, {problem}; "
                "use printable characters only"
            )
    return name


def _reject_unknown(table: dict[str, Any], valid: list[str], where: str) -> None:
    for key in table:
        if key not in valid:
            hint = closest(key, valid)
            suggestion = f"did you mean {hint!r}?" if hint else f"valid keys: {', '.join(valid)}"
            raise ConfigError(f"unknown key {key!r} in {where}; {suggestion}")


def _param_type(name: str, raw: Any, base: TrainConfig) -> Any:
    """The type of a searched parameter: a ``[train]`` or ``[model]`` key's annotation; for a
    user builder's own key, its fixed value's type, else what the range is written in."""
    from ganhpo.train.config import MODEL_SEARCHABLE, ModelConfig, TrainParams

    train = typing.get_type_hints(TrainParams)
    if name in train:
        return train[name]
    if name in MODEL_SEARCHABLE:
        tp = typing.get_type_hints(ModelConfig)[name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if args else tp  # width_g: int | None -> int
    fixed = dict(base.model.options)
    if name in fixed:
        return type(fixed[name])
    if isinstance(raw, dict) and "choices" not in raw:
        bounds = [raw.get("low"), raw.get("high")]
        return float if any(isinstance(b, float) for b in bounds) else int
    return object  # choices of a builder's key: any TOML values


def _parse_param(name: str, raw: Any, base: TrainConfig) -> ParamSpace:
    """One parameter of [search]: a searchable key, a table of choices or a range."""
    key = f"search.{name}"
    _check_searchable(name, base)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{key} = {raw!r} must be a table such as {{ low = 1e-4, high = 1e-2, log = true }} "
            "or { choices = [...] }; put fixed values in [train] or [model]"
        )
    tp = _param_type(name, raw, base)
    if "choices" in raw:
        return _parse_choices(name, raw, tp, base)
    if tp in (int, float):
        return _parse_range(name, raw, tp, base)
    raise ConfigError(f"{key} is a {tp.__name__}: give {{ choices = [...] }}")


def _check_searchable(name: str, base: TrainConfig) -> None:
    """Refuse a [search] key that names no searchable setting (a user's builder has its own)."""
    from ganhpo.train.config import MODEL_SEARCHABLE, TrainParams

    fields = [f.name for f in dataclasses.fields(TrainParams)] + sorted(MODEL_SEARCHABLE)
    if name in _NOT_SEARCHABLE:
        raise ConfigError(
            f"search.{name} cannot be searched: {_NOT_SEARCHABLE[name]}; set it in [train]"
        )
    if name not in fields and not base.model.custom:
        hint = closest(name, [f for f in fields if f not in _NOT_SEARCHABLE])
        raise ConfigError(
            f"unknown search parameter {name!r}"
            + (f"; did you mean {hint!r}?" if hint else "")
            + f"; searchable: {', '.join(f for f in fields if f not in _NOT_SEARCHABLE)}"
            + ' (and, with arch = "package.module:function", the builder\'s own keys)'
        )


def _parse_choices(name: str, raw: dict[str, Any], tp: Any, base: TrainConfig) -> Choice:
    """``{ choices = [...] }``: each a valid value of its type, once."""
    key = f"search.{name}"
    _reject_unknown(raw, ["choices"], f"[{key}]")
    choices = raw["choices"]
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{key}.choices must be a non-empty list")
    if tp is not object:
        choices = [_convert(c, tp, f"{key}.choices") for c in choices]
    if len(set(choices)) != len(choices):
        raise ConfigError(f"{key}.choices has duplicates; list each value once")
    for value in choices:  # every choice must make a valid configuration
        _check_searched(base, name, value, f"{key}.choices", choice=True)
    return Choice(tuple(choices))


def _parse_range(
    name: str, raw: dict[str, Any], tp: Any, base: TrainConfig
) -> FloatRange | IntRange:
    """``{ low, high, log, step }`` of a number: both ends valid values, low <= high."""
    key = f"search.{name}"
    _reject_unknown(raw, ["low", "high", "log", "step"], f"[{key}]")
    for bound in ("low", "high"):
        if bound not in raw:
            raise ConfigError(f"{key} needs {bound} (or use choices = [...])")
    cls: type[FloatRange | IntRange] = FloatRange if tp is float else IntRange
    rng = from_dict(cls, raw, prefix=f"{key}.")
    # Each end must make a valid configuration; checked first, so that the advice below
    # (log = false) is only given where it works.
    for bound in ("low", "high"):
        value = getattr(rng, bound)
        _check_searched(base, name, value, f"{key}.{bound}", choice=False)
    if rng.low > rng.high:
        raise ConfigError(f"{key}: low = {rng.low} is greater than high = {rng.high}; swap them")
    if rng.log and rng.low <= 0:
        raise ConfigError(
            f"{key}: a log range needs low > 0, got low = {rng.low}; "
            "use a positive low or log = false"
        )
    if rng.log and rng.step is not None and rng.step != 1:
        raise ConfigError(f"{key}: step cannot be used with log = true; drop one of them")
    if rng.step is not None and rng.step <= 0:
        raise ConfigError(f"{key}.step = {rng.step} must be positive")
    return rng


def _check_searched(base: TrainConfig, name: str, value: Any, where: str, *, choice: bool) -> None:
    """Refuse a searched value that makes no valid configuration, in words that name what the
    user wrote (``where``: ``search.lr_g.low``, ``search.loss.choices``), not the ``train.`` key
    the value sets."""
    try:
        base.replace_params(**{name: value})
    except ConfigError as e:
        message = str(e)
        for section in ("train", "model"):  # their words: "<as_set> is invalid; use..."
            as_set = f"{section}.{name} = {value!r}"
            if message.startswith(as_set):
                written = f"{where}: {value!r}" if choice else f"{where} = {value!r}"
                raise type(e)(written + message[len(as_set) :]) from e
        raise type(e)(f"{where}: {message}") from e


def _contains(space: ParamSpace, value: Any) -> bool:
    if isinstance(space, Choice):
        return value in space.choices
    return bool(space.low <= value <= space.high)


def _parse_component(raw: Any, key: str, kind: str) -> ComponentSpec:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f'[{key}] needs name = "..." (the {kind})')
    raw = dict(raw)
    name = raw.pop("name")
    if not isinstance(name, str):
        raise ConfigError(f'{key}.name = {name!r} must be a string, e.g. name = "..." (the {kind})')
    wrapped = raw.pop("wrapped", None)
    inner = _parse_component(wrapped, f"{key}.wrapped", kind) if wrapped is not None else None
    return ComponentSpec(name=name, args=tuple(sorted(raw.items())), wrapped=inner)


# A multi-objective study's second objective: what a trial's generator costs.
COSTS = {
    "g_params": "the generator's parameter count",
    "train_seconds": "the trial's training time on its device, in seconds",
}
_OBJECTIVE_HELP = (
    'use "fid", "kid", or a metric and a cost to minimise together, e.g. ["fid", "g_params"] '
    f"(costs: {', '.join(COSTS)})"
)


def _parse_objective(raw: Any) -> tuple[str, str | None]:
    """``study.objective``: a metric (``fid``/``kid``), or ``[metric, cost]`` for a
    multi-objective study that weighs the metric against a cost of :data:`COSTS`."""
    if isinstance(raw, str) and raw in ("fid", "kid"):
        return raw, None
    if isinstance(raw, list) and len(raw) == 2 and raw[0] in ("fid", "kid") and raw[1] in COSTS:
        return raw[0], raw[1]
    raise ConfigError(f"study.objective = {raw!r} is invalid; {_OBJECTIVE_HELP}")


def default_sampler(max_trials: int | None) -> ComponentSpec:
    """ganhpo's sampler when a spec has no ``[sampler]``: multivariate TPE whose random start-up
    is a tenth of the budget, 5 to 10 trials (10 without a budget).

    Optuna's fixed 10 start-up trials are half of a 20-trial budget: ``bench/search_efficiency.py``
    measured the start-up that follows the budget finding a better FID sooner (BENCHMARKS.md).
    """
    startup = 10 if max_trials is None else min(10, max(5, max_trials // 10))
    return ComponentSpec("tpe", (("multivariate", True), ("n_startup_trials", startup)))


# ganhpo's pruner when a spec with a trial budget has no [pruner]: the median rule from the
# first evaluation on, once 3 trials have finished (see default_sampler for the measurement).
DEFAULT_PRUNER = ComponentSpec("median", (("n_startup_trials", 3), ("n_warmup_steps", 0)))


def default_pruner(base: TrainConfig, compute_budget: bool) -> ComponentSpec:
    """ganhpo's pruner when a spec has no ``[pruner]``.

    With a compute budget (``study.max_steps`` or ``study.max_device_hours``): Hyperband over
    the trial's full length (``train.steps``), its first rung at the first evaluation, a third
    of the trials going on at each rung. Trials grow: the promising ones reach the length the
    final generator trains for, the rest stop early. ``bench/compute_budget.py`` measured it
    (with TPE and the preset as first trial) the only method among the best three at both
    budgets, 4 and 10 full trials, with the lowest mean over the two; the median rule spent 3
    of 4 full trials before it pruned (BENCHMARKS.md 1b). With a trial budget only, or no
    evaluation before the end: :data:`DEFAULT_PRUNER`.
    """
    every, steps = base.eval.every, base.train.steps
    if not compute_budget or not every or every >= steps:
        return DEFAULT_PRUNER
    return ComponentSpec(
        "hyperband", (("max_resource", steps), ("min_resource", every), ("reduction_factor", 3))
    )


def parse_study_spec(
    data: dict[str, Any], *, source: str = "spec", check_data: bool = True
) -> StudySpec:
    """A :class:`StudySpec` from parsed TOML, one table at a time; every error names the key
    and the fix (and ``source``, the file or study it came from)."""
    try:
        valid_tables = [
            "study", "dataset", "model", "train", "eval", "device",
            "search", "sampler", "pruner", "baselines", "strategy",
        ]  # fmt: skip
        _reject_unknown(data, valid_tables, "the top level")
        study = _parse_study_table(data.get("study"))
        base = _parse_base(data, study["objective"], study["seed"])
        parsed = _parse_search(data, base)
        order = sorted(parsed, key=lambda n: n in CONDITIONS)
        search = tuple((n, parsed[n]) for n in order)
        sampler, pruner, strategy = _parse_components(data, base, parsed, study)
        baselines = [
            _parse_baseline(i, raw, base, parsed) for i, raw in enumerate(data.get("baselines", []))
        ]
        if check_data:  # a stored spec was checked when its study was created
            _check_batch_fits(base, _batches(base, parsed, baselines))
        return StudySpec(
            base=base,
            search=search,
            sampler=sampler,
            pruner=pruner,
            baselines=tuple(baselines),
            strategy=strategy,
            **study,
        )
    except ConfigError as e:
        raise type(e)(f"{source}: {e}") from e


def _parse_study_table(study: Any) -> dict[str, Any]:
    """[study]: its name, objective (and cost), seed, budgets and fault-tolerance timings, as
    :class:`StudySpec`'s keywords."""
    if not isinstance(study, dict):
        raise ConfigError('a [study] table is needed, with at least name = "..."')
    _reject_unknown(study, list(_STUDY_KEYS), "[study]")
    name = check_study_name(study.get("name"), "study.name")
    objective, cost = _parse_objective(study.get("objective", "fid"))
    direction = study.get("direction", "minimize")
    if direction != "minimize":
        raise ConfigError(f"study.direction = {direction!r} is invalid; FID and KID are minimized")
    seed = _convert(study.get("seed", 0), int, "study.seed")
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigError(
            f"study.seed = {seed} is invalid; use a whole number from {SEED_RANGE[0]} to "
            f"{SEED_RANGE[1]}"
        )
    description = study.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"study.description = {description!r} must be a string")
    return {
        "name": name,
        "objective": objective,
        "cost": cost,
        "direction": direction,
        "seed": seed,
        "description": description,
        **_parse_budgets(study),
        **_parse_fault(study),
    }


def _parse_budgets(study: dict[str, Any]) -> dict[str, Any]:
    """[study]'s budgets: trials, training steps and device-hours over all trials."""
    max_trials = study.get("max_trials")
    if max_trials is not None:
        max_trials = _convert(max_trials, int, "study.max_trials")
        if max_trials < 1:
            raise ConfigError(f"study.max_trials = {max_trials} must be at least 1")
        if max_trials > MAX_TRIALS:
            raise ConfigError(
                f"study.max_trials = {max_trials} is invalid; use at most {MAX_TRIALS:,}"
            )
    max_steps = study.get("max_steps")
    if max_steps is not None:
        max_steps = _convert(max_steps, int, "study.max_steps")
        if max_steps < 1:
            raise ConfigError(
                f"study.max_steps = {max_steps} must be at least 1 (training steps over all "
                "trials); drop it for no compute budget"
            )
        if max_steps > MAX_TOTAL_STEPS:
            raise ConfigError(
                f"study.max_steps = {max_steps} is invalid; use at most {MAX_TOTAL_STEPS:,} "
                "(training steps over all trials), or drop it for no compute budget"
            )
    max_device_hours: float | None = None
    raw_hours = study.get("max_device_hours")
    if raw_hours is not None:
        if isinstance(raw_hours, bool) or not isinstance(raw_hours, int | float):
            _convert(raw_hours, float, "study.max_device_hours")  # says it is no number
        if not 0 < raw_hours < math.inf:  # nan and inf too
            raise ConfigError(
                f"study.max_device_hours = {raw_hours} must be a positive number "
                "(device-hours of training and evaluation over all trials, e.g. 0.5); drop "
                "it for no device-time budget"
            )
        max_device_hours = float(raw_hours)
        if max_device_hours > MAX_DEVICE_HOURS:
            raise ConfigError(
                f"study.max_device_hours = {raw_hours} is invalid; use at most "
                f"{MAX_DEVICE_HOURS:g} (device-hours over all trials)"
            )
    return {
        "max_trials": max_trials,
        "max_steps": max_steps,
        "max_device_hours": max_device_hours,
    }


def _parse_fault(study: dict[str, Any]) -> dict[str, int]:
    """[study]'s heartbeat interval, grace period and retries (what is set, and the grace)."""
    fault = {}
    for key, (low, high, unit) in _FAULT_BOUNDS.items():
        if key in study:
            fault[key] = _convert(study[key], int, f"study.{key}")
            if not low <= fault[key] <= high:
                raise ConfigError(
                    f"study.{key} = {fault[key]} is invalid; use {low} to {high}{unit}"
                )
    interval = fault.get("heartbeat_interval", 30)
    fault.setdefault("grace_period", max(120, 4 * interval))
    if fault["grace_period"] <= interval:
        raise ConfigError(
            "study.grace_period must be longer than study.heartbeat_interval, or live "
            "trials are taken for dead; make it at least twice as long"
        )
    return fault


def _parse_base(data: dict[str, Any], objective: str, seed: int) -> TrainConfig:
    """[dataset], [model], [train], [eval] and [device]: the configuration every trial starts
    from (KID at every evaluation where KID is the objective)."""
    sections = ("dataset", "model", "train", "eval", "device")
    train_part = {k: data[k] for k in sections if k in data}
    if objective == "kid":  # the pruner sees KID at every evaluation
        eval_part = train_part.get("eval", {})
        if isinstance(eval_part, dict) and eval_part.get("kid", "every") != "every":
            raise ConfigError(
                f"eval.kid = {eval_part['kid']!r} cannot score a study whose objective is "
                'kid; use eval.kid = "every" or drop it'
            )
        train_part["eval"] = (
            {**eval_part, "kid": "every"} if isinstance(eval_part, dict) else eval_part
        )
    return from_dict(TrainConfig, {**train_part, "seed": seed})


def _parse_search(data: dict[str, Any], base: TrainConfig) -> dict[str, ParamSpace]:
    """[search]: each parameter's space; a conditional one only where its condition can hold."""
    search_raw = data.get("search", {})
    if not isinstance(search_raw, dict):
        raise ConfigError("[search] must be a table of parameters")
    if "search" in data and not search_raw:
        raise ConfigError(
            "[search] is empty; add a parameter to search, e.g. "
            "lr_g = { low = 1e-4, high = 1e-2, log = true }"
        )
    parsed = {n: _parse_param(n, raw, base) for n, raw in search_raw.items()}
    for child, condition in CONDITIONS.items():
        if child not in parsed:
            continue
        parent = condition.parent
        parent_space = parsed.get(parent)
        possible = (
            parent_space.choices
            if isinstance(parent_space, Choice)
            else (fixed_value(base, parent),)
        )
        if not any(condition.holds(v) for v in possible):
            fix = (
                f"add another {parent}"
                if condition.negate
                else f"add {condition.value!r} to {parent}"
            )
            raise ConfigError(
                f"search.{child} is never used: it needs {condition}, which "
                f"{'is not among the choices' if parent_space else 'is not set'}; "
                f"{fix} or drop search.{child}"
            )
    return parsed


def _parse_components(
    data: dict[str, Any], base: TrainConfig, parsed: dict[str, ParamSpace], study: dict[str, Any]
) -> tuple[ComponentSpec, ComponentSpec, StrategySpec]:
    """[sampler], [pruner] and [strategy] (the defaults where absent), checked together."""
    max_trials, seed, cost = study["max_trials"], study["seed"], study["cost"]
    budget = study["max_steps"] is not None or study["max_device_hours"] is not None
    sampler = (
        _parse_component(data["sampler"], "sampler", "sampler")
        if "sampler" in data
        else default_sampler(max_trials)
    )
    pruner = (
        _parse_component(data["pruner"], "pruner", "pruner")
        if "pruner" in data
        else default_pruner(base, budget)
    )
    strategy = _parse_strategy(
        data.get("strategy"),
        base,
        parsed,
        max_trials,
        data,
        compute_budget=budget,
        single_objective=cost is None,
    )
    if strategy.name == "pbt":
        pruner = ComponentSpec("none")  # members are not pruned: the worst ones exploit
    if cost is not None:
        sampler, pruner = _multi_objective(sampler, pruner, strategy, "pruner" in data)
    validate_components(sampler, pruner, seed=seed)
    return sampler, pruner, strategy


def _parse_baseline(
    i: int, raw: Any, base: TrainConfig, parsed: dict[str, ParamSpace]
) -> tuple[tuple[str, Any], ...]:
    """[[baselines]] entry ``i``: [train] and [model] values, each inside its search space."""
    from ganhpo.train.config import MODEL_SEARCHABLE

    if not isinstance(raw, dict):
        raise ConfigError(f"baselines[{i}] must be a table of [train] values")
    train_names = {f.name for f in dataclasses.fields(type(base.train))}
    train_raw = {k: v for k, v in raw.items() if k in train_names}
    merged = {**dataclasses.asdict(base.train), **train_raw}
    params = from_dict(type(base.train), merged, prefix=f"baselines[{i}].")
    values = {k: getattr(params, k) for k in train_raw}
    # [model] keys (and a builder's own): checked as the trial would apply them.
    network = {k: v for k, v in raw.items() if k not in train_names}
    for key, value in network.items():
        where = f"baselines[{i}].{key}"
        if key not in MODEL_SEARCHABLE and not base.model.custom:
            known = sorted(train_names | MODEL_SEARCHABLE)
            hint = closest(key, known)
            raise ConfigError(
                f"unknown key '{where}' in [baselines[{i}]]; "
                + (f"did you mean {hint!r}?" if hint else f"valid keys: {', '.join(known)}")
            )
        tp = _param_type(key, {"choices": []}, base)  # the key's type, if it has one
        value = value if tp is object else _convert(value, tp, where)
        _check_searched(base, key, value, where, choice=False)
        values[key] = value
    for key in raw:
        space = parsed.get(key)
        if space is not None and not _contains(space, values[key]):
            raise ConfigError(
                f"baselines[{i}].{key} = {raw[key]!r} is outside search.{key}; "
                f"widen search.{key} or change the baseline"
            )
    return tuple(sorted(values.items()))


def _batches(
    base: TrainConfig, parsed: dict[str, ParamSpace], baselines: list[tuple[tuple[str, Any], ...]]
) -> list[tuple[str, int]]:
    """The largest batch each part of the spec may train with, named as the spec names it."""
    batch_space = parsed.get("batch_size")
    if isinstance(batch_space, Choice | IntRange):
        largest = max(batch_space.choices) if isinstance(batch_space, Choice) else batch_space.high
        batches = [(f"search.batch_size (up to {largest})", largest)]
    else:
        batches = [(f"train.batch_size = {base.train.batch_size}", base.train.batch_size)]
    batches += [
        (f"baselines[{i}].batch_size = {value}", value)
        for i, baseline in enumerate(baselines)
        for key, value in baseline
        if key == "batch_size"
    ]
    return batches


# Samplers that cannot weigh two objectives (Optuna's CMA-ES is single-objective).
_SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)


def _multi_objective(
    sampler: ComponentSpec, pruner: ComponentSpec, strategy: StrategySpec, pruner_given: bool
) -> tuple[ComponentSpec, ComponentSpec]:
    """The sampler and pruner of a multi-objective study, or a ConfigError: Optuna's pruners
    rank trials by one objective, so such a study trains every trial to its length."""
    if strategy.name in ("pbt", "grow"):
        raise ConfigError(
            f"strategy {strategy.name} ranks trials by one objective; use study.objective = "
            f'"fid" with {strategy.name}, or drop [strategy] to weigh FID against a cost'
        )
    if pruner_given and pruner.name != "none":
        raise ConfigError(
            f"pruner {pruner.name!r} cannot prune a study with two objectives (Optuna's pruners "
            "rank one); drop [pruner]: every trial then trains to its length"
        )
    if sampler.name in _SINGLE_OBJECTIVE_SAMPLERS:
        raise ConfigError(
            f"sampler {sampler.name!r} optimises one objective; use tpe, nsga2, gp, random or "
            "qmc for study.objective with a cost"
        )
    return sampler, ComponentSpec("none")


def _parse_strategy(
    raw: Any,
    base: TrainConfig,
    space: dict[str, ParamSpace],
    max_trials: int | None,
    data: dict[str, Any],
    *,
    compute_budget: bool,
    single_objective: bool,
) -> StrategySpec:
    """The ``[strategy]`` table, checked against the rest of the spec; without one,
    :func:`default_strategy`."""
    if raw is None:
        return default_strategy(compute_budget and single_objective)
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError('[strategy] must be a table with name = "optuna", "grow" or "pbt"')
    raw = dict(raw)
    # Without a name, the default of this budget (grow for a compute budget), its keys changed.
    name = raw.get("name", default_strategy(compute_budget and single_objective).name)
    if name not in STRATEGIES:
        raise ConfigError(
            f"strategy.name = {name!r} is invalid; use {', '.join(map(repr, STRATEGIES))}"
        )
    allowed = STRATEGY_KEYS[name]
    for key in raw:
        if key == "name" or key in allowed:
            continue
        owner = next((n for n, keys in STRATEGY_KEYS.items() if key in keys), None)
        if owner is not None:
            raise ConfigError(
                f'strategy.{key} belongs to strategy "{owner}", not "{name}"; drop it or set '
                f'strategy.name = "{owner}"'
            )
        names = ["name", *allowed]
        hint = closest(key, names)
        raise ConfigError(
            f"unknown key 'strategy.{key}'; "
            + (f"did you mean {hint!r}?" if hint else f"valid keys: {', '.join(names)}")
        )
    values: dict[str, Any] = {"name": name}
    if "guard" in raw:
        values["guard"] = _convert(raw["guard"], bool, "strategy.guard")
    if name == "pbt":
        values |= _parse_pbt(raw, base, space, max_trials, data)
    elif name == "grow":
        values |= _parse_grow(raw, base, compute_budget)
    return StrategySpec(**values)


def default_strategy(compute_budget: bool) -> StrategySpec:
    """ganhpo's strategy when a spec has no ``[strategy]``: with a compute budget (and one
    objective), ``grow`` with :data:`DEFAULT_SEARCH_FRACTION` of it for the search, so that the
    best generator may train beyond ``train.steps`` (``bench/compute_budget.py``: BENCHMARKS.md
    1c); else ``optuna``, every trial at most ``train.steps``."""
    if compute_budget:
        return StrategySpec(name="grow", search_fraction=DEFAULT_SEARCH_FRACTION)
    return StrategySpec()


def _parse_grow(raw: dict[str, Any], base: TrainConfig, compute_budget: bool) -> dict[str, Any]:
    """The keys of strategy ``grow``."""
    values: dict[str, Any] = {}
    if not compute_budget:
        raise ConfigError(
            "strategy grow splits a compute budget between searching and growing; set "
            "study.max_steps or study.max_device_hours, or drop [strategy]"
        )
    if "search_fraction" in raw:
        fraction = _convert(raw["search_fraction"], float, "strategy.search_fraction")
        if not 0 < fraction < 1:
            raise ConfigError(
                f"strategy.search_fraction = {raw['search_fraction']!r} is invalid; use a "
                "number between 0 and 1 (the share of the compute budget the search spends, "
                "e.g. 0.5)"
            )
        values["search_fraction"] = fraction
    if "top" in raw:
        top = _convert(raw["top"], int, "strategy.top")
        if not 1 <= top <= 64:
            raise ConfigError(
                f"strategy.top = {raw['top']!r} is invalid; use 1 to 64 (how many of the best "
                "trials go on)"
            )
        values["top"] = top
    return values


def _parse_pbt(
    raw: dict[str, Any],
    base: TrainConfig,
    space: dict[str, ParamSpace],
    max_trials: int | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """The keys of strategy ``pbt``, checked against the rest of the spec."""
    from ganhpo.train import ADOPTABLE

    for key in ("perturbation_factors", "hyperparams"):
        if key in raw:
            if not isinstance(raw[key], list) or not raw[key]:
                raise ConfigError(f"strategy.{key} must be a non-empty list")
            raw[key] = tuple(raw[key])
    values: dict[str, Any] = {}
    for key in ("quantile", "resample_probability"):
        if key in raw:
            values[key] = _convert(raw[key], float, f"strategy.{key}")
    if "perturbation_factors" in raw:
        values["perturbation_factors"] = tuple(
            _convert(v, float, "strategy.perturbation_factors") for v in raw["perturbation_factors"]
        )
    searched = [n for n, p in space.items() if n in ADOPTABLE and isinstance(p, FloatRange)]
    if "hyperparams" in raw:
        for n in raw["hyperparams"]:
            if n not in searched:
                raise ConfigError(
                    f"strategy.hyperparams names {n!r}, which PBT cannot perturb; use searched "
                    f"float ranges among {', '.join(ADOPTABLE)}"
                    + (f" (searched here: {', '.join(searched)})" if searched else "")
                )
        values["hyperparams"] = tuple(str(n) for n in raw["hyperparams"])
    else:
        values["hyperparams"] = tuple(searched)
    _check_pbt_values(StrategySpec(name="pbt", **values))
    _check_pbt_fits(base, max_trials, data)
    return values


def _check_pbt_values(strategy: StrategySpec) -> None:
    """Strategy pbt's own keys in range."""
    from ganhpo.train import ADOPTABLE

    if not strategy.hyperparams:
        raise ConfigError(
            "strategy pbt perturbs searched float ranges of "
            f"{', '.join(ADOPTABLE)}; add one to [search], e.g. lr_g = "
            "{ low = 5e-5, high = 5e-3, log = true }"
        )
    if not 0 < strategy.quantile <= 0.5:
        raise ConfigError(f"strategy.quantile = {strategy.quantile} is invalid; use (0, 0.5]")
    if not 0 <= strategy.resample_probability <= 1:
        raise ConfigError(
            f"strategy.resample_probability = {strategy.resample_probability} is invalid; use "
            "0 to 1"
        )
    if any(not (f > 0 and f < float("inf")) for f in strategy.perturbation_factors):
        raise ConfigError("strategy.perturbation_factors must be positive numbers, e.g. [0.8, 1.2]")


def _check_pbt_fits(base: TrainConfig, max_trials: int | None, data: dict[str, Any]) -> None:
    """The rest of the spec as strategy pbt needs it: a population, an evaluation (and a
    checkpoint) every interval, no pruner."""
    if max_trials is None or max_trials < 2:
        raise ConfigError(
            "strategy pbt trains a population of study.max_trials members; set "
            "study.max_trials to 2 or more (4 to 16 is usual)"
        )
    if base.eval.every < 1 or base.eval.every >= base.train.steps:
        raise ConfigError(
            "strategy pbt exploits and explores at every evaluation; set eval.every to fewer "
            f"steps than train.steps = {base.train.steps} (e.g. {max(1, base.train.steps // 10)})"
        )
    every = base.train.checkpoint_every
    if every is not None and every != base.eval.every:
        raise ConfigError(
            "strategy pbt checkpoints at every evaluation; drop train.checkpoint_every"
        )
    if "pruner" in data and _parse_component(data["pruner"], "pruner", "pruner").name != "none":
        raise ConfigError(
            "strategy pbt does not prune (the worst members exploit the best); drop [pruner]"
        )


def load_study_spec(path: str | Path) -> StudySpec:
    """Read a study spec file from ``studies/``."""
    return parse_study_spec(load_toml(path), source=str(path))


def study_spec_to_dict(spec: StudySpec) -> dict[str, Any]:
    """The resolved spec as TOML-compatible data that :func:`parse_study_spec` reads back."""
    from ganhpo.train.config import config_to_dict

    base = config_to_dict(spec.base)
    base.pop("seed")

    def component(c: ComponentSpec) -> dict[str, Any]:
        out: dict[str, Any] = {"name": c.name, **c.kwargs}
        if c.wrapped is not None:
            out["wrapped"] = component(c.wrapped)
        return out

    def strategy(st: StrategySpec) -> dict[str, Any]:
        keys = ("name", *STRATEGY_KEYS[st.name])
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(st).items()
            if k in keys
        }

    def param(p: ParamSpace) -> dict[str, Any]:
        if isinstance(p, Choice):
            return {"choices": list(p.choices)}
        return {k: v for k, v in dataclasses.asdict(p).items() if v is not None}

    study: dict[str, Any] = {
        "name": spec.name,
        "objective": list(spec.objectives) if spec.cost else spec.objective,
        "direction": spec.direction,
        "seed": spec.seed,
    }
    if spec.max_trials is not None:
        study["max_trials"] = spec.max_trials
    if spec.max_steps is not None:
        study["max_steps"] = spec.max_steps
    if spec.max_device_hours is not None:
        study["max_device_hours"] = spec.max_device_hours
    if spec.description:
        study["description"] = spec.description
    study |= {
        "heartbeat_interval": spec.heartbeat_interval,
        "grace_period": spec.grace_period,
        "max_retry": spec.max_retry,
    }
    # Nothing searched: no [search] at all (an empty one is refused, as a user's would be).
    search = {"search": {n: param(p) for n, p in spec.search}} if spec.search else {}
    return {
        "study": study,
        **base,
        **search,
        "sampler": component(spec.sampler),
        "pruner": component(spec.pruner),
        "baselines": [dict(b) for b in spec.baselines],
        "strategy": strategy(spec.strategy),  # always: its default depends on the budget
    }
