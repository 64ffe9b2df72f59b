"""``ganhpo study [create|list|show|trials|best|set-store|test|delete]``; without an action, the
list."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from ganhpo.commands import _study_test
from ganhpo.commands._common import add_storage_args, print_json, storage_from_args
from ganhpo.errors import ConfigError

__all__ = ["register"]

_NAME_HELP = "the study name (ganhpo study list)"

# The Optuna version a study was created with (ganhpo's own: ganhpo.study.VERSION_ATTR), which
# 'ganhpo doctor' compares with a machine's.
OPTUNA_VERSION_ATTR = "ganhpo:optuna_version"
_JSON_HELP = "print JSON (indented) instead of text"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``study`` command group."""
    p = sub.add_parser(
        "study",
        help="create and inspect studies",
        description="Create a study from a spec file and inspect studies: list them, show "
        "one's progress, its trials, its best trial, or delete it. Without an action, lists "
        "the studies (as 'ganhpo study list').",
    )
    add_storage_args(p)  # also before the action: ganhpo study --storage URL list
    p.set_defaults(func=list_, json=False)
    group = p.add_subparsers(dest="study_command", metavar="[ACTION]")

    c = group.add_parser(
        "create",
        help="create a study from a spec file; prints its name",
        description="Create a study from a spec file (studies/*.toml), check it, store it in "
        "the study database and enqueue its baselines; prints the study's name.",
    )
    c.add_argument("spec", type=Path, help="a study spec, e.g. studies/quick.toml")
    c.add_argument("--name", help="study name (default: the spec's study.name)")
    c.add_argument(
        "--load-if-exists",
        action="store_true",
        help="succeed if a study of that name and the same spec exists",
    )
    c.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="artifact store the workers share (default: $GANHPO_ARTIFACTS, else "
        "./ganhpo-artifacts); stored in the study",
    )
    add_storage_args(c)
    c.set_defaults(func=create)

    ls = group.add_parser(
        "list",
        help="list the studies in the storage (the default action)",
        description="List the studies in the study database: name, trials, best value.",
    )
    add_storage_args(ls)
    ls.add_argument("--json", action="store_true", help=_JSON_HELP)
    ls.set_defaults(func=list_)

    s = group.add_parser(
        "show",
        help="state counts, budget, best trial and parameters",
        description="Summarize a study: its sampler and pruner, trials by state, the budget "
        "spent, hand-overs, and the best trial with its parameters.",
    )
    s.add_argument("name", help=_NAME_HELP)
    s.add_argument("--json", action="store_true", help=_JSON_HELP)
    add_storage_args(s)
    s.set_defaults(func=show)

    t = group.add_parser(
        "trials",
        help="one row per trial",
        description="One row per trial: number, state, value, status, chain, parameters, "
        "attributes and the objective's curve; a table, CSV or JSON.",
    )
    t.add_argument("name", help=_NAME_HELP)
    fmt = t.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    fmt.add_argument("--json", action="store_true", help=_JSON_HELP)
    add_storage_args(t)
    t.set_defaults(func=trials)

    b = group.add_parser(
        "best",
        help="the best trial; --as-config prints it for ganhpo train",
        description="Print the best completed trial: its number and value; with --json, "
        "its whole configuration too; with --as-config, that configuration as a TOML file "
        "for 'ganhpo train'. A study that weighs FID against a cost has a Pareto front of "
        "trade-offs instead of one best: it takes the best FID unless --fid-within or --trial "
        "chooses another ('ganhpo study show' lists the front).",
    )
    b.add_argument("name", help=_NAME_HELP)
    choice = b.add_mutually_exclusive_group()
    choice.add_argument(
        "--fid-within",
        type=float,
        metavar="PCT",
        help="a study with a cost: the cheapest trial of the Pareto front whose FID (or KID) "
        "is within PCT %% of the best",
    )
    choice.add_argument("--trial", type=int, metavar="N", help="trial N instead of the best")
    how = b.add_mutually_exclusive_group()
    how.add_argument(
        "--as-config",
        action="store_true",
        help="print the best trial's full configuration as a TOML file for 'ganhpo train'",
    )
    how.add_argument("--json", action="store_true", help=_JSON_HELP)
    add_storage_args(b)
    b.set_defaults(func=best)

    ss = group.add_parser(
        "set-store",
        help="make another artifact store the study's (its store was lost or moved)",
        description="Make an artifact store the study's: create it if it is a missing "
        "directory, mark it as the study's and record it in the study, so that workers use it. "
        "For a store that was lost (its checkpoints are gone: trials that resume start over) "
        "or moved (copy its files first). Prints the store's location.",
    )
    ss.add_argument("name", help=_NAME_HELP)
    ss.add_argument(
        "--artifacts",
        required=True,
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the study's new artifact store",
    )
    add_storage_args(ss)
    ss.set_defaults(func=set_store)

    _study_test.register(group)

    d = group.add_parser(
        "delete",
        help="delete a study and all its trials",
        description="Delete a study and all its trials from the study database (asks first, "
        "unless --yes). Its artifacts stay in the artifact store.",
    )
    d.add_argument("name", help=_NAME_HELP)
    d.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_storage_args(d)
    d.set_defaults(func=delete)


