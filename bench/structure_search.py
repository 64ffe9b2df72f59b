"""Searching the networks against the default fixed-network study, at the same device time.

    python bench/structure_search.py [--quick] [--length 1000] [--hours 0.5] [--seeds 0,1]
        [--data-dir DIR] [--out DIR] [--json]

Two of the shipped studies, each run for real (``ganhpo study create`` on a SQLite study and
one ``ganhpo worker`` with one torch thread), side by side on the same machine, so that both
see the same load:

- ``default``: ``studies/mnist-dcgan.toml``, the default study: a fixed DCGAN (width 32,
  latent 64), searching the optimiser, batch size, D steps, loss, R1 and EMA;
- ``structure``: ``studies/mnist-structure.toml``: the architecture (DCGAN or SNGAN's ResNet),
  the widths of G and D, depth, latent size, spectral normalisation and the representation
  regularisers, next to the optimiser.

Each keeps its own search space, baselines, sampler and pruner (ganhpo's defaults: TPE, and
Hyperband over the trial's length for a compute budget). Both get the same budget in device
time, ``study.max_device_hours`` (training and evaluation seconds, what ganhpo charges each
trial: a ResNet step costs several DCGAN steps, a batch of 128 two of 64), instead of their
shipped trial and step budgets, and the same scaled-down length: ``--length`` steps a trial,
evaluations every quarter of it on ``--eval-samples`` images and at the end on
``--final-samples`` (FID in the shipped classifier's space, KID off).

Reported per study and seed: the device time spent, trials (complete, pruned, cut by the
budget), the best final FID of a generator trained to the full length, its generator's size,
and the smallest generator whose final FID is within 10 % of that best (``ganhpo study best
--fid-within 10`` asks the same of a Pareto study). Tables to stdout (``--json``: JSON),
progress to stderr, every trial to ``--out/structure_search_runs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package
sys.path.insert(1, str(ROOT / "bench"))

from _common import cpu_model, worker_env  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"
STUDIES = {
    "default": ROOT / "studies" / "mnist-dcgan.toml",
    "structure": ROOT / "studies" / "mnist-structure.toml",
}
WITHIN = 0.10  # "near the best FID": within 10 %


def spec_text(
    which: str, *, seed: int, length: int, hours: float, eval_samples: int, final_samples: int
) -> str:
    """The shipped spec with the benchmark's budget, length and evaluation sizes."""
    data = tomllib.loads(STUDIES[which].read_text(encoding="utf-8"))
    study = data["study"]
    for key in ("max_trials", "max_steps"):
        study.pop(key, None)
    study |= {"name": f"{which}-{seed}", "seed": seed, "max_device_hours": hours}
    data["train"]["steps"] = length
    data["train"].pop("checkpoint_every", None)  # at every evaluation, ganhpo's default
    data["eval"] |= {
        "every": length // 4,
        "samples": eval_samples,
        "final_samples": final_samples,
        "kid": "off",
        "grid": False,
    }
    data["device"] = "cpu"
    return tomli_w.dumps(data)


def run_pair(seed: int, args: argparse.Namespace, cache: Path) -> list[dict[str, Any]]:
    """Both studies of one seed, each with one worker, at the same time."""
    work = Path(tempfile.mkdtemp(prefix="structure-search-"))
    env = worker_env(cache, str(args.data_dir))
    base = [sys.executable, "-m", "ganhpo"]
    procs: dict[str, tuple[subprocess.Popen[bytes], Any, float]] = {}
    try:
        for which in STUDIES:
            spec = work / f"{which}.toml"
            spec.write_text(
                spec_text(
                    which,
                    seed=seed,
                    length=args.length,
                    hours=args.hours,
                    eval_samples=args.eval_samples,
                    final_samples=args.final_samples,
                ),
                encoding="utf-8",
            )
            storage = f"sqlite:///{work / which}.db"
            subprocess.run(
                [*base, "study", "create", str(spec), "--storage", storage, "--artifacts",
                 str(work / f"{which}-artifacts")],
                check=True, env=env, cwd=work, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        for which in STUDIES:
            storage = f"sqlite:///{work / which}.db"
            log = open(work / f"{which}.log", "w")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                [*base, "worker", "--study", f"{which}-{seed}", "--storage", storage],
                env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs[which] = (proc, log, time.perf_counter())
        results = []
        for which, (proc, log, started) in procs.items():
            code = proc.wait()
            log.close()
            wall = time.perf_counter() - started
            if code != 0:
                tail = (work / f"{which}.log").read_text()[-3000:]
                raise RuntimeError(f"[{which} seed {seed}] worker exited {code}:\n{tail}")
            results.append(read_run(which, seed, f"sqlite:///{work / which}.db", wall, args))
        return results
    finally:
        for proc, log, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
            log.close()
        shutil.rmtree(work, ignore_errors=True)


def read_run(
    which: str, seed: int, storage: str, wall: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One study's trials and what it spent."""
    import optuna

    from ganhpo.chains import seconds_spent

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=f"{which}-{seed}", storage=storage).get_trials()
    rows = []
    for t in trials:
        status = str(t.user_attrs.get("status", ""))
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "cut": "compute budget is spent" in status or "device-time budget" in status,
                "steps": int(t.user_attrs.get("steps", 0)),
                "device_s": float(t.user_attrs.get("device_seconds", 0.0)),
                "final_fid": t.value if t.state.name == "COMPLETE" else None,
                "g_params": t.user_attrs.get("g_params"),
                "d_params": t.user_attrs.get("d_params"),
                "params": t.params,
            }
        )
    run = {
        "study": which,
        "seed": seed,
        "budget_s": args.hours * 3600,
        "spent_s": seconds_spent(trials),
        "wall_s": wall,
        "trials": rows,
    }
    run |= score(run)
    print(
        f"[{which} seed {seed}] {len(rows)} trials, {run['spent_s']:.0f} of "
        f"{run['budget_s']:.0f} device-s, best {run['best_fid']}, smallest near it "
        f"{run['small_g_params']} params, {wall:.0f} s wall",
        file=sys.stderr,
        flush=True,
    )
    return run


