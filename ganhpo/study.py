"""The Optuna driver: the search space, study create/load, summaries of a study's trials.

A study's resolved spec is stored in the study itself (system attribute ``ganhpo:spec``, which
the dashboard does not show a person; studies of earlier versions kept it as a user attribute,
still read), so a worker needs only the storage URL and the study name.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import optuna

from ganhpo import __version__
from ganhpo._optuna import FrozenStudy
from ganhpo.chains import (
    GROW_ATTR,
    HANDOVER_ATTR,
    STARTED_STATES,
    chain_links,
    counted_trials,
    retry_history,
    seconds_over_estimates,
    seconds_spent,
    steps_spent,
)
from ganhpo.components import STD_ATTRS, build_pruner, build_sampler
from ganhpo.errors import StorageError
from ganhpo.registry import closest
from ganhpo.spec import (
    CONDITIONS,
    Choice,
    FloatRange,
    IntRange,
    StudySpec,
    fixed_value,
    parse_study_spec,
    study_spec_to_dict,
)
from ganhpo.storage import TrialCache, set_study_attr, study_attr
from ganhpo.train.config import TrainConfig

__all__ = [
    "ARTIFACTS_ATTR",
    "METRIC_NAMES",
    "REAL_IMAGES_ATTR",
    "SPEC_ATTR",
    "apply_params",
    "best_config",
    "create_study",
    "list_studies",
    "load_study",
    "name_metrics",
    "stored_spec",
    "study_spec",
    "suggest_params",
    "summarize",
    "trial_config",
    "trial_rows",
    "trial_status",
]

logger = logging.getLogger(__name__)

SPEC_ATTR = "ganhpo:spec"
# A study user attribute (a person reads it, on the dashboard too): the FID and KID of real
# images the search never saw, at the final evaluation's sample size
# (ganhpo.results.real_images_score), which the first workers of a study record.
REAL_IMAGES_ATTR = "fid_of_real_images"
ARTIFACTS_ATTR = "ganhpo:artifacts"
# One study user attribute per ensemble that 'ganhpo ensemble' made of the study:
# "ganhpo:ensemble:<artifact id>" -> its summary (members, weights, test FID).
ENSEMBLE_ATTR_PREFIX = "ganhpo:ensemble:"
VERSION_ATTR = "ganhpo:version"

# The name of each objective as Optuna's metric name: what optuna-dashboard and Optuna's plots
# label the values with (instead of "Objective 0").
METRIC_NAMES = {"fid": "FID", "kid": "KID", "g_params": "G parameters", "train_seconds": "train s"}


def suggest_params(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample the ``[train]`` values of one trial from the spec's (conditional) space."""
    params: dict[str, Any] = {}
    for name, space in spec.search:
        condition = CONDITIONS.get(name)
        if condition is not None:
            parent = condition.parent
            if not condition.holds(params.get(parent, fixed_value(spec.base, parent))):
                continue
        if isinstance(space, Choice):
            params[name] = trial.suggest_categorical(name, list(space.choices))
        elif isinstance(space, FloatRange):
            params[name] = trial.suggest_float(
                name, space.low, space.high, log=space.log, step=space.step
            )
        elif isinstance(space, IntRange):
            params[name] = trial.suggest_int(
                name, space.low, space.high, log=space.log, step=space.step
            )
    return params