def create(args: argparse.Namespace) -> int:
    """Create the study; print its name on stdout."""
    import dataclasses

    from ganhpo.spec import check_study_name, load_study_spec
    from ganhpo.study import create_study

    spec = load_study_spec(args.spec)  # every error surfaces before the database is touched
    # An extractor that cannot work for this dataset would fail every trial on the workers.
    from ganhpo.metrics import check_extractor

    ds = spec.base.dataset
    check_extractor(spec.base.eval.extractor, dataset=ds.name, path=ds.path)
    # A user's networks: imported, built and run once for each searched network value.
    from ganhpo.spec import Choice
    from ganhpo.train import TrainParams, check_networks

    train_keys = {f.name for f in dataclasses.fields(TrainParams)}
    extra = [
        {name: value}
        for name, space in spec.search
        if name not in train_keys
        for value in (space.choices if isinstance(space, Choice) else (space.low, space.high))
    ]
    extra += [dict(b) for b in spec.baselines if set(dict(b)) - train_keys]
    check_networks(spec.base, extra)
    if args.name is not None:
        spec = dataclasses.replace(spec, name=check_study_name(args.name, "--name"))
    from ganhpo.artifacts import resolve_artifacts

    artifacts = resolve_artifacts(args.artifacts)
    storage = storage_from_args(args, create_schema=True)
    import optuna

    existed = spec.name in optuna.get_all_study_names(storage)
    if not existed:  # a store that cannot be made or written stops here, before the study
        _check_store(artifacts)
    study = create_study(spec, storage, load_if_exists=args.load_if_exists, artifacts=artifacts)
    if not existed:
        study.set_user_attr(OPTUNA_VERSION_ATTR, optuna.__version__)
        _mark_store(study, storage, artifacts)
    print(study.study_name)
    return 0


def _check_store(location: str) -> Any:
    """The store at ``location``, created if it is a missing directory (here, on the machine
    that creates the study: a worker never creates one) and written to once."""
    from ganhpo.artifacts import open_artifact_store, remove_artifact, write_artifact

    store = open_artifact_store(location, create=True)
    try:
        remove_artifact(store, write_artifact(store, b"ganhpo probe", kind="probe"))
    except OSError as e:
        raise ConfigError(
            f"the artifact store {location} cannot be written from here ({e}); make it "
            "writable or pass --artifacts DIR|s3://BUCKET/PREFIX"
        ) from e
    return store


