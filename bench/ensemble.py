"""Does an ensemble of a study's best generators beat its best generator alone?

    python bench/ensemble.py [--dataset mnist|digits] [--seeds 0,1,2] [--ks 2,3,5]
        [--data-dir DIR] [--out DIR]

For each repetition r: a real study (``ganhpo study create`` + one ``ganhpo worker``, SQLite)
of the default study's search space scaled to these 2 cores (full MNIST, DCGAN width 16,
latent 32, batch 32, 10 trials of 1,000 steps, the preset first, TPE seeded by r, no pruner so
that every trial ends with a generator), then ``ganhpo ensemble --top K`` for each K: every
member alone, the uniform mixture and the fitted one on MNIST's test split (10,000 images,
fresh latents), the weights fitted on a validation sample of the training split. Results go to
``--out/ensemble_runs.json`` after each repetition (a rerun keeps what is there) and the
tables to ``ensemble_summary.json``; nothing here was used to choose a default.

``--dataset digits``: scikit-learn's 1,797 8x8 scans of digits (not MNIST) as an ``.npz``,
resized to 16x16, FID in the features of a classifier ganhpo trains on them on demand, the
test reference the 10 % of them the study sets aside when it is created (no test split):
files ``ensemble_digits_runs.json`` and ``ensemble_digits_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import worker_env  # noqa: E402
from compute_budget import SPACE, _toml, preset_values  # noqa: E402

TRIALS, LENGTH = 10, 1000
SIZE = {"width": 16, "latent_dim": 32, "batch_size": 32}


def digits_npz(path: Path) -> Path:
    """scikit-learn's digits as a uint8 .npz (images [N, 8, 8], labels)."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 255 / 16).round().astype(np.uint8)
    np.savez(path, images=images, labels=digits.target.astype(np.int64))
    return path


def spec_text(seed: int, npz: Path | None = None) -> str:
    """The study of repetition ``seed`` (TOML); on the .npz ``npz`` when given, else MNIST."""
    dataset = ['name = "mnist"']
    if npz is not None:
        dataset = ['name = "npz"', f"path = {_toml(str(npz))}", "resolution = 16"]
    lines = ['device = "cpu"', "", "[study]", f'name = "ens-{seed}"', 'objective = "fid"']
    lines += [f"seed = {seed}", f"max_trials = {TRIALS}", "", "[dataset]", *dataset]
    lines += ["", "[model]", 'arch = "dcgan"']
    lines += [f"width = {SIZE['width']}", f"latent_dim = {SIZE['latent_dim']}"]
    lines += ["", "[train]", f"steps = {LENGTH}", f"batch_size = {SIZE['batch_size']}"]
    lines += ["", "[eval]", f"every = {LENGTH // 4}", "samples = 500", "final_samples = 1000"]
    lines += ['extractor = "classifier"', 'kid = "off"', "grid = false"]
    lines += ["", "[search]"] + [f"{k} = {_toml(v)}" for k, v in SPACE.items()]
    lines += ["", "[sampler]", 'name = "tpe"', "n_startup_trials = 5", f"seed = {seed}"]
    lines += ["", "[pruner]", 'name = "none"', "", "[strategy]", 'name = "optuna"']
    lines += ["", "[[baselines]]"] + [f"{k} = {_toml(v)}" for k, v in preset_values().items()]
    return "\n".join(lines) + "\n"


