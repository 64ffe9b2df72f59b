"""The statistics layer of FID: mean and covariance streamed through float64 running sums.

Features are never all held at once for the statistics: each batch adds its sum and its sum of
outer products. The sums are taken around a fixed shift (the first batch's mean), so the
covariance does not lose precision to cancellation when the mean is large next to the spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["BlockedStats", "RunningStats", "jackknife_std"]


class RunningStats:
    """Running mean and covariance of ``dim``-dimensional samples, fed batch by batch.

    ``update`` takes torch tensors (on any device; summed there in float64) or numpy arrays of
    shape [n, dim]. ``mean`` and ``cov`` match ``np.mean(x, 0)`` and ``np.cov(x, rowvar=False)``
    of all rows seen so far (unbiased covariance, divided by n - 1).
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.count = 0
        self._shift: NDArray[np.float64] | None = None
        self._sum = np.zeros(dim, dtype=np.float64)  # Σ (x - shift)
        self._outer = np.zeros((dim, dim), dtype=np.float64)  # Σ (x - shift)(x - shift)ᵀ

    def update(self, x: torch.Tensor | NDArray[Any]) -> RunningStats:
        """Add the rows of a [n, dim] batch; returns self. Raises ValueError on bad shapes/NaN."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected a batch of shape [n, {self.dim}], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return self
        finite = (
            bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else np.isfinite(x).all()
        )
        if not finite:
            raise ValueError("the batch contains NaN or infinite values")
        if isinstance(x, torch.Tensor):
            batch_sum, batch_outer = self._torch_sums(x)
        else:
            batch_sum, batch_outer = self._numpy_sums(np.asarray(x))
        self.count += x.shape[0]
        self._sum += batch_sum
        self._outer += batch_outer
        return self

    def merge(self, other: RunningStats) -> RunningStats:
        """Add everything ``other`` has seen (e.g. another worker's shard); returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dim {other.dim} into dim {self.dim}")
        if other.count == 0:
            return self
        assert other._shift is not None
        if self._shift is None:
            self._shift = other._shift.copy()
        s, outer = self._recentred(other)
        self.count += other.count
        self._sum += s
        self._outer += outer
        return self

    def without(self, part: RunningStats) -> RunningStats:
        """New statistics of what this has seen except ``part`` (rows it has seen, e.g. one
        block of them): the sums minus ``part``'s, in O(dim²) whatever the number of parts."""
        if part.dim != self.dim or part.count > self.count:
            raise ValueError("can only remove statistics of rows these statistics have seen")
        out = RunningStats(self.dim)
        out._shift = None if self._shift is None else self._shift.copy()
        out.count, out._sum, out._outer = self.count, self._sum.copy(), self._outer.copy()
        if part.count == 0:
            return out
        s, outer = self._recentred(part)
        out.count -= part.count
        out._sum -= s
        out._outer -= outer
        return out

    def _recentred(self, other: RunningStats) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``other``'s sums around our shift: x - s = (x - s_o) + (s_o - s)."""
        assert other._shift is not None and self._shift is not None
        delta = other._shift - self._shift
        s = other._sum + other.count * delta
        outer = (
            other._outer
            + np.outer(other._sum, delta)
            + np.outer(delta, other._sum)
            + other.count * np.outer(delta, delta)
        )
        return s, outer

    @property
    def mean(self) -> NDArray[np.float64]:
        """The mean of all rows seen, float64 [dim]."""
        if self.count < 1 or self._shift is None:
            raise ValueError("no samples seen yet")
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> NDArray[np.float64]:
        """The unbiased covariance of all rows seen, float64 [dim, dim] (needs 2 samples)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        centred_mean = self._sum / self.count
        cov = (self._outer - self.count * np.outer(centred_mean, centred_mean)) / (self.count - 1)
        return (cov + cov.T) * 0.5

    def _torch_sums(self, x: torch.Tensor) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        x64 = x.detach().to(torch.float64)
        if self._shift is None:
            self._shift = x64.mean(dim=0).cpu().numpy()
        centred = x64 - torch.from_numpy(self._shift).to(x64.device)
        return centred.sum(dim=0).cpu().numpy(), (centred.T @ centred).cpu().numpy()

    def _numpy_sums(self, x: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        x64 = x.astype(np.float64)
        if self._shift is None:
            self._shift = x64.mean(axis=0)
        centred = x64 - self._shift
        return centred.sum(axis=0), centred.T @ centred


class BlockedStats:
    """Running statistics of ``count`` rows, kept as ``blocks`` groups of rows.

    Rows are fed in order through :meth:`update`; which group a row joins is drawn once, from
    ``seed``, by a random permutation of the row numbers (group b holds the rows whose place
    in it falls in the b-th of ``blocks`` equal ranges): groups of consecutive rows would
    each hold one class of a class-sorted sample, and the jackknife would measure the spread
    between classes instead of that of a new draw. :meth:`total` is the statistics of every
    row and :meth:`leave_one_out` those of all groups but one: what a delete-a-group
    jackknife needs to say how much a statistic computed from these rows would vary over new
    draws of them, without drawing any.
    """

    def __init__(self, dim: int, count: int, blocks: int, *, seed: int = 0) -> None:
        if blocks < 2 or count < 2 * blocks:
            raise ValueError(f"need 2 <= blocks and 2 rows per block, got {blocks}, {count}")
        self.count = count
        self.blocks = [RunningStats(dim) for _ in range(blocks)]
        # block_of[i]: the group of row i (sizes differ by at most one row).
        self.block_of = np.random.default_rng(seed).permutation(count) * blocks // count
        self._seen = 0

    def update(self, x: torch.Tensor | NDArray[Any]) -> BlockedStats:
        """Add the next rows [n, dim], each to its group; returns self."""
        if self._seen + x.shape[0] > self.count:
            raise ValueError(f"more than the {self.count} rows announced")
        groups = self.block_of[self._seen : self._seen + x.shape[0]]
        for block in np.unique(groups):
            rows = np.flatnonzero(groups == block)
            if isinstance(x, torch.Tensor):
                self.blocks[block].update(x[torch.from_numpy(rows).to(x.device)])
            else:
                self.blocks[block].update(x[rows])
        self._seen += x.shape[0]
        return self

    def total(self) -> RunningStats:
        """The statistics of every row seen."""
        merged = RunningStats(self.blocks[0].dim)
        for block in self.blocks:
            merged.merge(block)
        return merged

    def leave_one_out(self, block: int, total: RunningStats | None = None) -> RunningStats:
        """The statistics of every row seen outside ``block`` (``total``: :meth:`total`, when
        the caller has it)."""
        return (total or self.total()).without(self.blocks[block])

    def jackknife_std(self, statistic: Callable[[RunningStats], float]) -> float:
        """The delete-a-group jackknife estimate of the std of ``statistic(self.total())``."""
        total = self.total()
        return jackknife_std(
            [statistic(self.leave_one_out(i, total)) for i in range(len(self.blocks))]
        )


def jackknife_std(estimates: Sequence[float]) -> float:
    """The jackknife std from the k leave-one-group-out estimates of a statistic:
    sqrt((k - 1) / k * Σ (θᵢ - θ̄)²) (Efron and Stein; groups of equal size)."""
    k = len(estimates)
    if k < 2:
        raise ValueError(f"the jackknife needs at least 2 estimates, got {k}")
    if not all(math.isfinite(e) for e in estimates):
        return math.nan
    mean = sum(estimates) / k
    return math.sqrt((k - 1) / k * sum((e - mean) ** 2 for e in estimates))