def _mark_store(study: Any, storage: Any, location: str) -> None:
    """Mark the store as the study's (:func:`ganhpo.artifacts.mark_store`) unless it is: under
    the study's lock, so that several processes creating the study at once (a job array's
    tasks) leave one marker."""
    from ganhpo.artifacts import STORE_MARKER_ATTR, mark_store, open_artifact_store
    from ganhpo.storage import budget_lock, set_study_attr, study_attr

    store = open_artifact_store(location)  # made by _check_store
    with budget_lock(storage, study.study_name):
        if study_attr(study, STORE_MARKER_ATTR) is not None:
            return
        set_study_attr(
            study, STORE_MARKER_ATTR, mark_store(store, study=study.study_name, location=location)
        )


def set_store(args: argparse.Namespace) -> int:
    """Make another store the study's: marked as its own, recorded in the study."""
    from ganhpo.artifacts import STORE_MARKER_ATTR, mark_store, resolve_artifacts
    from ganhpo.storage import budget_lock, set_study_attr
    from ganhpo.study import ARTIFACTS_ATTR, load_study

    artifacts = resolve_artifacts(args.artifacts)
    storage = storage_from_args(args)
    study = load_study(args.name, storage)
    store = _check_store(artifacts)
    with budget_lock(storage, study.study_name):
        set_study_attr(
            study, STORE_MARKER_ATTR, mark_store(store, study=study.study_name, location=artifacts)
        )
        study.set_user_attr(ARTIFACTS_ATTR, artifacts)
    print(artifacts)
    return 0


def list_(args: argparse.Namespace) -> int:
    """Print the studies with their trial counts."""
    from ganhpo.study import list_studies

    rows = list_studies(storage_from_args(args))
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            best = f"best {r['best_value']:.4f}" if r["best_value"] is not None else "no result"
            print(f"{r['name']}\t{r['n_trials']} trials\t{best}")
    return 0


def _print_growth(growth: dict[str, Any]) -> None:
    """How a ``grow`` study splits its compute budget between searching and growing."""
    steps = growth["unit"] == "steps"

    def amount(v: float) -> str:
        return f"{v:.0f} steps" if steps else f"{v:.3g} device-hours"

    print(
        f"split      search {growth['search_fraction']:.0%} of the budget "
        f"({amount(growth['search_share'])}; spent {amount(growth['search_spent'])}), "
        f"growth the rest (spent {amount(growth['growth_spent'])})"
    )
    if not growth["grown"]:
        print("growing    not yet (after the search's share is spent and its trials end)")
    for g in growth["grown"]:
        print(
            f"growing    trial {g['from_trial']} goes on as trial {g['number']}: from step "
            f"{g['from_step']} to {g['length']}"
        )


def show(args: argparse.Namespace) -> int:
    """Print a study's summary."""
    from ganhpo.study import load_study, name_metrics, summarize

    study = load_study(args.name, storage_from_args(args))
    info = summarize(study)
    name_metrics(study, info["objectives"])  # a study created before ganhpo named it
    if args.json:
        print_json(info)
        return 0
    print(f"study      {info['name']}  ({info['objective']}, {info['direction']})")
    print(f"strategy   {info['strategy']}")
    print(f"sampler    {info['sampler']}")
    if not info["strategy"].startswith("pbt"):
        print(f"pruner     {info['pruner']}")
    _print_budget(info)
    if info["hand_overs"]:
        print(
            f"hand-overs {info['hand_overs']} (a worker was lost or stopped; each resumed by "
            "another trial and counted once: ganhpo study trials shows the chains)"
        )
    growth = info.get("growth")
    if growth is not None:
        _print_growth(growth)
    if info["pbt_intervals"]:
        print(
            f"intervals  {info['pbt_intervals']} (PBT members went on as new trials; "
            "ganhpo study trials shows each member's chain)"
        )
    _print_best(info)
    for e in info.get("ensembles", []):  # recorded by 'ganhpo ensemble'
        _print_ensemble(e)
    front = info.get("pareto_front")
    if front:
        _print_front(info, front)
    return 0


