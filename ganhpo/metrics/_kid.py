"""Kernel Inception Distance: unbiased MMD² with a cubic polynomial kernel, over random subsets.

KID (Bińkowski et al., 2018) has an unbiased estimator, so unlike FID it does not drift with the
number of samples; its spread over subsets says how much to trust a difference between trials.

The value is the MMD² itself, not multiplied by 10³ as papers print it, and the kernel is the
standard one (normalised by the feature dimension d, as in torch-fidelity and torchmetrics). Its
size follows the features': the shipped MNIST classifier's post-ReLU features have x·y/d ≈ 8
(Inception's pool features are well below 1), so real MNIST against real MNIST gives a few
units and a poor generator hundreds. KID is comparable only between runs with one extractor.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["SUBSET_SIZE", "kid", "polynomial_mmd2", "subset_size_for"]

SUBSET_SIZE = 1000  # rows per subset (Bińkowski et al.), unless half a set is fewer


def kid(
    feats1: ArrayLike,
    feats2: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """KID of two feature sets [n1, d] and [n2, d]: (mean, std) of MMD² over random subsets.

    Each of ``num_subsets`` rounds draws min(``subset_size``, n1 // 2, n2 // 2) rows without
    replacement from each set and computes :func:`polynomial_mmd2` (unscaled). Subsets of at
    most half of each set differ from round to round, so the std measures something; a subset
    as large as a set would be that whole set every time (std 0, the rounds wasted). The subsets
    come from ``numpy.random.default_rng(seed)``, so equal inputs give equal results. The mean
    can be slightly negative when the two sets come from the same distribution (the estimator
    is unbiased); the std is the population std over subsets (0 for a single subset).
    """
    x = _features(feats1, "feats1")
    y = _features(feats2, "feats2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    m = subset_size_for(x.shape[0], y.shape[0], subset_size)
    if m < 2:
        raise ValueError(
            f"KID needs at least 2 samples per subset (subsets hold at most half of each set); "
            f"got subset_size={subset_size} and {x.shape[0]} and {y.shape[0]} samples"
        )
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        values[i] = _mmd2(xs.astype(np.float64), ys.astype(np.float64))
    return float(values.mean()), float(values.std())


def subset_size_for(n1: int, n2: int, subset_size: int = SUBSET_SIZE) -> int:
    """The rows per KID subset for sets of ``n1`` and ``n2`` rows: at most half of each."""
    return min(subset_size, n1 // 2, n2 // 2)


def polynomial_mmd2(x: ArrayLike, y: ArrayLike) -> float:
    """Unbiased MMD² of two samples [m, d] and [n, d] with kernel k(a, b) = (a·b / d + 1)³.

    Within-sample sums leave out the diagonal (k(a, a)); the cross term averages all m·n pairs.
    """
    xs = _features(x, "x").astype(np.float64)
    ys = _features(y, "y").astype(np.float64)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"feature dimensions differ: {xs.shape[1]} and {ys.shape[1]}")
    if xs.shape[0] < 2 or ys.shape[0] < 2:
        raise ValueError(
            f"MMD² needs at least 2 samples on each side, got {xs.shape[0]} and {ys.shape[0]}"
        )
    return _mmd2(xs, ys)


def _mmd2(xs: NDArray[np.float64], ys: NDArray[np.float64]) -> float:
    """Unbiased polynomial-kernel MMD² of two float64 samples (validated by the callers)."""
    m, n = xs.shape[0], ys.shape[0]
    k_xx, k_yy, k_xy = _kernel(xs, xs), _kernel(ys, ys), _kernel(xs, ys)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def _kernel(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """(a·b / d + 1)³ for all pairs of rows."""
    k = a @ b.T
    k /= a.shape[1]
    k += 1.0
    # Two multiplications, not ``** 3``: numpy's generic power is ~50× slower on large arrays.
    return k * k * k


def _features(a: ArrayLike, what: str) -> NDArray[np.floating]:
    """``a`` as a finite float matrix, kept in its precision (cast per subset, to save memory)."""
    if hasattr(a, "detach"):  # a torch tensor, possibly on an accelerator
        a = a.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a matrix [n, d], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr
