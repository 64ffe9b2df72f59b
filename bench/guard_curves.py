"""Where the rule that stops hopeless trials is safe: FID and D-loss curves of random trials.

    python bench/guard_curves.py [--trials 40] [--length 1000] [--seed 100] [--jobs 2]
    python bench/guard_curves.py --from-runs bench/results/guard_curves.json

Trains ``--trials`` configurations drawn at random from ``bench/compute_budget.py``'s search
space (seeded by ``--seed``: seeds 100 and up, none of the compute-budget benchmark's), each to
its full length L with an evaluation every L / 10 steps, and records every evaluation: FID, its
std, D's and G's mean losses. Then it replays the stopping rules of
:mod:`ganhpo.worker._guard` over those curves, trial by trial in the order they were drawn (as a
study would meet them: the trials before one are the ones that ended), and counts for each
rule the steps it saves, the trials it stops that would have ended among the best (a trial is
"lost" when the rule stopped it and its final FID, had it gone on, was within 10 % of the best
final FID of all the trials), and the best final FID and rank among all trials of a trial it
stopped (how far the rule stays from stopping a winner). Curves go to
``--out/guard_curves.json``, the replay to ``--out/guard_replay.json`` and stdout (``--json``
for a script).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from compute_budget import random_configs, spec_text  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"
SIZE = {"width": 16, "latent_dim": 32, "batch_size": 32, "eval_samples": 500, "final_samples": 1000}


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration to its length; every evaluation's numbers."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import tomllib
    import torch

    from ganhpo.data import load_dataset
    from ganhpo.errors import DivergenceError
    from ganhpo.spec import parse_study_spec
    from ganhpo.train import Trainer

    torch.set_num_threads(1)
    spec = parse_study_spec(
        tomllib.loads(spec_text("random", job["length"], 4 * job["length"], 0, SIZE)),
        source="guard spec",
        check_data=False,
    )
    config = dataclasses.replace(spec.base.replace_params(**job["params"]), seed=job["index"])
    trainer = Trainer(
        config,
        data=load_dataset("mnist", data_dir=job["data_dir"], download=False),
        cache_dir=job["cache"],
    )
    curve: list[dict[str, Any]] = []
    started = time.perf_counter()
    diverged = None
    try:
        trainer.run(
            on_eval=lambda r: curve.append(
                {
                    "step": r.step,
                    "fid": r.fid,
                    "fid_std": r.fid_std,
                    "d_loss": r.d_loss,
                    "g_loss": r.g_loss,
                    "final": r.final,
                }
            )
        )
    except DivergenceError as e:
        diverged = e.step
    print(
        f"[trial {job['index']}] final {curve[-1]['fid'] if curve else None}",
        file=sys.stderr,
        flush=True,
    )
    return {
        "index": job["index"],
        "params": job["params"],
        "curve": curve,
        "diverged_at": diverged,
        "wall_s": time.perf_counter() - started,
    }


def replay(runs: list[dict[str, Any]], length: int) -> dict[str, Any]:
    """Each rule of :mod:`ganhpo.worker._guard` replayed over the recorded curves in order."""
    from ganhpo.worker._guard import GuardRule, Point, verdict

    runs = sorted(runs, key=lambda r: r["index"])
    finals = sorted(
        f for f in (next((c["fid"] for c in r["curve"] if c["final"]), None) for r in runs) if f
    )
    best = finals[0]
    rules = {
        "collapse only": GuardRule(hopeless_ratio=None),
        **{
            f"collapse + hopeless x{ratio:g} from {frac:g} L": GuardRule(
                hopeless_ratio=ratio, hopeless_from=frac
            )
            for ratio in (1.5, 2.0, 3.0)
            for frac in (0.1, 0.3, 0.5)
        },
    }
    out: dict[str, Any] = {}
    for name, rule in rules.items():
        saved = 0
        stopped: list[dict[str, Any]] = []
        finished: list[tuple[float, dict[int, float]]] = []  # (final, curve) of trials before
        for r in runs:
            points = [
                Point(c["step"], c["fid"], c["fid_std"], c["d_loss"])
                for c in r["curve"]
                if not c["final"]
            ]
            final = next((c["fid"] for c in r["curve"] if c["final"]), None)
            stop_at = None
            for i in range(len(points)):
                why = verdict(rule, points[: i + 1], finished, length=length, loss="any")
                if why:
                    stop_at = points[i].step
                    break
            if stop_at is not None:
                saved += length - stop_at
                stopped.append(
                    {
                        "index": r["index"],
                        "at": stop_at,
                        "final": final,
                        "lost": final is not None and final <= 1.1 * best,
                    }
                )
            if final is not None:
                finished.append((final, {p.step: p.fid for p in points}))
        stopped_finals = [s["final"] for s in stopped if s["final"] is not None]
        closest = min(stopped_finals, default=None)
        out[name] = {
            "best_stopped_final": closest,
            "best_stopped_rank": None if closest is None else finals.index(closest) + 1,
            "stopped": len(stopped),
            "saved_steps": saved,
            "saved_fraction": saved / (length * len(runs)),
            "lost": sum(s["lost"] for s in stopped),
            "stops": stopped,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("GANHPO_DATA_DIR", DEFAULT_DATA_DIR))
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--from-runs", type=Path, help="replay recorded curves instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.from_runs:
        data = json.loads(args.from_runs.read_text())
        runs, length = data["runs"], data["length"]
    else:
        length = args.length
        record = args.out / "guard_curves.json"
        done: list[dict[str, Any]] = []
        if record.exists():  # resumed: keep what an earlier part trained
            old = json.loads(record.read_text())
            if old["length"] == length and old["seed"] == args.seed:
                done = old["runs"]
        have = {r["index"] for r in done}
        cache = tempfile.mkdtemp(prefix="guard-cache-")
        configs = random_configs(args.seed, args.trials)
        jobs = [
            {"index": i, "params": c, "length": length, "data_dir": str(args.data_dir),
             "cache": cache}
            for i, c in enumerate(configs)
            if i not in have
        ]  # fmt: skip
        runs = done
        meta = f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
        args.out.mkdir(parents=True, exist_ok=True)
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for run in pool.imap_unordered(train_one, jobs):
                runs.append(run)
                record.write_text(
                    json.dumps(
                        {
                            "meta": meta,
                            "length": length,
                            "seed": args.seed,
                            "size": SIZE,
                            "runs": runs,
                        },
                        indent=1,
                    )
                    + "\n"
                )
    result = replay(runs, length)
    replayed = args.out / "guard_replay.json"
    replayed.write_text(json.dumps(result, indent=1) + "\n")
    print(f"replay written to {replayed}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    finals = [next((c["fid"] for c in r["curve"] if c["final"]), None) for r in runs]
    done_finals = [f for f in finals if f is not None]
    print(
        f"{len(runs)} trials of {length} steps; final FID median "
        f"{statistics.median(done_finals):.1f}, best {min(done_finals):.1f}"
    )
    print(
        f"{'rule':40s} {'stopped':>7s} {'steps saved':>11s} {'lost':>4s}  best stopped final (rank)"
    )
    for name, row in result.items():
        closest = row["best_stopped_final"]
        near = "-" if closest is None else f"{closest:.1f} ({row['best_stopped_rank']})"
        print(
            f"{name:40s} {row['stopped']:7d} {row['saved_fraction']:10.1%} {row['lost']:4d}  {near}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
