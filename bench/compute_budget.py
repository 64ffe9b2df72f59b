"""The user's question: the best generator a compute budget buys.

    python bench/compute_budget.py [--quick] [--length 1000] [--budgets 4,10] [--reps 3 |
        --seeds 0,1,2] [--methods preset,dcgan,...] [--jobs 2] [--out DIR] [--runs-file NAME]
        [--select-seeds 0,1,2] [--json]
    python bench/compute_budget.py --from-runs bench/results/compute_budget_runs*.json

Every method gets the same compute budget B = k * L training steps (G updates, counting what
pruned, cut and exploited trials trained) for k in ``--budgets``, and is scored by the best final
FID of a generator it trained: a trial stopped earlier is not a result. The search methods train
trials of L steps (``--length``); ``preset-budget`` and the ``grow`` strategies train longer.
The methods:

- ``preset``: one run of ganhpo's default training preset (:class:`ganhpo.train.TrainConfig`'s
  learning rates, betas and loss) for L steps; it spends L of the budget.
- ``preset-budget``: one run of the preset for the whole budget B: no search at all.
- ``dcgan``: one run of DCGAN's published defaults (Radford et al. 2016: Adam 2e-4, beta1 0.5).
- ``random``: random search with L-step trials, no pruning (Lucic et al. 2018): B / L trials.
- ``default``: ganhpo's default strategy: a spec with a compute budget and neither ``[sampler]``
  nor ``[pruner]`` (TPE + the median pruner), the preset enqueued first as a baseline.
- ``hyperband``: random search + Optuna's Hyperband pruner (first rung one evaluation, max L,
  eta 3): Li et al. 2018's algorithm.
- ``tpe-hyperband``: the default's TPE and baseline + Hyperband (BOHB-like), trials of L
  (strategy ``optuna``: the default of a compute budget before strategy ``grow``).
- ``grow-F``: strategy ``grow`` (``ganhpo.worker._grow``): TPE + Hyperband with the preset first
  for a share F of the budget, then the best completed trial goes on from its final state for
  the rest (F = 0.25, 0.5, 0.75).
- ``pbt``: ganhpo's population-based training, ``pbt_members(B, L)`` members (the preset and
  random configurations) that each train as long as the budget allows them (B / members steps),
  perturbing the learning rates at every evaluation (every L / 10 steps).
- ``ray-pbt``: Ray Tune's ``PopulationBasedTraining`` driving the same ``Trainer`` from the
  same initial members, as long (the outside anchor; ``pip install 'ray[tune]'``).

The ganhpo methods run the real product: ``ganhpo study create`` of a generated spec on a SQLite
study and one ``ganhpo worker`` process with one torch thread (``--jobs`` studies at a time), so
the budget is the worker's own compute budget (``study.max_steps``) and compute is what the
trials reserved. Ray Tune runs ``--jobs`` members at a time in one Ray instance; compute is the
steps its members trained, counted by the trainable. Repetition ``r`` uses study seed ``r``:
trial ``n`` trains with the same seed (initial weights, batches, noise) in every method, and
both PBTs start from the same population. Every sampler is seeded by the repetition too (one
worker a study: the run is repeatable), so repetitions are paired across methods. Random
search, Hyperband and the PBTs run without ganhpo's guard (``strategy.guard = false``): they
are the published algorithms; ``tpe-hyperband`` and ``grow-F`` are ganhpo's, guard on.

The default is chosen among ``CANDIDATES`` on the repetitions of ``--select-seeds`` (lowest
mean rank of the median over the budgets) and reported on the others, which played no part in
choosing it. Runs already in ``--out/--runs-file`` (same method, seed, budget and length) are
not run again: the benchmark runs in parts and a rerun resumes it.

Evaluations compute FID only (KID off) with the classifier that ships with ganhpo: every
``L / 10`` steps on ``--eval-samples`` samples (what pruners and PBT see) and at L on
``--final-samples`` (what is scored). Evaluation time is not in the budget. Results go to stdout
(tables, or JSON with --json), progress to stderr; every run's trials to
``--out/compute_budget_runs.json``, the figure to ``--out/compute_budget.{json,html,csv}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package
sys.path.insert(1, str(ROOT / "bench"))

from _common import worker_env  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"
GROWS = ("grow-0.25", "grow-0.5", "grow-0.75")
METHODS = (
    "preset", "preset-budget", "dcgan", "random", "default", "hyperband", "tpe-hyperband",
    *GROWS, "pbt", "ray-pbt",
)  # fmt: skip
SINGLE = ("preset", "dcgan")  # one run of L steps: the same at every budget
# The methods the default strategy of a study with a compute budget is chosen among.
CANDIDATES = ("tpe-hyperband", *GROWS)
# The search space: the default study's (studies/mnist-dcgan.toml) less the parameters that
# change the cost of a step (batch size, D steps, the R1 penalty's double backward), so that
# steps measure compute alike for every configuration; EMA is off (at 0.999 it would keep a
# third of the initial weights after 1,000 steps).
SPACE: dict[str, dict[str, Any]] = {
    "lr_g": {"low": 1e-5, "high": 1e-2, "log": True},
    "lr_d": {"low": 1e-5, "high": 1e-2, "log": True},
    "beta1": {"choices": [0.0, 0.5, 0.9]},
    "beta2": {"choices": [0.9, 0.99, 0.999]},
    "loss": {"choices": ["ns", "hinge"]},
}
DCGAN = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "loss": "ns"}


def preset_values() -> dict[str, Any]:
    """ganhpo's default training preset, for the searched parameters."""
    from ganhpo.train import TrainConfig

    train = TrainConfig().train
    return {k: getattr(train, k) for k in SPACE}


