"""Search efficiency: best final FID per unit of training compute, for several search methods.

    python bench/search_efficiency.py [--quick] [--data-dir ../shared/data/mnist] [--json]
        [--methods random,default,...] [--reps 3 | --seeds 3,4,5] [--jobs 2] [--out DIR]
    python bench/search_efficiency.py --from-runs bench/results/search_efficiency_runs*.json

Every method searches the same space (that of ``studies/mnist-dcgan.toml`` less the parameters
that change the cost of a step) for a small DCGAN on the full real MNIST, under the same compute
budget: a total number of training steps across all its trials, counting the steps pruned
trials actually trained (the trial running when the budget runs out is stopped there). A method
is a sampler and a pruner built by name with :func:`ganhpo.components.build_sampler` /
:func:`ganhpo.components.build_pruner`; each trial goes through the worker's logic
(:func:`ganhpo.study.suggest_params`, :func:`ganhpo.worker.trial_seed`, ``trial.report`` at each
evaluation, ``trial.should_prune``, divergence = pruned) on an in-memory Optuna study driving
:class:`ganhpo.train.Trainer`. Repetition ``r`` uses study seed ``r`` for every method, so all
methods draw the same first random points and train trial ``n`` with the same seed.

Reported: the best final FID (mean over repetitions) at 25/50/100 % of the budget, and the
compute each method needs to reach the best FID random search reached with its whole budget
(target for ganhpo's default: at most a third), per repetition and against random search's
expected best over a budget estimated from all its trials pooled (per repetition, a method
that shares random's first draws reaches random's best exactly when random does). Results go
to stdout (a table, or JSON with --json), progress to stderr; the figure (plotly JSON, and HTML
that loads ./plotly.min.js) and a CSV of the curves go to --out.

Evaluations compute FID only (``[eval] kid = "off"``): the objective is FID, and KID's 100
subsets would cost more than the training itself at this scale (evaluation time is not counted
in the budget either way).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(ROOT))

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_SPEC = ROOT / "studies" / "mnist-dcgan.toml"
FRACTIONS = (0.25, 0.5, 1.0)
# Searched by the default study but left out here: they change the cost of one step (batch size,
# D updates per step, the R1 penalty's double backward), so "steps" would stop measuring compute;
# EMA with the default decay 0.999 keeps 74 % of the initial weights after 300 steps, so at this
# trial length it would only add a trivially bad half to the space.
DROPPED = ("batch_size", "n_disc", "penalty", "r1_gamma", "ema", "ema_decay")


@dataclass(frozen=True)
class Preset:
    """The trial size: model, steps, evaluation cadence and the budget in full trials."""

    width: int  # DCGAN width (channels of the widest hidden layer)
    latent_dim: int
    batch_size: int
    steps: int  # steps of one full trial
    eval_every: int
    eval_samples: int  # samples per intermediate evaluation (what the pruner sees)
    final_samples: int  # samples of the final FID (what the search minimizes)
    budget_trials: int  # budget = budget_trials * steps training steps


FULL = Preset(16, 32, 32, 300, 50, 500, 1000, budget_trials=20)
QUICK = Preset(16, 32, 32, 100, 25, 300, 500, budget_trials=6)


@dataclass(frozen=True)
class Method:
    """A sampler and a pruner, as a study spec would name them."""

    label: str
    sampler: dict[str, Any]  # name + keyword arguments (spec [sampler])
    pruner: dict[str, Any]  # name + keyword arguments (spec [pruner])


def methods(preset: Preset) -> dict[str, Method]:
    """The methods by key. ``default`` is what ganhpo uses for a spec without ``[sampler]`` and
    ``[pruner]`` at this budget; ``previous-default`` is the default of the first version of
    this benchmark (the values ``studies/mnist-dcgan.toml`` then set, its pruner's warm-up
    scaled to this trial length: pruning from the second evaluation on)."""
    from ganhpo.spec import DEFAULT_PRUNER, default_sampler

    sampler = {"name": "tpe", **default_sampler(preset.budget_trials).kwargs}
    pruner = {"name": DEFAULT_PRUNER.name, **DEFAULT_PRUNER.kwargs}
    previous_sampler = {"name": "tpe", "multivariate": True, "n_startup_trials": 10}
    previous_pruner = {
        "name": "median",
        "n_startup_trials": 5,
        "n_warmup_steps": round(1000 / 5000 * preset.steps),
    }
    hyperband = {
        "name": "hyperband",
        "min_resource": preset.eval_every,
        "max_resource": preset.steps,
        "reduction_factor": 3,
    }
    eager = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": preset.eval_every}
    return {
        "random": Method("random search, no pruning (Lucic et al. 2018)", {"name": "random"}, {}),
        "default": Method(
            f"ganhpo default: {_describe(sampler)} + {_describe(pruner)}", sampler, pruner
        ),
        "previous-default": Method(
            f"previous default: {_describe(previous_sampler)} + {_describe(previous_pruner)}",
            previous_sampler,
            previous_pruner,
        ),
        "random-hyperband": Method(
            f"random + {_describe(hyperband)}", {"name": "random"}, hyperband
        ),
        "tpe-median-eager": Method(
            f"tpe(multivariate, n_startup_trials=5) + {_describe(eager)}",
            {"name": "tpe", "multivariate": True, "n_startup_trials": 5},
            eager,
        ),
        "tpe-hyperband": Method(
            f"tpe(multivariate) + {_describe(hyperband)}",
            {"name": "tpe", "multivariate": True},
            hyperband,
        ),
        "gp-median": Method(f"gp + {_describe(previous_pruner)}", {"name": "gp"}, previous_pruner),
    }


def _describe(component: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in component.items() if k != "name")
    return f"{component['name']}({args})" if args else component["name"]


def bench_spec(preset: Preset, data_dir: Path, seed: int) -> Any:
    """The study spec every method searches: the default study's space at the preset's size."""
    from ganhpo.spec import load_toml, parse_study_spec

    raw = load_toml(DEFAULT_SPEC)
    raw["study"] = {"name": "search-efficiency", "seed": seed}
    raw["dataset"] = {"name": "mnist"}
    raw["model"] = {"arch": "dcgan", "width": preset.width, "latent_dim": preset.latent_dim}
    raw["train"] = {"steps": preset.steps, "batch_size": preset.batch_size}
    raw["eval"] = {
        "every": preset.eval_every,
        "samples": preset.eval_samples,
        "final_samples": preset.final_samples,
        "extractor": "classifier",
        "grid": False,
        "kid": "off",
    }
    raw["device"] = "cpu"
    raw["search"] = {k: v for k, v in raw["search"].items() if k not in DROPPED}
    raw.pop("baselines", None)  # compare search algorithms, not a hand-picked first trial
    return parse_study_spec(raw, source="search-efficiency spec")


# ------------------------------------------------------------------------------ one study
_DATA: dict[str, Any] = {}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one study per core: faster than two threads fighting per study


def run_study(job: dict[str, Any]) -> dict[str, Any]:
    """Run one method for one repetition until its step budget is spent."""
    import optuna

    from ganhpo.components import ComponentSpec, build_pruner, build_sampler
    from ganhpo.data import load_dataset
    from ganhpo.errors import DivergenceError
    from ganhpo.metrics import Evaluator
    from ganhpo.study import suggest_params
    from ganhpo.train import Trainer
    from ganhpo.worker import trial_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    preset = Preset(**job["preset"])
    method = Method(**job["method"])
    rep = job["rep"]
    spec = bench_spec(preset, Path(job["data_dir"]), seed=rep)
    if "data" not in _DATA:
        _DATA["data"] = load_dataset("mnist", data_dir=job["data_dir"], download=False)
    data = _DATA["data"]
    evaluator = Evaluator(
        data,
        extractor=spec.base.eval.extractor,
        device="cpu",
        seed=spec.base.eval.seed,
        latent_dim=spec.base.model.latent_dim,
    )

    def component(raw: dict[str, Any]) -> ComponentSpec:
        raw = dict(raw) or {"name": "none"}
        name = raw.pop("name")
        return ComponentSpec(name, tuple(sorted(raw.items())))

    study = optuna.create_study(
        direction="minimize",
        sampler=build_sampler(component(method.sampler), seed=rep),
        pruner=build_pruner(component(method.pruner)),
    )
    budget = preset.budget_trials * preset.steps
    spent = 0
    trials: list[dict[str, Any]] = []
    started = time.perf_counter()
    train_seconds = eval_seconds = 0.0
    while spent < budget:
        trial = study.ask()
        params = suggest_params(trial, spec)
        config = dataclasses.replace(
            spec.base.replace_params(**params), seed=trial_seed(spec, trial.number)
        )
        trainer = Trainer(config, data=data, evaluator=evaluator)
        pruned: list[int] = []

        def on_eval(record: Any, trial: optuna.Trial = trial, pruned: list[int] = pruned) -> None:
            trial.report(record.fid, record.step)
            if not record.final and trial.should_prune():
                pruned.append(record.step)

        left = budget - spent
        final: float | None = None
        try:
            result = trainer.run(
                on_eval=on_eval,
                should_stop=lambda t=trainer, p=pruned, left=left: bool(p) or t.step >= left,
            )
            steps = result.steps
            if result.final is not None:
                final = result.final.fid
                study.tell(trial, final)
                state = "complete"
            elif pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                state = "pruned"
            else:  # stopped by the end of the budget
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                state = "cut"
        except DivergenceError as e:
            steps = e.step
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            state = "diverged"
        train_seconds += trainer.train_seconds
        eval_seconds += trainer.eval_seconds
        spent += steps
        trials.append(
            {"number": trial.number, "state": state, "steps": steps, "spent": spent,
             "final_fid": final, "params": params}
        )  # fmt: skip
        print(
            f"[{job['key']} rep {rep}] trial {trial.number:3d} {state:9s} {steps:4d} steps  "
            f"spent {spent}/{budget}" + (f"  FID {final:.1f}" if final is not None else ""),
            file=sys.stderr,
            flush=True,
        )
        del trainer
    return {
        "key": job["key"],
        "rep": rep,
        "budget": budget,
        "trials": trials,
        "wall_s": time.perf_counter() - started,
        "train_s": train_seconds,
        "eval_s": eval_seconds,
    }


# ------------------------------------------------------------------------------- analysis
def best_at(run: dict[str, Any], compute: float) -> float:
    """Best final FID among trials completed within ``compute`` steps (inf if none)."""
    done = [
        t["final_fid"]
        for t in run["trials"]
        if t["final_fid"] is not None and t["spent"] <= compute
    ]
    return min(done, default=math.inf)


def compute_to_reach(run: dict[str, Any], target: float) -> float:
    """Steps spent when the best final FID first reaches ``target`` (inf if never)."""
    for t in run["trials"]:
        if t["final_fid"] is not None and t["final_fid"] <= target:
            return float(t["spent"])
    return math.inf


def analyse(runs: list[dict[str, Any]], keys: list[str], reps: list[int]) -> dict[str, Any]:
    """Curves, the table at FRACTIONS and the compute to reach random search's best."""
    by = {(r["key"], r["rep"]): r for r in runs}
    budget = runs[0]["budget"]
    grid = [budget * i / 200 for i in range(1, 201)]
    curves = {}
    for key in keys:
        per_rep = [[best_at(by[key, rep], c) for c in grid] for rep in reps]
        curves[key] = {
            "compute": grid,
            "mean": [_mean(col) for col in zip(*per_rep, strict=True)],
            "min": [min(col) for col in zip(*per_rep, strict=True)],
            "max": [max(col) for col in zip(*per_rep, strict=True)],
        }
    table = {}
    for key in keys:
        row = {}
        for f in FRACTIONS:
            values = [best_at(by[key, rep], f * budget) for rep in reps]
            row[f] = {"mean": _mean(values), "values": values}
        table[key] = row
    reach: dict[str, Any] = {}
    if "random" in keys:
        targets = {rep: best_at(by["random", rep], budget) for rep in reps}
        mean_target = _mean(list(targets.values()))
        # Random search's expected best over a whole budget, from all its trials pooled: a
        # target that does not depend on one repetition's luck.
        pooled = [t["final_fid"] for rep in reps for t in by["random", rep]["trials"]]
        pooled = [v for v in pooled if v is not None]
        per_budget = sum(1 for t in by["random", reps[0]]["trials"] if t["final_fid"] is not None)
        expected = expected_best(pooled, per_budget)
        for key in keys:
            fractions = [compute_to_reach(by[key, rep], targets[rep]) / budget for rep in reps]
            pooled_fr = [compute_to_reach(by[key, rep], expected) / budget for rep in reps]
            first = next(
                (c / budget for c, v in zip(grid, curves[key]["mean"], strict=True)
                 if v <= mean_target),
                math.inf,
            )  # fmt: skip
            reach[key] = {
                "per_rep": fractions,
                "median": statistics.median(fractions),
                "reached": sum(math.isfinite(f) and f <= 1 for f in fractions),
                "mean_curve": first,
                "pooled_per_rep": pooled_fr,
                "pooled_median": statistics.median(pooled_fr),
            }
        reach["_targets"] = targets
        reach["_expected"] = expected
    stats = {}
    for key in keys:
        rs = [by[key, rep] for rep in reps]
        states: dict[str, int] = {}
        for r in rs:
            for t in r["trials"]:
                states[t["state"]] = states.get(t["state"], 0) + 1
        stats[key] = {
            "trials": statistics.mean(len(r["trials"]) for r in rs),
            "states": {k: v / len(rs) for k, v in sorted(states.items())},
            "wall_s": statistics.mean(r["wall_s"] for r in rs),
            "eval_s": statistics.mean(r["eval_s"] for r in rs),
        }
    return {"budget": budget, "curves": curves, "table": table, "reach": reach, "stats": stats}


