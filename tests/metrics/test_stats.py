"""RunningStats against numpy's mean and covariance of all rows at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganhpo.metrics import RunningStats
from ganhpo.metrics._stats import BlockedStats, jackknife_std


def batches(rng, shift=0.0):
    """Float64 numpy and float32 torch batches of uneven sizes, with a large common offset."""
    mix = rng.standard_normal((12, 12))
    return [
        rng.standard_normal((n, 12)) @ mix + shift + rng.standard_normal(12)
        for n in (1, 7, 100, 33, 250)
    ]


def as_torch_float32(batch):
    return torch.from_numpy(batch).to(torch.float32)


@pytest.mark.parametrize("shift", [0.0, 1000.0])
def test_equals_numpy_mean_and_cov(shift):
    rng = np.random.default_rng(0)
    parts = batches(rng, shift)
    # Half of the batches go in as float32 torch tensors: compare with what was fed in.
    parts = [
        p if i % 2 else as_torch_float32(p).numpy().astype(np.float64) for i, p in enumerate(parts)
    ]
    stats = RunningStats(12)
    for i, p in enumerate(parts):
        stats.update(p if i % 2 else as_torch_float32(p))
    everything = np.concatenate(parts)
    assert stats.count == len(everything)
    np.testing.assert_allclose(stats.mean, everything.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats.cov, np.cov(everything, rowvar=False), rtol=1e-10, atol=1e-10)
    assert stats.mean.dtype == np.float64 and stats.cov.dtype == np.float64


def test_merge_equals_one_stream():
    rng = np.random.default_rng(1)
    parts = batches(rng, shift=50.0)
    left, right, empty = RunningStats(12), RunningStats(12), RunningStats(12)
    for p in parts[:2]:
        left.update(p)
    for p in parts[2:]:
        right.update(p)
    merged = empty.merge(left).merge(right).merge(RunningStats(12))
    everything = np.concatenate(parts)
    assert merged.count == len(everything)
    np.testing.assert_allclose(merged.mean, everything.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(merged.cov, np.cov(everything, rowvar=False), rtol=1e-10, atol=1e-10)


def test_empty_batches_change_nothing():
    stats = RunningStats(3).update(np.zeros((0, 3)))
    assert stats.count == 0
    stats.update(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    np.testing.assert_allclose(stats.mean, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(stats.cov, [[2.0, 0.0, -2.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 2.0]])


def test_rejects_bad_batches_without_changing_state():
    stats = RunningStats(3)
    with pytest.raises(ValueError, match=r"shape \[n, 3\]"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        stats.update(torch.tensor([[1.0, float("nan"), 0.0]]))
    assert stats.count == 0
    with pytest.raises(ValueError, match="no samples"):
        _ = stats.mean
    stats.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = stats.cov
    with pytest.raises(ValueError, match="dim 4"):
        stats.merge(RunningStats(4))


def test_blocked_stats_total_and_leave_one_out_equal_their_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(103, 5))
    blocked = BlockedStats(5, 103, 10)
    for start in range(0, 103, 17):  # batches that straddle the block boundaries
        blocked.update(torch.from_numpy(x[start : start + 17]))
    # Block b holds the rows whose place in a random permutation is ceil(10.3 b) up to
    # ceil(10.3 (b + 1)): 11, 10, 10, 11, ... rows.
    assert [b.count for b in blocked.blocks] == [11, 10, 10, 11, 10, 10, 11, 10, 10, 10]
    assert np.bincount(blocked.block_of).tolist() == [b.count for b in blocked.blocks]
    np.testing.assert_allclose(blocked.total().cov, np.cov(x, rowvar=False), rtol=1e-12)
    rest = x[blocked.block_of != 4]
    np.testing.assert_allclose(blocked.leave_one_out(4).mean, rest.mean(0), rtol=1e-12)
    np.testing.assert_allclose(blocked.leave_one_out(4).cov, np.cov(rest, rowvar=False), rtol=1e-11)
    with pytest.raises(ValueError, match="more than the 103 rows"):
        blocked.update(torch.zeros(1, 5))


def test_jackknife_std_of_a_mean_is_its_standard_error():
    rng = np.random.default_rng(1)
    errors = []
    for _ in range(200):
        x = rng.normal(0.0, 1.0, size=(1000, 1))
        blocked = BlockedStats(1, 1000, 10).update(x)
        errors.append(blocked.jackknife_std(lambda s: float(s.mean[0])))
    # σ / √n = 0.0316; a 10-group jackknife std has about 9 degrees of freedom.
    assert np.mean(errors) == pytest.approx(1 / np.sqrt(1000), rel=0.05)
    assert jackknife_std([1.0, float("inf")]) != jackknife_std([1.0, float("inf")])  # nan


def test_blocked_stats_groups_do_not_follow_the_row_order():
    """Rows sorted by cluster (a class-sorted sample) and the same rows shuffled: the groups
    are random rows either way, so both give the standard error of the mean. Groups of
    consecutive rows held one cluster each and measured the spread between clusters: 3.2
    where the standard error is 0.32."""
    rng = np.random.default_rng(2)
    centres = rng.normal(0.0, 10.0, size=(10, 3))
    by_cluster = np.repeat(centres, 100, axis=0) + rng.normal(size=(1000, 3))
    shuffled = rng.permutation(by_cluster)
    standard_error = by_cluster[:, 0].std(ddof=1) / np.sqrt(1000)

    def std(rows: np.ndarray) -> float:
        blocked = BlockedStats(3, 1000, 10, seed=0)
        for start in range(0, 1000, 64):
            blocked.update(torch.from_numpy(rows[start : start + 64]))
        return blocked.jackknife_std(lambda s: float(s.mean[0]))

    # A 10-group jackknife std has about 9 degrees of freedom: over 200 groupings of these
    # rows, 0.47 to 1.54 times the standard error (1st to 99th percentile).
    assert 0.4 * standard_error < std(by_cluster) < 2 * standard_error
    assert 0.4 * standard_error < std(shuffled) < 2 * standard_error