def create_study(
    spec: StudySpec,
    storage: optuna.storages.BaseStorage,
    *,
    load_if_exists: bool = False,
    artifacts: str | None = None,
) -> optuna.Study:
    """Create the study, store its resolved spec (and artifact store), enqueue the baselines.

    With ``load_if_exists``, several processes may create the same study at once (a job
    array's tasks): one creates it, the others wait for its spec and load it (an error if
    their spec differs).
    """
    as_given, spec = spec, with_default_holdout(spec)
    deadline = time.monotonic() + _CREATING_WAIT_S
    while True:
        if spec.name in {s.study_name for s in _studies(storage)}:
            if not load_if_exists:
                raise StorageError(
                    f"study {spec.name!r} already exists; pick another --name, delete it with "
                    f"'ganhpo study delete {spec.name}', or pass --load-if-exists to keep it"
                )
            if not _spec_stored(spec.name, storage, deadline):
                continue  # its creator gave up and deleted it: create it
            existing = load_study(spec.name, storage)
            stored = study_spec(existing)
            # A study created before ganhpo held images out stored none: the same spec still.
            if stored not in (spec, as_given):
                raise StorageError(
                    f"study {spec.name!r} exists with a different spec "
                    f"({_first_difference(stored, spec)}); create yours under another --name, "
                    f"or delete that one first with 'ganhpo study delete {spec.name}'"
                )
            return existing
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=spec.name,
                # FID, KID and the costs are minimised; the spec parser accepts nothing else.
                directions=["minimize"] * len(spec.objectives),
                sampler=build_sampler(spec.sampler, seed=spec.seed),
                pruner=build_pruner(spec.pruner, std_attr=STD_ATTRS[spec.objective]),
            )
        except optuna.exceptions.DuplicatedStudyError:
            continue  # another process created it since we looked: as if it had been there
        break
    try:
        name_metrics(study, spec.objectives)
        set_study_attr(study, SPEC_ATTR, study_spec_to_dict(spec))
        study.set_user_attr(VERSION_ATTR, __version__)
        if artifacts is not None:
            study.set_user_attr(ARTIFACTS_ATTR, artifacts)
        for baseline in spec.baselines:
            values = dict(baseline)
            searched = {k: v for k, v in values.items() if k in spec.space}
            study.enqueue_trial(searched, user_attrs={"baseline": values}, skip_if_exists=True)
        if spec.strategy.name == "pbt":
            # The whole population waits from the start, its parameters sampled when a worker
            # takes each member: members then take turns, one interval each, behind them.
            assert spec.max_trials is not None  # the spec parser requires it for pbt
            for _ in range(spec.max_trials - len(spec.baselines)):
                study.enqueue_trial({})
    except BaseException:
        # Nothing half-written: a study without its spec is useless to workers.
        optuna.delete_study(study_name=spec.name, storage=storage)
        raise
    return study


# How long a create waits for another process that is creating the same study to store its
# spec (milliseconds after creating it, unless that process died in between).
_CREATING_WAIT_S = 30.0
# The share of the train split a study sets aside when its dataset has no test split (an image
# folder, an .npz): its held-out reference for 'ganhpo study test' and 'ganhpo ensemble'.
DEFAULT_HOLDOUT = 0.1


def _spec_stored(name: str, storage: optuna.storages.BaseStorage, deadline: float) -> bool:
    """Wait until study ``name``, created by another process, has its spec: True then, False
    when it is gone (its creator failed and deleted it). A study still without one at
    ``deadline`` is refused: its creator died before storing it."""
    while True:
        studies = {s.study_name: s for s in _studies(storage)}
        if name not in studies:
            return False
        if stored_spec(studies[name]) is not None:
            return True
        if time.monotonic() > deadline:
            raise StorageError(
                f"study {name!r} exists without a stored spec (it was not made by 'ganhpo study "
                "create', or the create that made it died before storing it); delete it with "
                f"'ganhpo study delete {name}' and create it again"
            )
        time.sleep(0.1)


def _first_difference(stored: StudySpec, given: StudySpec) -> str:
    """The first key whose value differs between two specs, with both values."""

    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            return {
                k: v
                for key, item in value.items()
                for k, v in flat(item, f"{prefix}{key}.").items()
            }
        return {prefix.rstrip("."): value}

    there, here = flat(study_spec_to_dict(stored)), flat(study_spec_to_dict(given))
    for key in sorted(set(there) | set(here)):
        if there.get(key) != here.get(key):
            return f"{key}: {there.get(key)!r} there, {here.get(key)!r} here"
    return "they differ"