def expected_best(values: list[float], k: int) -> float:
    """E[min of k draws with replacement] from the empirical distribution of ``values``."""
    xs = sorted(values)
    n = len(xs)
    return sum(x * (((n - i) / n) ** k - ((n - i - 1) / n) ** k) for i, x in enumerate(xs))


def _mean(values: list[float]) -> float:
    """The mean, or inf when some repetition has no completed trial yet."""
    return math.inf if any(math.isinf(v) for v in values) else statistics.fmean(values)


def write_figure(
    result: dict[str, Any], labels: dict[str, str], out: Path, stem: str
) -> list[Path]:
    """The curves as CSV, and as a plotly figure (JSON, and HTML loading ./plotly.min.js)."""
    import plotly.graph_objects as go

    out.mkdir(parents=True, exist_ok=True)
    budget = result["budget"]
    csv = out / f"{stem}.csv"
    lines = ["method,compute_fraction,steps,best_fid_mean,best_fid_min,best_fid_max"]
    fig = go.Figure()
    for key, curve in result["curves"].items():
        xs, ys = [], []
        for c, m, lo, hi in zip(
            curve["compute"], curve["mean"], curve["min"], curve["max"], strict=True
        ):
            lines.append(f"{key},{c / budget:.3f},{c:.0f},{_fmt(m)},{_fmt(lo)},{_fmt(hi)}")
            if math.isfinite(m):
                xs.append(c / budget)
                ys.append(m)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=key, hovertext=labels[key]))
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig.update_layout(
        title="Best final FID vs compute (mean over repetitions)",
        xaxis_title="fraction of the step budget spent",
        yaxis_title="best final FID so far (lower is better)",
        yaxis_type="log",
        template="plotly_white",
    )
    html = out / f"{stem}.html"
    # plotly.js (4.8 MB) is not embedded and no CDN is reachable offline: the page loads
    # ./plotly.min.js, which BENCHMARKS.md says how to write (it is not committed).
    html.write_text(fig.to_html(include_plotlyjs="directory", full_html=True), encoding="utf-8")
    figure_json = out / f"{stem}.json"
    fig.write_json(figure_json)
    return [csv, html, figure_json]


