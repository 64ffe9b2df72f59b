"""The measured figures the README and the docs quote come from the results files in
bench/results/ that the benchmarks wrote: each figure below is recomputed from its file and
must appear, formatted as quoted, in the text (whitespace and line breaks aside). Editing a
results file, or a figure, fails this test."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def results(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def text(name: str) -> str:
    return re.sub(r"\s+", " ", (ROOT / name).read_text())


def budget_median(budget: int, method: str, seeds: list[int] | None = None) -> float:
    """Median best final FID of a compute-budget method over held-out repetitions."""
    row = results("compute_budget_growth_summary.json")["held_out"]["table"][str(budget)][method]
    best = dict(zip(row["seeds"], row["best"], strict=True))
    return statistics.median(best[s] for s in (seeds or row["seeds"]))


def ensemble(k: int, what: str, dataset: str = "") -> float:
    return results(f"ensemble{dataset}_summary.json")[str(k)]["stats"][what]["median"]


def reference(*path: str) -> float:
    value: object = results("reference_fid.json")
    for key in path:
        value = value[key]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def f1(x: float) -> str:
    return f"{x:.1f}"


FRESH = list(range(12, 18))  # the repetitions that confirmed (or not) the budget rule
CONFIRM_8L = [12, 13, 14]

# (file, the quoted text with {} for each figure, the figures' values, how each is printed)
FIGURES: list[tuple[str, str, Callable[[], list[float]], Callable[[float], str]]] = [
    (
        "README.md",
        "median FID {} against {});",
        lambda: [budget_median(8000, "grow-0.25"), budget_median(8000, "preset-budget")],
        f1,
    ),
    (
        "README.md",
        "test FID of **{} against {}** for the best single generator",
        lambda: [ensemble(5, "fitted"), ensemble(5, "best_single")],
        f1,
    ),
    (
        "README.md",
        "(on scikit-learn's 8x8 digits, {} against {})",
        lambda: [ensemble(5, "fitted", "_digits"), ensemble(5, "best_single", "_digits")],
        f1,
    ),
    (
        "README.md",
        "real images the generator never saw score about {} (1,000 samples)",
        lambda: [reference("final", "real_test_images")],
        lambda x: f"{x:.0f}",
    ),
    (
        "README.md",
        "an untrained generator about {}, and the preset after the quickstart's 240 steps {}",
        lambda: [reference("final", "untrained_generator"), reference("preset_trial_final", "fid")],
        lambda x: f"{round(x, -1):,.0f}" if x > 1000 else f"{x:.0f}",
    ),
    (
        "BENCHMARKS.md",
        "end to end: median **{}: the target ≥ 0.95 is not met in this run.** Counting only the "
        "seconds the worker adds",
        lambda: [results("overhead.json")["eval_off"]["ratio_median"]],
        lambda x: f"{x:.3f}",
    ),
    (
        "docs/performance.md",
        "**{}×** the images/s of the bare training loop end to end in the last run",
        lambda: [results("overhead.json")["eval_off"]["ratio_median"]],
        lambda x: f"{x:.3f}",
    ),
    (
        "docs/performance.md",
        "and **{}×** counting only the seconds the worker adds; database calls are {} % of its",
        lambda: [
            results("overhead.json")["eval_off"]["overhead_ratio_median"],
            100 * results("overhead.json")["eval_off"]["db_share"],
        ],
        lambda x: f"{x:.3f}" if x < 0.999 and x > 0.9 else f"{x:.1f}",
    ),
    (
        "BENCHMARKS.md",
        "**Evaluation share: {} % in this 1500-step trial, {} % extrapolated to the spec's",
        lambda: [
            100 * results("overhead.json")["eval_on"]["eval_share"],
            100 * results("overhead.json")["eval_on"]["extrapolated_eval_share_5000"],
        ],
        f1,
    ),
    (
        "README.md",
        "about {} s of CPU time, {} s on 2 idle cores",
        lambda: [
            results("quickstart_time.json")["cpu_s_median"],
            results("quickstart_time.json")["wall_s_median"],
        ],
        lambda x: f"{x:.0f}",
    ),
    (
        "docs/performance.md",
        "reaches a median best FID of **{}**, against **{} for one run of the preset for the "
        "whole budget** (better in each repetition), {} for the previous default (TPE + "
        "Hyperband, trials of L), {} for random search and {} for ganhpo's PBT",
        lambda: [
            budget_median(8000, m)
            for m in ("grow-0.25", "preset-budget", "tpe-hyperband", "random", "pbt")
        ],
        f1,
    ),
    (
        "docs/performance.md",
        "(median {} over fresh repetitions 12-17); at 8 L (repetitions 12-14) it scored {} "
        "against {} for the preset's one run",
        lambda: [
            budget_median(2000, "grow-0.25", FRESH),
            budget_median(4000, "grow-0.25", CONFIRM_8L),
            budget_median(4000, "preset-budget", CONFIRM_8L),
        ],
        f1,
    ),
    (
        "docs/performance.md",
        "lost to both at 4 L ({}, 5 of 6 fresh repetitions) and 8 L ({})",
        lambda: [
            budget_median(2000, "tpe-hyperband", FRESH),
            budget_median(4000, "tpe-hyperband", CONFIRM_8L),
        ],
        f1,
    ),
    (
        "docs/performance.md",
        "scored a median {} at 4 L (repetitions 3-5; the default {})",
        lambda: [
            budget_median(2000, "ray-pbt", [3, 4, 5]),
            budget_median(2000, "grow-0.25", [3, 4, 5]),
        ],
        f1,
    ),
    (
        "docs/performance.md",
        "and {} at 16 L with 8 % more compute (the default {}, better in 2 of 3)",
        lambda: [
            budget_median(8000, "ray-pbt", [3, 4, 5]),
            budget_median(8000, "grow-0.25", [3, 4, 5]),
        ],
        f1,
    ),
    (
        "BENCHMARKS.md",
        "| Ray Tune PBT (4 members; run later, below) | {} / {} / {} | {} |",
        lambda: [
            *results("compute_budget_growth_summary.json")["held_out"]["table"]["8000"]["ray-pbt"][
                "best"
            ],
            budget_median(8000, "ray-pbt"),
        ],
        f1,
    ),
    (
        "BENCHMARKS.md",
        "| 2048 | {} | {} |",
        lambda: [
            results("fid_speed.json")["distance"][2]["ours_s"],
            results("fid_speed.json")["distance"][2]["scipy_sqrtm_s"],
        ],
        lambda x: f"{x:.4f}",
    ),
    (
        "BENCHMARKS.md",
        "| **{}×** | 1323.8288 |",
        lambda: [results("fid_speed.json")["distance"][2]["speedup"]],
        f1,
    ),
    (
        "docs/performance.md",
        "`frechet_distance` is **{}×** faster than pytorch-fid's",
        lambda: [results("fid_speed.json")["distance"][2]["speedup"]],
        f1,
    ),
    (
        "BENCHMARKS.md",
        "**{} vs {} images/s, ratio {}**",
        lambda: [
            results("trainer_speed.json")["trainer_img_s"],
            results("trainer_speed.json")["bare_img_s"],
            results("trainer_speed.json")["ratio_median"],
        ],
        lambda x: f"{x:.3f}" if x < 2 else f"{x:.0f}",
    ),
    (
        "BENCHMARKS.md",
        "| dcgan | {} ms | {}× | {}× | {}× |",
        lambda: [
            statistics.median(
                v["plain_step_ms"]
                for v in results("regularisers_quick.json")["costs"]["dcgan"].values()
            ),
            *(
                v["ratio_median"]
                for v in results("regularisers_quick.json")["costs"]["dcgan"].values()
            ),
        ],
        lambda x: f"{x:.2f}" if x < 5 else f"{x:.0f}",
    ),
    (
        "docs/machines.md",
        "the budget of {} steps spent exactly, {} hand-overs, {} steps trained twice (each lost "
        "trial's steps since its last checkpoint), the retries starting {} and {} s after the "
        "faults",
        lambda: [
            results("cluster.json")["steps_spent"],
            results("cluster.json")["handovers"],
            sum(h["steps_redone"] for h in results("cluster.json")["handed_over"]),
            *(f["seconds_to_retry_start"] for f in results("cluster.json")["faults"]),
        ],
        lambda x: f"{x:,.0f}" if float(x).is_integer() else f"{x:.1f}",
    ),
    (
        "BENCHMARKS.md",
        "| compute budget | **{} of {} steps spent**, exactly |",
        lambda: [
            results("cluster.json")["steps_spent"],
            results("cluster.json")["spec"]["max_steps"],
        ],
        lambda x: f"{x:,.0f}",
    ),
    (
        "docs/machines.md",
        "**1,000 simulated workers through PgBouncer (pool 20) spent a budget of {} one-minute "
        "trials exactly**, 0 lost, duplicated or over budget, 99 % of them took their trial "
        "within {} s (the p99",
        lambda: [
            results("db_load.json")["runs"]["after_1000"][0]["budget"],
            results("db_load.json")["runs"]["after_1000"][0]["ask_p99_ms"] / 1000,
        ],
        lambda x: f"{x:,.0f}",
    ),
    (
        "BENCHMARKS.md",
        "| 5 | the same | {} / {} / {} | **{} / {} / {}** | {} / {} / **{}** |",
        lambda: [
            *(r["uniform"][0] for r in results("ensemble_summary.json")["5"]["rows"]),
            *(r["fitted"][0] for r in results("ensemble_summary.json")["5"]["rows"]),
            ensemble(5, "best_single"),
            ensemble(5, "uniform"),
            ensemble(5, "fitted"),
        ],
        f1,
    ),
]


@pytest.mark.parametrize(
    "doc, quoted, values, fmt",
    # ids from the text alone: a function's repr differs between pytest-xdist's processes.
    [pytest.param(*f, id=f"{f[0]}: {f[1][:40]}") for f in FIGURES],
)
def test_each_quoted_figure_is_its_results_file_s(
    doc: str, quoted: str, values: Callable[[], list[float]], fmt: Callable[[float], str]
) -> None:
    expected = quoted.format(*(fmt(v) for v in values()))
    assert expected in text(doc), f"{doc} does not say: {expected}"