def name_metrics(study: optuna.Study, objectives: Sequence[str]) -> None:
    """Name the study's objectives (``FID`` or ``KID``, and a multi-objective study's cost)
    as Optuna's metric names, unless they are.

    Called when a study is created, and by the commands that open one (worker, study show,
    dashboard), which name the objective of a study created before ganhpo named it.
    """
    names = [METRIC_NAMES[o] for o in objectives]
    if study.metric_names != names:
        study.set_metric_names(names)  # two workers doing this at once: both write the same


def study_spec(study: optuna.Study) -> StudySpec:
    """The spec stored in a study by :func:`create_study`."""
    return _spec_from_attrs(study.study_name, {SPEC_ATTR: study_attr(study, SPEC_ATTR)})


def stored_spec(frozen: FrozenStudy) -> Any:
    """The raw spec stored in a study (as :func:`ganhpo.storage.study_attr` reads it), or None
    for a study that 'ganhpo study create' did not make."""
    if SPEC_ATTR in frozen.system_attrs:
        return frozen.system_attrs[SPEC_ATTR]
    return frozen.user_attrs.get(SPEC_ATTR)


def _spec_from_attrs(name: str, attrs: dict[str, Any]) -> StudySpec:
    raw = attrs.get(SPEC_ATTR)
    if raw is None:
        raise StorageError(
            f"study {name!r} was not created by 'ganhpo study create' (it has no stored spec); "
            "create one with 'ganhpo study create SPEC'"
        )
    # The data was checked at create time; the folder a study trains on may change since, and
    # that must not make the study unreadable (show, plot, the worker's own checks handle it).
    # Every spec is stored with its strategy; one stored without (by ganhpo before strategy
    # grow became a default) ran strategy optuna, and goes on with it.
    if isinstance(raw, dict) and "strategy" not in raw:
        raw = {**raw, "strategy": {"name": "optuna"}}
    # A spec with nothing to search was stored with an empty [search] before that was fixed.
    if isinstance(raw, dict) and raw.get("search") == {}:
        raw = {k: v for k, v in raw.items() if k != "search"}
    return parse_study_spec(raw, source=f"the spec stored in study {name!r}", check_data=False)