def _frac(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else ">1"


def _fractions(values: list[float]) -> str:
    return " ".join(f"{_frac(v):>4}" for v in values)


def _fmt(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else ""


def print_table(result: dict[str, Any], labels: dict[str, str], preset: Preset, meta: str) -> None:
    budget = result["budget"]
    print(meta)
    print(
        f"budget {budget} steps (= {preset.budget_trials} full trials of {preset.steps} steps) "
        "per method and repetition"
    )
    print("\nBest final FID (mean over repetitions; lower is better):")
    head = "".join(f"{f'{int(f * 100)} %':>10}" for f in FRACTIONS)
    print(f"{'method':18s}{head}   trials  states (mean per repetition)")
    for key, row in result["table"].items():
        cells = "".join(f"{_fmt(row[f]['mean']) or '-':>10}" for f in FRACTIONS)
        st = result["stats"][key]
        states = ", ".join(f"{k} {v:.1f}" for k, v in st["states"].items())
        print(f"{key:18s}{cells}   {st['trials']:6.1f}  {states}")
    reach = result["reach"]
    if reach:
        targets = reach["_targets"]
        print(
            "\nCompute to reach random search's best at 100 % (per repetition: "
            + ", ".join(f"{targets[r]:.1f}" for r in sorted(targets))
            + "), as a fraction of the budget:"
        )
        print(
            f"(mean curve: where the method's mean curve reaches the mean of those; pooled: "
            f"compute to reach random search's expected best over a whole budget, "
            f"{reach['_expected']:.1f}, estimated from all its trials)"
        )
        print(
            f"{'method':18s}{'per repetition':>20}  {'median':>6}  reached  {'mean curve':>10}"
            f"  {'pooled, per repetition':>22}  {'median':>6}"
        )
        for key, r in reach.items():
            if key.startswith("_"):
                continue
            print(
                f"{key:18s}{_fractions(r['per_rep']):>20}  {_frac(r['median']):>6}  "
                f"{r['reached']}/{len(r['per_rep'])}      {_frac(r['mean_curve']):>10}  "
                f"{_fractions(r['pooled_per_rep']):>22}  {_frac(r['pooled_median']):>6}"
            )
        if "default" in reach:
            d = reach["default"]
            for label, med in (("per repetition", d["median"]), ("pooled", d["pooled_median"])):
                verdict = "met" if med <= 1 / 3 else "NOT met"
                print(f"target (default needs <= 1/3 of random's compute, {label}): {verdict}")
    print("\nMethods:")
    for key in result["table"]:
        st = result["stats"][key]
        print(
            f"  {key:18s}{labels[key]}  (mean wall {st['wall_s']:.0f} s, eval {st['eval_s']:.0f} s)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition of tiny trials")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--methods", default="random,default,previous-default,random-hyperband,tpe-hyperband"
    )
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--seeds", help="the repetitions' study seeds (default 0 .. reps-1)")
    parser.add_argument("--budget-trials", type=int, help="budget in full trials (default 20)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--from-runs",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="re-analyse saved *_runs*.json files together, without training",
    )
    args = parser.parse_args(argv)

    preset = QUICK if args.quick else FULL
    if args.budget_trials:
        preset = dataclasses.replace(preset, budget_trials=args.budget_trials)
    reps = list(range(args.reps or (1 if args.quick else 3)))
    if args.seeds:
        reps = [int(x) for x in args.seeds.split(",")]
    all_methods = methods(preset)
    keys = [k.strip() for k in args.methods.split(",") if k.strip()]
    unknown = [k for k in keys if k not in all_methods]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(all_methods)}")
    stem = "search_efficiency_quick" if args.quick else "search_efficiency"
    runs_file = args.out / f"{stem}_runs.json"
    if args.seeds:
        runs_file = args.out / f"{stem}_runs_seeds_{'_'.join(str(r) for r in reps)}.json"
    if args.from_runs:  # re-analyse finished runs without training again
        runs, wall = [], 0.0
        for path in args.from_runs:
            saved = json.loads(path.read_text(encoding="utf-8"))
            runs += saved["runs"]
            wall += saved["wall_s"]
            preset = Preset(**saved["preset"])
        keys = [k for k in keys if any(r["key"] == k for r in runs)]
        reps = sorted({r["rep"] for r in runs})
    else:
        bench_spec(preset, args.data_dir, seed=0)  # a bad space fails before anything runs
        jobs = [
            {"key": k, "rep": rep, "preset": dataclasses.asdict(preset),
             "method": dataclasses.asdict(all_methods[k]), "data_dir": str(args.data_dir)}
            for rep in reps for k in keys
        ]  # fmt: skip
        print(
            f"{len(jobs)} studies on {args.jobs} process(es): {', '.join(keys)} x {len(reps)} reps",
            file=sys.stderr,
        )
        started = time.perf_counter()
        runs = []
        args.out.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.jobs, initializer=_worker_init) as pool:
            for run in pool.imap_unordered(run_study, jobs):
                runs.append(run)
                wall = time.perf_counter() - started
                print(f"study {run['key']} rep {run['rep']} done ({wall:.0f} s)", file=sys.stderr)
                # Saved as studies finish, so an interrupted run keeps what it did.
                record = {"preset": dataclasses.asdict(preset), "wall_s": wall, "runs": runs}
                runs_file.write_text(json.dumps(record), encoding="utf-8")
    all_methods = methods(preset)  # the preset may come from a file
    result = analyse(runs, keys, reps)
    labels = {k: all_methods[k].label for k in keys}
    files = write_figure(result, labels, args.out, stem)
    if not args.from_runs:
        files.append(runs_file)
    meta = (
        f"MNIST (60000 train images), DCGAN width {preset.width}, latent {preset.latent_dim}, "
        f"batch {preset.batch_size}, {preset.steps} steps per trial, FID (classifier features) "
        f"every {preset.eval_every} steps on {preset.eval_samples} samples, final FID on "
        f"{preset.final_samples}; {len(reps)} repetition(s) (study seeds "
        f"{', '.join(str(r) for r in reps)}); {args.jobs} process(es) x 1 torch "
        f"thread; {platform.node()}; total wall {wall:.0f} s"
    )
    if args.json:
        print(json.dumps({"meta": meta, "preset": dataclasses.asdict(preset), "labels": labels,
                          "runs": runs, "result": result}, default=str))  # fmt: skip
    else:
        print_table(result, labels, preset, meta)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
