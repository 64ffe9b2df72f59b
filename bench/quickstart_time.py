"""What the README's quickstart costs: wall and CPU time of its two commands, run as a user
runs them (a fresh directory, no cache), in repetitions.

    python bench/quickstart_time.py [--reps 3]

Runs ``ganhpo study create studies/quick.toml --load-if-exists`` and ``ganhpo worker --study
quick`` in a new temporary directory with an empty cache (``GANHPO_CACHE_DIR``, so the real
statistics are computed as on a first run) and records, per repetition, the wall time and the
CPU time (user + system of the processes) of the two commands together. Writes
``bench/results/quickstart_time.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import save_results

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    ["study", "create", str(ROOT / "studies" / "quick.toml"), "--load-if-exists"],
    ["worker", "--study", "quick"],
)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run() -> dict[str, float]:
    """The quickstart once, in a fresh directory with a fresh cache."""
    with tempfile.TemporaryDirectory(prefix="ganhpo-quickstart-") as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GANHPO_")}
        env["GANHPO_CACHE_DIR"] = str(Path(work) / "cache")
        cpu0, wall0 = children_cpu(), time.perf_counter()
        for args in COMMANDS:
            subprocess.run(
                [sys.executable, "-m", "ganhpo", *args],
                cwd=work,
                env=env,
                check=True,
                capture_output=True,
            )
        return {"wall_s": time.perf_counter() - wall0, "cpu_s": children_cpu() - cpu0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.reps):
        runs.append(one_run())
        print(f"run {i}: {runs[-1]['wall_s']:.1f} s wall, {runs[-1]['cpu_s']:.1f} s CPU",
              file=sys.stderr)  # fmt: skip
    result = {
        "commands": [" ".join(["ganhpo", *c]).replace(str(ROOT) + "/", "") for c in COMMANDS],
        "runs": runs,
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
    }
    save_results("quickstart_time", result)
    print(f"median {result['wall_s_median']:.1f} s wall, {result['cpu_s_median']:.1f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