def load_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Load a ganhpo study with the sampler and pruner of its stored spec."""
    studies = {s.study_name: s for s in _studies(storage)}
    names = sorted(studies)
    if name not in names:
        hint = closest(name, names)
        listing = f"; studies here: {', '.join(names)}" if names else "; there are no studies here"
        raise StorageError(
            f"study {name!r} does not exist"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + listing
            + "; create it with 'ganhpo study create SPEC'"
        )
    spec = _spec_from_attrs(name, {SPEC_ATTR: stored_spec(studies[name])})
    if isinstance(storage, optuna.storages.RDBStorage):
        storage = TrialCache(storage)  # Optuna's trial cache, reading less of running trials
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=build_sampler(spec.sampler, seed=None),
        pruner=build_pruner(spec.pruner, std_attr=STD_ATTRS[spec.objective]),
    )


def _studies(storage: optuna.storages.BaseStorage) -> list[FrozenStudy]:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return storage.get_all_studies()
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise StorageError(
            f"the storage holds no study database ({type(e).__name__}); create a study there "
            "with 'ganhpo study create SPEC --storage URL'"
        ) from None


def list_studies(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """Name, trial count and best value of every study."""
    rows = []
    for frozen in sorted(_studies(storage), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        done = [
            t.values[0]  # the metric (FID or KID), also of a multi-objective study
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and t.values
        ]
        best = min(done) if done else None  # ganhpo's objectives are minimized
        rows.append({"name": frozen.study_name, "n_trials": len(trials), "best_value": best})
    return rows


def summarize(study: optuna.Study) -> dict[str, Any]:
    """State counts, the budget, hand-overs, the best trial and its parameters
    (``ganhpo study show``).

    ``states`` counts every trial; ``budget`` counts what the study's budget counts: each chain
    of a trial and its retries once, in the state of its latest trial. ``hand_overs`` is the
    number of trials whose worker was lost or stopped and that another trial resumed;
    ``pbt_intervals`` the number of PBT intervals that a member's next trial continued.
    """
    spec = study_spec(study)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {s.name: 0 for s in optuna.trial.TrialState}
    for t in trials:
        states[t.state.name] += 1
    links = chain_links(trials)
    latest: dict[str, int] = {}
    for t in trials:
        if t.number not in links and t.state in STARTED_STATES:
            latest[t.state.name] = latest.get(t.state.name, 0) + 1
    best = None
    front = pareto_front(study)
    if front:
        b = front[0]
        best = {
            "number": b.number,
            "value": b.values[0],
            "params": b.params,
            "user_attrs": {k: v for k, v in b.user_attrs.items() if k != "baseline"},
        }
    extra: dict[str, Any] = {}
    if spec.cost is not None:
        extra["pareto_front"] = [
            {"number": t.number, "values": dict(zip(spec.objectives, t.values, strict=True)),
             "params": t.params}
            for t in front
        ]  # fmt: skip
    extra["real_images"] = study.user_attrs.get(REAL_IMAGES_ATTR)  # recorded by the workers
    return {
        "name": study.study_name,
        "objective": spec.objective,
        "objectives": list(spec.objectives),
        "direction": spec.direction,
        "strategy": _describe_strategy(spec),
        "sampler": spec.sampler.describe(),
        "pruner": spec.pruner.describe(),
        "max_trials": spec.max_trials,
        "n_trials": len(trials),
        "states": {k: v for k, v in states.items() if v},
        "budget": {
            "used": counted_trials(trials),
            "max_trials": spec.max_trials,
            "states": latest,
            "steps": steps_spent(trials),
            "max_steps": spec.max_steps,
            "device_hours": seconds_spent(trials) / 3600,
            "device_hours_over_estimates": seconds_over_estimates(trials) / 3600,
            "max_device_hours": spec.max_device_hours,
        },
        "hand_overs": sum(1 for n in links if trials[n].state == optuna.trial.TrialState.FAIL),
        "pbt_intervals": sum(1 for n in links if trials[n].state == optuna.trial.TrialState.PRUNED),
        "growth": _growth(spec, trials) if spec.strategy.name == "grow" else None,
        "waiting": states["WAITING"],
        "best": best,
        "ensembles": ensembles_of(study),
        **extra,
    }


def with_default_holdout(spec: StudySpec) -> StudySpec:
    """``spec`` with :data:`DEFAULT_HOLDOUT` of its train split set aside when its dataset has
    no test split and ``dataset.holdout`` is not set: the images ``ganhpo study test`` and
    ``ganhpo ensemble`` score on. Done when a study is created, never to a stored spec (a study
    created before keeps its data)."""
    from ganhpo.data import has_test_split

    ds = spec.base.dataset
    if ds.holdout is not None or ds.split != "train" or has_test_split(ds.name, ds.path):
        return spec
    dataset = dataclasses.replace(ds, holdout=DEFAULT_HOLDOUT)
    return dataclasses.replace(spec, base=dataclasses.replace(spec.base, dataset=dataset))


def ensembles_of(study: optuna.Study) -> list[dict[str, Any]]:
    """The ensembles ``ganhpo ensemble`` made of the study (each its recorded summary, with its
    ``artifact`` id), oldest first."""
    attrs = study.user_attrs
    return [
        {"artifact": key[len(ENSEMBLE_ATTR_PREFIX) :], **value}
        for key, value in attrs.items()
        if key.startswith(ENSEMBLE_ATTR_PREFIX) and isinstance(value, dict)
    ]


def _growth(spec: StudySpec, trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """How a ``grow`` study splits its compute budget: the search's share, what the search
    spent (trials that grow none), and each grown trial (what it continues, from which step,
    to which length, what it spent)."""
    fraction = spec.strategy.search_fraction
    # The trials that grew a completed one (not their retries, which copy the mark).
    grown = [
        t
        for t in trials
        if GROW_ATTR in t.system_attrs and retry_history(t)[-1] == t.system_attrs[GROW_ATTR]["from"]
    ]
    # A grown trial and its hand-overs' retries: the growth's links.
    growth_numbers = {t.number for t in grown}
    for t in trials:
        if any(n in growth_numbers for n in retry_history(t)):
            growth_numbers.add(t.number)
    growth = [t for t in trials if t.number in growth_numbers]
    search = [t for t in trials if t.number not in growth_numbers]
    unit = "steps" if spec.max_steps is not None else "device_hours"

    def spent(ts: list[optuna.trial.FrozenTrial]) -> float:
        return steps_spent(ts) if unit == "steps" else seconds_spent(ts) / 3600

    total = spec.max_steps if unit == "steps" else spec.max_device_hours
    assert total is not None  # a grow study has a compute budget
    return {
        "unit": unit,
        "search_fraction": fraction,
        "search_share": fraction * total,
        "search_spent": spent(search),
        "growth_spent": spent(growth),
        "top": spec.strategy.top,
        "grown": [
            {
                "number": t.number,
                "from_trial": t.system_attrs[GROW_ATTR]["from"],
                "from_step": t.system_attrs[GROW_ATTR]["steps"],
                "length": t.system_attrs[GROW_ATTR]["length"],
            }
            for t in grown
        ],
    }


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials no other beats on every objective, best metric first; of a study
    with one objective, its best trial."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    return sorted(study.best_trials, key=lambda t: (t.values, t.number))


def trial_status(trial: optuna.trial.FrozenTrial, links: dict[int, int]) -> str:
    """What happened to a trial, in words; a handed-over one names the trial that resumed it."""
    status = str(trial.user_attrs.get("status", ""))
    if trial.state == optuna.trial.TrialState.FAIL and HANDOVER_ATTR in trial.system_attrs:
        status = status or str(trial.system_attrs[HANDOVER_ATTR].get("reason", "handed over"))
        if trial.number in links:
            status += f"; resumed as trial {links[trial.number]}"
        else:
            status += "; not resumed (study.max_retry reached)"
    elif trial.state == optuna.trial.TrialState.COMPLETE and trial.number in links:
        status += f"; grown as trial {links[trial.number]}"
    elif trial.state == optuna.trial.TrialState.RUNNING:
        status = "running"
    elif trial.state == optuna.trial.TrialState.WAITING:
        status = "waiting"
    return status


def _describe_strategy(spec: StudySpec) -> str:
    """One line: ``optuna (sampler and pruner)``, growth's split, or PBT's population and
    rules."""
    st = spec.strategy
    guard = "" if st.guard else "; collapsed and hopeless trials not stopped (guard = false)"
    if st.name == "optuna":
        return f"optuna (the sampler proposes, the pruner stops){guard}"
    if st.name == "grow":
        best = "the best trial goes" if st.top == 1 else f"the {st.top} best trials go"
        return (
            f"grow (the sampler proposes, the pruner stops, for {st.search_fraction:.0%} of the "
            f"compute budget; then {best} on from their final state for the rest){guard}"
        )
    factors = "/".join(f"{f:g}" for f in st.perturbation_factors)
    return (
        f"pbt (population {spec.max_trials}, every {spec.base.eval.every} steps; bottom "
        f"{st.quantile:g} exploits top {st.quantile:g}; explores {', '.join(st.hyperparams)} "
        f"x{factors}, resampled with p {st.resample_probability:g})"
    )


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, params_*, user attributes, status, whether it
    is a baseline, its chain (``resumed_from``, ``resumed_as``), and its curve
    (``intermediate``: the objective at each evaluation, a list of ``{step, value, std}``; the
    std is the evaluation's sampling std, None where none was recorded). ``value_std`` is the
    std of the last evaluation."""
    trials = study.get_trials(deepcopy=False)
    links = chain_links(trials)
    std_attr = STD_ATTRS[study_spec(study).objective]
    rows = []
    for t in trials:
        history = retry_history(t)
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "value": t.values[0] if t.values else None,  # the metric: FID or KID
            **({"cost": t.values[1] if t.values else None} if len(study.directions) > 1 else {}),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
        }
        row |= {f"params_{k}": v for k, v in t.params.items()}
        row |= {k: v for k, v in t.user_attrs.items() if not isinstance(v, dict | list)}
        row["status"] = trial_status(t, links)
        row["baseline"] = "baseline" in t.user_attrs  # enqueued from the spec's [[baselines]]
        row["resumed_from"] = history[-1] if history else None
        row["resumed_as"] = links.get(t.number)
        stds = t.user_attrs.get(std_attr)
        stds = stds if isinstance(stds, dict) else {}
        row["intermediate"] = [
            {"step": step, "value": t.intermediate_values[step], "std": stds.get(str(step))}
            for step in sorted(t.intermediate_values)
        ]
        last = row["intermediate"][-1] if row["intermediate"] else None
        row["value_std"] = None if last is None else last["std"]
        rows.append(row)
    return rows