def _print_budget(info: dict[str, Any]) -> None:
    """The trials counted, the compute and the device time spent, of the study's budgets."""
    budget = info["budget"]
    of = "" if budget["max_trials"] is None else f" of {budget['max_trials']}"
    counts = [f"{k.lower()} {v}" for k, v in budget["states"].items()]
    if info["waiting"]:
        counts.append(f"waiting {info['waiting']}")  # queued, not yet counted
    used = f"{budget['used']}{of}: {'  '.join(counts)}"
    print(f"trials     {used}" if counts else "trials     none yet")
    if budget["max_steps"] is not None:
        left = budget["max_steps"] - budget["steps"]
        print(
            f"compute    {budget['steps']} of {budget['max_steps']} training steps spent "
            f"({100 * budget['steps'] / budget['max_steps']:.0f} %), {left} left"
        )
    if budget["max_device_hours"] is not None:
        spent, most = budget["device_hours"], budget["max_device_hours"]
        print(
            f"device     {spent:.3g} of {most:g} device-hours spent ({100 * spent / most:.0f} %), "
            f"{max(0.0, most - spent):.3g} left"
        )
        if spent > most:  # never without a word
            over = budget["device_hours_over_estimates"]
            print(
                f"           over the budget by {spent - most:.3g} device-hours: the last "
                f"intervals of trials took {over:.3g} h longer than their measured rates "
                "predicted"
            )


def _print_best(info: dict[str, Any]) -> None:
    """The best trial: its value, what real images score (the floor), its test FID where
    'ganhpo study test' recorded one, its parameters."""
    best = info["best"]
    if best is None:
        print("best       none yet")
        return
    print(f"best       trial {best['number']}  {info['objective']} {best['value']:.4f}")
    real = info.get("real_images") or {}
    floor = real.get(info["objective"])
    print(
        "           lower is better"
        + (
            f"; real images the search never saw score {floor:.4g} ({real['split']} split, "
            f"{real['samples']} samples)"
            if floor is not None
            else ""
        )
    )
    attrs = best.get("user_attrs", {})
    if attrs.get("test_fid") is not None:  # recorded by 'ganhpo study test'
        std = attrs.get("test_fid_std")
        print(
            f"test       FID {attrs['test_fid']:.4f}"
            + (f" ± {std:.2g}" if std is not None else "")
            + f" on {attrs.get('test_reference', 'the test split')} "
            f"({attrs.get('test_samples')} samples, seed {attrs.get('test_seed')})"
        )
    for k, v in best["params"].items():
        print(f"  {k:<12} {v}")


def _print_ensemble(e: dict[str, Any]) -> None:
    """An ensemble 'ganhpo ensemble' made of the study, with its test FID."""
    fid, std, alone = e.get("test_fid"), e.get("test_fid_std"), e.get("best_member_test_fid")
    print(
        f"ensemble   trials {', '.join(map(str, e['trials']))} ({e['weighing']} weights "
        f"{', '.join(f'{w:.2f}' for w in e['weights'])}): test FID "
        + ("nan" if fid is None else f"{fid:.4f}")
        + (f" ± {std:.2g}" if std is not None else "")
        + f"; its best member alone, trial {e['best_member']}: "
        + ("nan" if alone is None else f"{alone:.4f}")
        + f" (artifact {e['artifact']})"
    )


def _print_front(info: dict[str, Any], front: list[dict[str, Any]]) -> None:
    """The Pareto front of a study that weighs its metric against a cost."""
    cost = info["objectives"][1]
    print(
        f"pareto     {len(front)} trade-offs of {info['objective']} and {cost} (no trial "
        "beats one on both; 'ganhpo study best --fid-within PCT' picks one):"
    )
    for t in front:
        values = t["values"]
        print(
            f"  trial {t['number']:<5} {info['objective']} {values[info['objective']]:.4f}  "
            f"{cost} {values[cost]:.6g}"
        )