def random_configs(seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` configurations drawn uniformly (log-uniform for learning rates) from SPACE."""
    rng = random.Random(f"compute-budget:{seed}")
    out = []
    for _ in range(n):
        c: dict[str, Any] = {}
        for k, s in SPACE.items():
            if "choices" in s:
                c[k] = rng.choice(s["choices"])
            else:
                c[k] = 10 ** rng.uniform(math.log10(s["low"]), math.log10(s["high"]))
        out.append(c)
    return out


def pbt_members(budget: int, length: int) -> int:
    """PBT's population at a budget: 4 members (the issue's and Ray Tune's examples), fewer when
    the budget holds fewer trials of L; each trains budget / members steps."""
    return max(1, min(4, budget // length))


def population(seed: int, n: int) -> list[dict[str, Any]]:
    """PBT's initial members: the preset, then random configurations (both PBTs start alike)."""
    return [preset_values(), *random_configs(seed, n - 1)]


# ------------------------------------------------------------------------------- the specs
def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def spec_text(method: str, length: int, budget: int, seed: int, size: dict[str, int]) -> str:
    """The study spec a ganhpo method runs (TOML)."""
    members = pbt_members(budget, length)
    study: dict[str, Any] = {"name": f"{method}-{seed}", "objective": "fid", "seed": seed}
    baselines = [preset_values()]
    sampler: dict[str, Any] | None = None
    pruner: dict[str, Any] | None = None
    strategy: dict[str, Any] | None = None
    hyperband = {
        "name": "hyperband",
        "min_resource": length // 10,
        "max_resource": length,
        "reduction_factor": 3,
    }
    tpe = {"name": "tpe", "multivariate": True, "n_startup_trials": 10, "seed": seed}
    published = {"name": "optuna", "guard": False}  # the algorithms as published
    steps, every = length, length // 10
    if method in SINGLE:
        study["max_trials"], study["max_steps"] = 1, length
        baselines = [DCGAN if method == "dcgan" else preset_values()]
    elif method == "preset-budget":
        study["max_trials"], study["max_steps"] = 1, budget
        steps, every = budget, budget // 10
    else:
        study["max_steps"] = budget
        if method == "random":
            sampler, pruner, baselines = {"name": "random", "seed": seed}, {"name": "none"}, []
            strategy = published
        elif method == "hyperband":
            sampler, pruner, baselines = {"name": "random", "seed": seed}, hyperband, []
            strategy = published
        elif method == "tpe-hyperband":  # trials of L (strategy grow is the default now)
            sampler, pruner = tpe, hyperband
            strategy = {"name": "optuna"}
        elif method in GROWS:
            sampler, pruner = tpe, hyperband
            strategy = {"name": "grow", "search_fraction": float(method.split("-")[1])}
        elif method == "pbt":
            study["max_trials"] = members
            steps = budget // members  # as long as the budget allows each member
            baselines = population(seed, members)
            strategy = {"name": "pbt", "hyperparams": ["lr_g", "lr_d"]}
        elif method != "default":
            raise ValueError(method)
    lines = ['device = "cpu"', "", "[study]"] + [f"{k} = {_toml(v)}" for k, v in study.items()]
    lines += ["", "[dataset]", 'name = "mnist"', "", "[model]", 'arch = "dcgan"']
    lines += [f"width = {size['width']}", f"latent_dim = {size['latent_dim']}"]
    lines += ["", "[train]", f"steps = {steps}", f"batch_size = {size['batch_size']}"]
    lines += ["", "[eval]", f"every = {every}", f"samples = {size['eval_samples']}"]
    lines += [f"final_samples = {size['final_samples']}", 'extractor = "classifier"']
    lines += ['kid = "off"', "grid = false"]
    lines += ["", "[search]"] + [f"{k} = {_toml(v)}" for k, v in SPACE.items()]
    for name, table in (("sampler", sampler), ("pruner", pruner), ("strategy", strategy)):
        if table is not None:
            lines += ["", f"[{name}]"] + [f"{k} = {_toml(v)}" for k, v in table.items()]
    for b in baselines:
        lines += ["", "[[baselines]]"] + [f"{k} = {_toml(v)}" for k, v in b.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- the runs
def run_ganhpo(job: dict[str, Any]) -> dict[str, Any]:
    """One ganhpo method at one budget and seed: a real study and one real worker."""
    import optuna

    from ganhpo.chains import member_of, steps_spent

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    method, seed, length, budget = job["method"], job["seed"], job["length"], job["budget"]
    tag = f"[{method} B={budget} seed {seed}]"
    work = Path(tempfile.mkdtemp(prefix=f"budget-{method}-"))
    try:
        spec = work / "spec.toml"
        spec.write_text(spec_text(method, length, budget, seed, job["size"]), encoding="utf-8")
        storage = f"sqlite:///{work / 'study.db'}"
        env = worker_env(Path(job["cache"]), job["data_dir"])
        base = [sys.executable, "-m", "ganhpo"]
        subprocess.run(
            [
                *base,
                "study",
                "create",
                str(spec),
                "--storage",
                storage,
                "--artifacts",
                str(work / "artifacts"),
            ],
            check=True,
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
        )
        started = time.perf_counter()
        with open(work / "worker.log", "w") as log:
            code = subprocess.run(
                [*base, "worker", "--study", f"{method}-{seed}", "--storage", storage],
                env=env,
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
            ).returncode
        wall = time.perf_counter() - started
        if code != 0:
            tail = (work / "worker.log").read_text()[-3000:]
            raise RuntimeError(f"{tag} worker exited {code}:\n{tail}")
        trials = optuna.load_study(study_name=f"{method}-{seed}", storage=storage).get_trials()
        rows = []
        for t in sorted(trials, key=lambda t: (t.datetime_complete or t.datetime_start, t.number)):
            rows.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "member": member_of(t),
                    "steps": int(t.user_attrs.get("steps_reserved", 0)),
                    "reached": int(t.user_attrs.get("steps", 0)),
                    "final_fid": t.value if t.state.name == "COMPLETE" else None,
                    "params": t.params,
                    "status": t.user_attrs.get("status", ""),
                    "curve": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                }
            )
        spent = steps_spent(trials)
        result: dict[str, Any] = {
            "method": method, "seed": seed, "budget": budget, "length": length,
            "spent": spent, "trials": rows, "wall_s": wall,
        }  # fmt: skip
        print(
            f"{tag} {len(rows)} trials, {spent} steps, best {best_fid(result):.1f}, {wall:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ray_member(config: dict[str, Any]) -> None:
    """One Ray Tune trial: a Trainer that trains one evaluation interval per report."""
    import dataclasses

    import torch
    from ray import tune

    from ganhpo.data import load_dataset
    from ganhpo.spec import parse_study_spec
    from ganhpo.train import Trainer
    from ganhpo.train.checkpoint import load_checkpoint, save_checkpoint
    from ganhpo.worker import trial_seed

    torch.set_num_threads(1)
    job = config["job"]
    length = job["budget"] // pbt_members(job["budget"], job["length"])  # each member's
    spec = parse_study_spec(
        __import__("tomllib").loads(
            spec_text("pbt", job["length"], job["budget"], job["seed"], job["size"])
        ),
        source="ray-pbt spec",
    )
    params = {k: config[k] for k in SPACE}
    member = config["member"]
    # The seed ganhpo's PBT gives member n (its trial n).
    cfg = dataclasses.replace(spec.base.replace_params(**params), seed=trial_seed(spec, member))
    trainer = Trainer(
        cfg,
        data=load_dataset("mnist", data_dir=job["data_dir"], download=False),
        cache_dir=job["cache"],
    )
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(load_checkpoint(Path(d) / "state.pt"), adopt=("lr_g", "lr_d"))
    interval = job["length"] // 10  # PBT's interval: an evaluation, every L / 10 steps
    log = Path(job["log"])
    while trainer.step < length:
        start, until = trainer.step, trainer.step + interval
        records: list[Any] = []

        def stop(until: int = until) -> bool:
            return trainer.step >= until

        trainer.run(on_eval=records.append, should_stop=stop)
        record = records[-1]
        with open(log, "a") as f:  # compute as trained, whoever restores whom
            f.write(
                json.dumps(
                    {
                        "member": member,
                        "from": start,
                        "to": trainer.step,
                        "fid": record.fid,
                        "final": record.final,
                        "lr_g": trainer.config.train.lr_g,
                        "lr_d": trainer.config.train.lr_d,
                    }
                )
                + "\n"
            )
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(trainer.state_dict(), Path(d) / "state.pt")
            tune.report(
                {"fid": record.fid, "step": trainer.step},
                checkpoint=tune.Checkpoint.from_directory(d),
            )


def run_ray(job: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune's PopulationBasedTraining on the same members, budget and Trainer."""
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    seed, length, budget = job["seed"], job["length"], job["budget"]
    members = pbt_members(budget, length)
    member_length = budget // members
    work = Path(tempfile.mkdtemp(prefix="budget-ray-"))
    job = {**job, "log": str(work / "steps.jsonl")}
    random.seed(seed)  # Ray's PBT draws its choices from Python's random module
    initial = population(seed, members)
    started = time.perf_counter()
    try:
        ray.init(
            num_cpus=job["jobs"],
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}},
        )
        space: dict[str, Any] = {"job": job, "member": tune.grid_search(list(range(members)))}
        for k in SPACE:

            def initial_value(s: Any, k: str = k) -> Any:
                return initial[s.config.member][k]

            space[k] = tune.sample_from(initial_value)
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=1,  # every evaluation, as ganhpo's PBT
            quantile_fraction=0.25,
            resample_probability=0.25,
            hyperparam_mutations={
                k: tune.loguniform(SPACE[k]["low"], SPACE[k]["high"]) for k in ("lr_g", "lr_d")
            },
        )
        tuner = tune.Tuner(
            tune.with_resources(_ray_member, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="fid", mode="min", scheduler=scheduler, reuse_actors=False
            ),
            run_config=tune.RunConfig(
                name=f"ray-pbt-{seed}-{budget}",
                storage_path=str(work / "ray"),
                stop={"step": member_length},
                verbose=0,
            ),
        )
        with contextlib.redirect_stdout(sys.stderr):  # Ray's tables are progress, not results
            tuner.fit()
        lines = [json.loads(x) for x in (work / "steps.jsonl").read_text().splitlines()]
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    spent = sum(x["to"] - x["from"] for x in lines)
    finals = [x for x in lines if x["final"]]
    rows = [
        {
            "number": i,
            "state": "COMPLETE",
            "member": x["member"],
            "steps": 0,
            "reached": member_length,
            "final_fid": x["fid"],
            "params": {},
        }
        for i, x in enumerate(finals)
    ]
    wall = time.perf_counter() - started
    best = min((x["fid"] for x in finals), default=None)
    print(
        f"[ray-pbt B={budget} seed {seed}] {spent} steps, best {best}, {wall:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return {
        "method": "ray-pbt",
        "seed": seed,
        "budget": budget,
        "length": length,
        "spent": spent,
        "trials": rows,
        "intervals": lines,
        "wall_s": wall,
    }


# ------------------------------------------------------------------------------ analysis
def best_fid(run: dict[str, Any]) -> float:
    values = [t["final_fid"] for t in run["trials"] if t["final_fid"] is not None]
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else math.inf


def analyse(
    runs: list[dict[str, Any]], length: int, seeds: list[int] | None = None
) -> dict[str, Any]:
    """Per budget and method, over the repetitions of ``seeds`` (all when None): the best FID
    of every repetition, their median and mean, compute spent, trials."""
    if seeds is not None:
        runs = [r for r in runs if r["seed"] in seeds]
    budgets = sorted({r["budget"] for r in runs if r["method"] not in SINGLE})
    table: dict[int, dict[str, Any]] = {}
    for budget in budgets:
        rows: dict[str, Any] = {}
        for method in METHODS:
            mine = [
                r
                for r in runs
                if r["method"] == method and (method in SINGLE or r["budget"] == budget)
            ]
            if not mine:
                continue
            mine.sort(key=lambda r: r["seed"])
            bests = [best_fid(r) for r in mine]
            finite = [b for b in bests if math.isfinite(b)]
            rows[method] = {
                "seeds": [r["seed"] for r in mine],
                "best": bests,
                "median": statistics.median(bests) if bests else math.inf,
                "mean": statistics.fmean(finite) if finite else math.inf,
                "spent": statistics.fmean(r["spent"] for r in mine),
                "trials": statistics.fmean(len(r["trials"]) for r in mine),
                "at_length": statistics.fmean(
                    sum(t["final_fid"] is not None for t in r["trials"]) for r in mine
                ),
                "longest": statistics.fmean(
                    max(
                        (t["reached"] for t in r["trials"] if t["final_fid"] is not None), default=0
                    )
                    for r in mine
                ),
                "wall_s": statistics.fmean(r["wall_s"] for r in mine),
                # Trials ganhpo's guard stopped (collapsed, or no hope), per repetition.
                "guard_stops": statistics.fmean(
                    sum(t.get("status", "").startswith("stopped: ") for t in r["trials"])
                    for r in mine
                ),
            }
        table[budget] = rows
    return {"length": length, "seeds": seeds, "table": table}


def choose_default(result: dict[str, Any]) -> dict[str, Any]:
    """The candidate with the lowest mean rank of its median best FID over the budgets (ties:
    the lower mean of the medians), from an :func:`analyse` of the selection repetitions."""
    ranks: dict[str, list[int]] = {m: [] for m in CANDIDATES}
    medians: dict[str, list[float]] = {m: [] for m in CANDIDATES}
    for rows in result["table"].values():
        present = [m for m in CANDIDATES if m in rows]
        for rank, m in enumerate(sorted(present, key=lambda m: rows[m]["median"]), start=1):
            ranks[m].append(rank)
            medians[m].append(rows[m]["median"])
    scored = {
        m: (statistics.fmean(ranks[m]), statistics.fmean(medians[m]))
        for m in CANDIDATES
        if ranks[m]
    }
    chosen = min(scored, key=lambda m: scored[m])
    return {"chosen": chosen, "mean_rank_and_median": scored}


def _fmt(v: float) -> str:
    return f"{v:.1f}" if math.isfinite(v) else "-"


def print_tables(result: dict[str, Any], meta: str) -> None:
    length = result["length"]
    print(meta)
    if result.get("seeds") is not None:
        print(f"repetitions (study and sampler seeds): {', '.join(map(str, result['seeds']))}")
    for budget, rows in result["table"].items():
        print(f"\nBudget B = {budget} steps = {budget // length} L (L = {length} steps)")
        print(
            f"{'method':14s} {'best final FID per repetition':>30s} {'median':>7s} "
            f"{'mean':>7s}  {'steps spent':>11s}  {'trials':>6s}  {'longest':>7s}  {'wall s':>6s}"
        )
        for method, row in rows.items():
            per = " / ".join(_fmt(b) for b in row["best"])
            print(
                f"{method:14s} {per:>30s} {_fmt(row['median']):>7s} {_fmt(row['mean']):>7s}  "
                f"{row['spent']:11.0f}  {row['trials']:6.1f}  {row['longest']:7.0f}  "
                f"{row['wall_s']:6.0f}"
            )


def write_figure(result: dict[str, Any], out: Path, stem: str = "compute_budget") -> list[Path]:
    """Best final FID per method and budget (mean, and each seed), as CSV and plotly, to
    ``out/STEM.{csv,html,json}``."""
    import plotly.graph_objects as go

    out.mkdir(parents=True, exist_ok=True)
    length = result["length"]
    lines = ["budget_steps,budget_l,method,seed,best_final_fid"]
    fig = go.Figure()
    for budget, rows in result["table"].items():
        names = list(rows)
        fig.add_trace(
            go.Bar(
                name=f"B = {budget // length} L (mean)", x=names, y=[rows[m]["mean"] for m in names]
            )
        )
        for m in names:
            for seed, b in zip(rows[m]["seeds"], rows[m]["best"], strict=True):
                lines.append(f"{budget},{budget // length},{m},{seed},{_fmt(b)}")
    fig.update_layout(
        title=f"Best final FID of a generator trained to L = {length} steps, same budget B",
        yaxis_title="best final FID (lower is better)",
        barmode="group",
        template="plotly_white",
    )
    csv = out / f"{stem}.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    html = out / f"{stem}.html"
    html.write_text(fig.to_html(include_plotlyjs="directory", full_html=True), encoding="utf-8")
    fig_json = out / f"{stem}.json"
    fig.write_json(fig_json)
    return [csv, html, fig_json]


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, L = 200, B = 2 L")
    parser.add_argument("--length", type=int, help="target length L in steps (default 1000)")
    parser.add_argument("--budgets", help="budgets in multiples of L (default 4,10)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--seeds", help="the repetitions' study seeds (default 0 .. reps-1)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("GANHPO_DATA_DIR", DEFAULT_DATA_DIR))
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--runs-file",
        default="compute_budget_runs.json",
        help="where in --out the runs are kept (and resumed from)",
    )
    parser.add_argument(
        "--select-seeds",
        help="the repetitions the default is chosen on; the tables report the others apart",
    )
    parser.add_argument(
        "--from-runs",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="analyse recorded runs instead of running",
    )
    args = parser.parse_args(argv)

    meta = (
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}"
    )
    if args.from_runs:
        runs = [r for f in args.from_runs for r in json.loads(f.read_text())["runs"]]
        length = runs[0]["length"]
    else:
        length = args.length or (200 if args.quick else 1000)
        budgets = [int(k) for k in (args.budgets or ("2" if args.quick else "4,10")).split(",")]
        if args.seeds:
            seeds = [int(s) for s in args.seeds.split(",")]
        else:
            seeds = list(range(args.reps or (1 if args.quick else 3)))
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
        if length % 10:
            parser.error(f"--length {length} must be a multiple of 10 (evaluations at L / 10)")
        size = {
            "width": 16,
            "latent_dim": 32,
            "batch_size": 32,
            "eval_samples": 500,
            "final_samples": 1000,
        }
        if args.quick:
            size.update(eval_samples=300, final_samples=500)
        cache = Path(tempfile.mkdtemp(prefix="budget-cache-"))
        common = {
            "length": length,
            "size": size,
            "data_dir": str(args.data_dir),
            "cache": str(cache),
            "jobs": args.jobs,
        }
        # --quick results are not recorded (a scratch file, like the figure: none).
        record = (cache if args.quick else args.out) / args.runs_file
        args.out.mkdir(parents=True, exist_ok=True)
        runs = []
        if record.exists():  # an earlier part: its runs are kept, not run again
            runs = [r for r in json.loads(record.read_text())["runs"] if r["length"] == length]
        done = {(r["method"], r["seed"], r["budget"]) for r in runs}
        jobs: list[dict[str, Any]] = []
        ray_jobs: list[dict[str, Any]] = []
        for seed in seeds:
            for method in methods:
                for budget in [budgets[0]] if method in SINGLE else budgets:
                    job = {**common, "method": method, "seed": seed, "budget": budget * length}
                    if (method, seed, budget * length) in done:
                        continue
                    (ray_jobs if method == "ray-pbt" else jobs).append(job)
        print(
            f"{len(done)} runs kept from {record}, {len(jobs) + len(ray_jobs)} to run",
            file=sys.stderr,
        )

        def cost(job: dict[str, Any]) -> int:
            return length if job["method"] in SINGLE else int(job["budget"])

        # The selection repetitions first (a part that stops early leaves whole sets); in each,
        # the longest first, so that the two processes end together.
        order = {seed: i for i, seed in enumerate(seeds)}
        jobs.sort(key=lambda j: (order[j["seed"]] // 3, -cost(j)))
        started = time.perf_counter()

        def save() -> None:
            record.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for run in pool.imap_unordered(run_ganhpo, jobs):
                runs.append(run)
                save()
        for job in ray_jobs:  # Ray uses all --jobs cores itself
            runs.append(run_ray(job))
            save()
        if not args.quick:
            shutil.rmtree(cache, ignore_errors=True)
        meta += f"; {time.perf_counter() - started:.0f} s wall"
        print(f"runs written to {record}", file=sys.stderr)
    if args.select_seeds:
        select = [int(x) for x in args.select_seeds.split(",")]
        held_out = sorted({r["seed"] for r in runs} - set(select))
        chosen = choose_default(analyse(runs, length, select))
        out: dict[str, Any] = {
            "selection": analyse(runs, length, select),
            "choice": chosen,
            "held_out": analyse(runs, length, held_out) if held_out else None,
        }
        if args.json:
            print(json.dumps(out, indent=1))
        else:
            print_tables(out["selection"], meta + "\n\nSELECTION (the default is chosen here)")
            scores = chosen["mean_rank_and_median"].items()
            listed = ", ".join(f"{m} {r:.2f} {v:.1f}" for m, (r, v) in scores)
            print(f"\nchosen default: {chosen['chosen']}  (mean rank, mean median: {listed})")
            if out["held_out"] is not None:
                print_tables(out["held_out"], "\nHELD OUT (no part in the choice)")
        result = out["held_out"] or out["selection"]
    else:
        result = analyse(runs, length)
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print_tables(result, meta)
    if not args.quick:
        source = args.from_runs[0].name if args.from_runs else args.runs_file
        stem = source.removesuffix(".json").removesuffix("_runs")
        if args.select_seeds:  # the tables the default was chosen and reported on, as data
            summary = args.out / f"{stem}_summary.json"
            summary.write_text(json.dumps(out, indent=1) + "\n")
            print(f"wrote {summary}", file=sys.stderr)
        for path in write_figure(result, args.out, stem):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