def apply_params(
    spec: StudySpec, params: dict[str, Any], user_attrs: dict[str, Any], *, default_seed: int
) -> TrainConfig:
    """The configuration of a trial: the spec's base, a baseline's values, the sampled ones."""
    import dataclasses

    # A baseline is a known-good configuration: its unsearched values apply too.
    params = {**user_attrs.get("baseline", {}), **params}
    seed = user_attrs.get("seed", default_seed)  # a handed-over trial keeps its seed
    config = dataclasses.replace(spec.base.replace_params(**params), seed=int(seed))
    if "length" in user_attrs:  # a trial that grows a completed one trains longer
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, steps=int(user_attrs["length"]))
        )
    return config


def trial_config(spec: StudySpec, trial: optuna.trial.FrozenTrial) -> TrainConfig:
    """The full training configuration a trial ran (what ``ganhpo train`` reproduces)."""
    return apply_params(spec, trial.params, trial.user_attrs, default_seed=spec.seed)


def best_config(
    study: optuna.Study, *, trial: int | None = None, fid_within: float | None = None
) -> tuple[int, float, TrainConfig]:
    """(number, metric, configuration) of the chosen completed trial: ``trial`` by number;
    else, with ``fid_within`` (a percentage), the cheapest trial of the Pareto front whose
    metric is within that much of the best; else the best metric."""
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    name = study.study_name
    if not completed:
        raise StorageError(
            f"study {name!r} has no completed trial yet; run 'ganhpo worker --study {name}' first"
        )
    spec = study_spec(study)
    if trial is not None:
        chosen = [t for t in completed if t.number == trial]
        if not chosen:
            numbers = ", ".join(str(t.number) for t in pareto_front(study))
            raise StorageError(
                f"trial {trial} of study {name!r} is not a completed trial; choose a completed "
                f"one (the best: {numbers}; 'ganhpo study trials {name}' lists them)"
            )
        b = chosen[0]
    elif fid_within is not None:
        if spec.cost is None:
            raise StorageError(
                f"--fid-within needs a study that weighs a cost against {spec.objective}; "
                f"study {name!r} has one objective: drop --fid-within"
            )
        front = pareto_front(study)
        limit = front[0].values[0] * (1 + fid_within / 100)
        b = min((t for t in front if t.values[0] <= limit), key=lambda t: (t.values[1], t.number))
    else:
        b = pareto_front(study)[0]
    return b.number, b.values[0], trial_config(spec, b)