def trials(args: argparse.Namespace) -> int:
    """Print one row per trial (table, CSV or JSON)."""
    from ganhpo.study import load_study, study_spec, trial_rows

    study = load_study(args.name, storage_from_args(args))
    rows = trial_rows(study)
    if args.json:
        print_json(rows)
        return 0
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    if args.csv:
        columns = _csv_columns(columns, objective=study_spec(study).objective)
        writer = csv.DictWriter(
            sys.stdout, fieldnames=columns, lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in rows)
        return 0
    shown: list[str] = [
        c
        for c in (
            "number",
            "state",
            "value",
            "value_std",
            "test_fid",  # 'ganhpo study test': on the test split, fresh latents
            "status",
            "steps",
            "resumed_from",
            "resumed_as",
        )
        if c in columns
    ]
    shown += [c for c in columns if c.startswith("params_")]
    print("\t".join(shown))
    for r in rows:
        print(
            "\t".join(
                "" if r.get(c) is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                for c in shown
            )
        )
    return 0


# The columns a person reads first, where a study has them; the parameters follow, then the
# rest, the times and the curve last.
CSV_FIRST = ("number", "state", "value", "value_std", "cost", "test_fid", "test_fid_std",
             "status", "steps", "baseline", "resumed_from", "resumed_as")  # fmt: skip
CSV_LAST = ("datetime_start", "datetime_complete", "intermediate")


def _csv_columns(columns: list[str], objective: str) -> list[str]:
    """The CSV's columns, in the order a person reads them, without the machine's bookkeeping
    (kept in --json): artifact ids (the dashboard and 'ganhpo sample' find the files), the
    compute ledger's reservations, and the objective's own attribute (``fid``: the value)."""
    from ganhpo.chains import OVER_ESTIMATE_ATTR

    hidden = {"generator", "grid", "steps_reserved", "seconds_reserved", OVER_ESTIMATE_ATTR}
    hidden |= {"checkpoint", "checkpoint_pending", objective}  # the first two: older studies
    first = [c for c in CSV_FIRST if c in columns]
    params = [c for c in columns if c.startswith("params_")]
    last = [c for c in CSV_LAST if c in columns]
    rest = [c for c in columns if c not in {*first, *params, *last, *hidden}]
    return first + params + rest + last


def _csv_cell(value: Any) -> Any:
    """A CSV cell: a number to 6 significant digits (an FID's sampling std is several units;
    --json has every digit); a curve (a list of step/value/std points) as ``step:value`` or
    ``step:value±std`` pairs."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return " ".join(
            f"{p['step']}:{p['value']:.6g}" + ("" if p.get("std") is None else f"±{p['std']:.2g}")
            for p in value
        )
    return value


def best(args: argparse.Namespace) -> int:
    """Print the best trial, or its configuration as TOML."""
    import tomli_w

    from ganhpo.study import best_config, load_study
    from ganhpo.train import config_to_dict

    if args.fid_within is not None and not args.fid_within >= 0:
        raise ConfigError(f"--fid-within {args.fid_within:g} is invalid; use a percentage >= 0")
    study = load_study(args.name, storage_from_args(args))
    number, value, config = best_config(study, trial=args.trial, fid_within=args.fid_within)
    if args.as_config:
        header = (
            f"# ganhpo train config of trial {number} of study {args.name!r} (FID {value:.4f})\n"
        )
        sys.stdout.write(header + tomli_w.dumps(config_to_dict(config)))
    elif args.json:
        print_json({"number": number, "value": value, "config": config_to_dict(config)})
    else:
        print(f"trial {number}  {value:.4f}")
    return 0


def delete(args: argparse.Namespace) -> int:
    """Delete a study after confirmation."""
    import optuna

    from ganhpo.study import load_study

    storage = storage_from_args(args)
    study = load_study(args.name, storage)
    n = len(study.get_trials(deepcopy=False))
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"deleting study {args.name!r} ({n} trials) needs confirmation; pass --yes"
            )
        answer = input(f"delete study {args.name!r} and its {n} trials? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted", file=sys.stderr)
            return 1
    optuna.delete_study(study_name=args.name, storage=storage)
    print(f"deleted {args.name}")
    return 0
