"""How fast is ganhpo's Fréchet distance, and feature extraction with the MNIST classifier?

    python bench/fid_speed.py [--quick] [--data-dir ../shared/data/mnist] [--json]

Part 1 times ``frechet_distance`` (Cholesky + one symmetric eigenvalue solve) against
pytorch-fid's formula (``scipy.linalg.sqrtm`` of Σ₁Σ₂), side by side on the same random
statistics at 64, 512 and 2048 dimensions: median of several runs, speed-up and relative
difference of the two results. Part 2 times feature extraction of 10000 real MNIST images with
the shipped classifier. Results go to stdout (a table, or JSON with --json), progress to stderr.
Needs scipy (``pip install 'ganhpo[test]'``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import scipy.linalg  # type: ignore[import-untyped,unused-ignore]
import torch

ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(ROOT))

from _common import save_results  # noqa: E402  (bench/, beside this)

from ganhpo.data import load_dataset  # noqa: E402
from ganhpo.metrics import extract_features, frechet_distance, get_extractor  # noqa: E402

T = TypeVar("T")

DIMS = (64, 512, 2048)
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"


def sqrtm_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance (sqrtm of the product, eps retry, real part)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_statistics(dim: int, seed: int) -> tuple[np.ndarray, ...]:
    """Two random means and full-rank covariances, like those of real feature sets."""
    rng = np.random.default_rng(seed)
    stats = []
    for scale in (1.0, 1.2):
        b = rng.standard_normal((dim, dim)) * scale
        stats += [rng.standard_normal(dim) * 0.1, b @ b.T / dim + 0.01 * np.eye(dim)]
    return tuple(stats)


def median_seconds(fn: Callable[[], T], reps: int) -> tuple[float, T]:
    """(median wall time over ``reps`` calls, the last result)."""
    times: list[float] = []
    for _ in range(reps):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result  # reps >= 1


def bench_distance(reps: int, scipy_reps_2048: int) -> list[dict[str, float]]:
    rows = []
    for dim in DIMS:
        mu1, s1, mu2, s2 = random_statistics(dim, seed=dim)
        print(f"distance at {dim} dims ...", file=sys.stderr)
        ours_t, ours = median_seconds(partial(frechet_distance, mu1, s1, mu2, s2), reps)
        scipy_reps = scipy_reps_2048 if dim >= 2048 else reps
        ref_t, ref = median_seconds(partial(sqrtm_fid, mu1, s1, mu2, s2), scipy_reps)
        rows.append(
            {
                "dim": dim,
                "ours_s": ours_t,
                "scipy_sqrtm_s": ref_t,
                "speedup": ref_t / ours_t,
                "fid": ours,
                "rel_diff": abs(ours - ref) / abs(ref),
                "reps": reps,
                "scipy_reps": scipy_reps,
            }
        )
    return rows


def bench_extraction(data_dir: Path, n: int, reps: int) -> dict[str, float]:
    print(f"extracting features of {n} MNIST images ...", file=sys.stderr)
    images = load_dataset("mnist", split="train", data_dir=data_dir, download=False, limit=n).images
    extractor = get_extractor("classifier")
    extract_features(extractor, images[:500])  # warm-up (allocator, oneDNN kernels)
    seconds, _ = median_seconds(partial(extract_features, extractor, images), reps)
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "reps": reps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and images")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    reps, scipy_reps_2048 = (3, 1) if args.quick else (5, 3)
    n_images, extract_reps = (2000, 1) if args.quick else (10000, 3)
    threads = torch.get_num_threads()
    rows = bench_distance(reps, scipy_reps_2048)
    extraction = bench_extraction(args.data_dir, n_images, extract_reps)

    result = {
        "distance": rows,
        "reference": "pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of S1 S2)",
        "reps": reps,
        "sqrtm_reps_2048": scipy_reps_2048,
        "extraction": extraction,
        "torch_threads": threads,
    }
    save_results("fid_speed" + ("_quick" if args.quick else ""), result)
    if args.json:
        print(json.dumps(result))
        return 0
    print("Fréchet distance: ganhpo (Cholesky + eigvalsh) vs scipy.linalg.sqrtm formula")
    print(
        f"{'dim':>6} {'ganhpo s':>10} {'sqrtm s':>10} {'speed-up':>9} {'FID':>12} {'rel diff':>9}"
    )
    for r in rows:
        print(
            f"{r['dim']:>6} {r['ours_s']:>10.4f} {r['scipy_sqrtm_s']:>10.4f} "
            f"{r['speedup']:>8.1f}x {r['fid']:>12.4f} {r['rel_diff']:>9.1e}"
        )
    print(f"(median of {reps} runs; sqrtm at 2048 dims: {scipy_reps_2048})")
    print(
        f"classifier features of {extraction['images']} MNIST images: "
        f"{extraction['seconds']:.2f} s ({extraction['images_per_s']:.0f} images/s, "
        f"{threads} torch threads)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