def score(run: dict[str, Any]) -> dict[str, Any]:
    """The best final FID, its generator's size, and the smallest generator within 10 %."""
    done = [t for t in run["trials"] if t["final_fid"] is not None]
    counts = {
        "complete": len(done),
        "pruned": sum(1 for t in run["trials"] if t["state"] == "PRUNED" and not t["cut"]),
        "cut": sum(1 for t in run["trials"] if t["cut"]),
    }
    if not done:
        return {**counts, "best_fid": None, "best_g_params": None, "small_fid": None,
                "small_g_params": None, "best": None, "small": None}  # fmt: skip
    best = min(done, key=lambda t: t["final_fid"])
    near = [t for t in done if t["final_fid"] <= (1 + WITHIN) * best["final_fid"]]
    small = min(near, key=lambda t: (t["g_params"], t["final_fid"]))
    return {
        **counts,
        "best_fid": round(best["final_fid"], 2),
        "best_g_params": best["g_params"],
        "small_fid": round(small["final_fid"], 2),
        "small_g_params": small["g_params"],
        "best": best["params"],
        "small": small["params"],
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per study: the mean over seeds of what :func:`score` reports."""
    rows = []
    for which in STUDIES:
        mine = [r for r in runs if r["study"] == which]
        row: dict[str, Any] = {"study": which, "seeds": len(mine)}
        for key in ("spent_s", "complete", "pruned", "cut", "best_fid", "best_g_params",
                    "small_fid", "small_g_params"):  # fmt: skip
            values = [r[key] for r in mine if r[key] is not None]
            row[key] = round(statistics.mean(values), 1) if values else None
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, L = 200, 3 minutes")
    parser.add_argument("--length", type=int, help="steps a trial (default 1000)")
    parser.add_argument("--hours", type=float, help="device-hours per study (default 0.5)")
    parser.add_argument("--seeds", help="study seeds (default 0,1; 0 with --quick)")
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--final-samples", type=int, default=5000)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.length = args.length or (200 if args.quick else 1000)
    args.hours = args.hours or (0.05 if args.quick else 0.5)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1")).split(",")]
    if args.quick:
        args.eval_samples, args.final_samples = 500, 1000
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder holding the full MNIST")
    import torch

    import ganhpo

    meta = (
        f"{cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, ganhpo "
        f"{ganhpo.__version__}; L = {args.length} steps, {args.hours:g} device-h per study, "
        f"seeds {seeds}"
    )
    print(meta, file=sys.stderr)
    cache = Path(tempfile.mkdtemp(prefix="structure-search-cache-"))
    runs: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            runs += run_pair(seed, args, cache)
            args.out.mkdir(parents=True, exist_ok=True)
            name = "structure_search_runs" + ("_quick" if args.quick else "")
            (args.out / f"{name}.json").write_text(
                json.dumps({"meta": meta, "runs": runs}, indent=1)
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    summary = summarise(runs)
    if args.json:
        print(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2))
        return 0
    keys = ["study", "seed", "spent_s", "complete", "pruned", "cut", "best_fid", "best_g_params",
            "small_fid", "small_g_params"]  # fmt: skip
    print(meta)
    print(" | ".join(keys))
    for r in runs:
        print(" | ".join(str(round(r[k], 1) if isinstance(r[k], float) else r[k]) for k in keys))
    print("mean over seeds:")
    for row in summary:
        print(" | ".join(str(row.get(k, "")) for k in keys))
    for r in runs:
        print(f"{r['study']} seed {r['seed']}: best {r['best']}; smallest near it {r['small']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