def run_seed(
    seed: int, ks: list[int], data_dir: str | None, cache: Path, dataset: str = "mnist"
) -> dict[str, Any]:
    """One repetition: the study, then one ensemble per K."""
    work = Path(tempfile.mkdtemp(prefix=f"ensemble-{dataset}-{seed}-"))
    spec = work / "spec.toml"
    npz = digits_npz(work / "digits.npz") if dataset == "digits" else None
    spec.write_text(spec_text(seed, npz), encoding="utf-8")
    samples, fit = ("10000", "5000") if npz is None else ("1000", "1000")
    storage = f"sqlite:///{work / 'study.db'}"
    env = worker_env(cache, data_dir)
    base = [sys.executable, "-m", "ganhpo"]
    where = ["--storage", storage]
    subprocess.run(
        [*base, "study", "create", str(spec), *where, "--artifacts", str(work / "store")],
        check=True, env=env, cwd=work, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    started = time.perf_counter()
    with open(work / "worker.log", "w") as log:
        subprocess.run(
            [*base, "worker", "--study", f"ens-{seed}", *where],
            check=True, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    study_s = time.perf_counter() - started
    ensembles = {}
    for k in ks:
        done = subprocess.run(
            [*base, "ensemble", f"ens-{seed}", "--top", str(k), "--out", str(work / f"top{k}"),
             "--samples", samples, "--fit-samples", fit, "--json", "--no-record", "-q",
             *where],
            check=True, env=env, cwd=work, capture_output=True, text=True,
        )  # fmt: skip
        ensembles[str(k)] = json.loads(done.stdout)
        print(f"[seed {seed} K={k}] {_line(ensembles[str(k)])}", file=sys.stderr, flush=True)
    return {"seed": seed, "study_s": study_s, "ensembles": ensembles}


def _line(e: dict[str, Any]) -> str:
    best = min(m["test_fid"] for m in e["members"])
    mixtures = e["mixtures"]
    weights = [round(w, 2) for w in mixtures["fitted"]["weights"]]
    return (
        f"best member {best:.1f}, uniform {mixtures['uniform']['test_fid']:.1f}, fitted "
        f"{mixtures['fitted']['test_fid']:.1f} (weights {weights})"
    )


def summarize(runs: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Per K: each repetition's best single test FID, uniform and fitted mixture, with their
    stds, and the median and mean of each over the repetitions."""
    table: dict[str, Any] = {}
    for k in ks:
        rows = []
        for run in runs:
            e = run["ensembles"].get(str(k))
            if e is None:
                continue
            best = min(e["members"], key=lambda m: m["test_fid"])
            rows.append(
                {
                    "seed": run["seed"],
                    "best_single": [best["test_fid"], best["test_fid_std"], best["number"]],
                    "search_best": [e["members"][0]["test_fid"], e["members"][0]["number"]],
                    "uniform": [
                        e["mixtures"]["uniform"]["test_fid"],
                        e["mixtures"]["uniform"]["test_fid_std"],
                    ],
                    "fitted": [
                        e["mixtures"]["fitted"]["test_fid"],
                        e["mixtures"]["fitted"]["test_fid_std"],
                    ],
                    "weights": e["mixtures"]["fitted"]["weights"],
                }
            )
        stats = {}
        for what in ("best_single", "search_best", "uniform", "fitted"):
            values = [r[what][0] for r in rows]
            if values:
                stats[what] = {
                    "median": statistics.median(values),
                    "mean": statistics.fmean(values),
                }
        table[str(k)] = {"rows": rows, "stats": stats}
    table["winners_curse"] = winners_curse(runs, max(ks))
    return table


def winners_curse(runs: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """The search's winner re-scored on the test split, among the ``k`` best by search FID:
    its search FID minus its test FID, the same gap averaged over the other k - 1 (search FIDs
    are on fewer samples than test FIDs, and FID falls with the sample size: the difference of
    the two gaps is the winner's own optimism), and whether the test ranking picks another."""
    rows = []
    for run in runs:
        e = run["ensembles"].get(str(k))
        if e is None:
            continue
        members = e["members"]
        gaps = [m["search_fid"] - m["test_fid"] for m in members]
        by_test = min(members, key=lambda m: m["test_fid"])
        rows.append(
            {
                "seed": run["seed"],
                "winner": members[0]["number"],
                "winner_search_fid": members[0]["search_fid"],
                "winner_test_fid": members[0]["test_fid"],
                "winner_gap": gaps[0],
                "others_gap": statistics.fmean(gaps[1:]),
                "test_winner": by_test["number"],
                "changed": by_test["number"] != members[0]["number"],
                "winner_test_rank": 1
                + sorted(m["test_fid"] for m in members).index(members[0]["test_fid"]),
            }
        )
    return {"k": k, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ks", default="2,3,5")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    tag = "" if args.dataset == "mnist" else "_digits"
    runs_file = args.out / f"ensemble{tag}_runs.json"
    runs = json.loads(runs_file.read_text())["runs"] if runs_file.exists() else []
    cache = Path(tempfile.gettempdir()) / "ensemble-cache"
    for seed in seeds:
        if any(r["seed"] == seed and all(str(k) in r["ensembles"] for k in ks) for r in runs):
            continue
        run = run_seed(seed, ks, args.data_dir, cache, args.dataset)
        runs = [r for r in runs if r["seed"] != seed] + [run]
        meta = {"dataset": args.dataset, "trials": TRIALS, "length": LENGTH, **SIZE}
        runs_file.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    summary = summarize(sorted(runs, key=lambda r: r["seed"]), ks)
    (args.out / f"ensemble{tag}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for k, t in summary.items():
        if k == "winners_curse":
            continue
        print(
            f"K = {k}: " + ", ".join(f"{w} median {s['median']:.1f}" for w, s in t["stats"].items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
