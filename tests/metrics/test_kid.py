"""KID against a direct O(n²) implementation of the unbiased MMD² estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganhpo.metrics import kid, polynomial_mmd2


def reference_mmd2(x, y):
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³, pair by pair."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6))
    y = rng.standard_normal((40, 6)) * 1.5 + 0.3
    return x, y


def test_polynomial_mmd2_matches_reference(samples):
    x, y = samples
    assert polynomial_mmd2(x, y) == pytest.approx(reference_mmd2(x, y), rel=1e-10)
    assert polynomial_mmd2(x[:25], y) == pytest.approx(reference_mmd2(x[:25], y), rel=1e-10)


def test_kid_on_whole_sets_equals_reference(samples):
    # A subset as large as both sets is a permutation of each, and MMD² ignores order.
    x, y = samples
    mean, std = kid(x, y, num_subsets=3, subset_size=40)
    assert mean == pytest.approx(reference_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_subset_size_is_capped_at_the_smaller_set(samples):
    x, y = samples
    mean, _ = kid(x[:30], x[:30] * 2.0, num_subsets=2, subset_size=1000)
    assert mean == pytest.approx(reference_mmd2(x[:30], x[:30] * 2.0), rel=1e-10)
    # With 30 vs 40 rows every subset holds 30: all of x, a random 30 of y.
    mean, std = kid(x[:30], y, num_subsets=20, subset_size=1000)
    assert std > 0.0
    assert np.isfinite(mean)


def test_separates_distributions_and_is_near_zero_for_equal_ones():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1000, 16))
    b = rng.standard_normal((1000, 16))
    c = rng.standard_normal((1000, 16)) + 0.5
    same, same_std = kid(a, b, num_subsets=20, subset_size=200)
    different, _ = kid(a, c, num_subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert different > 20 * max(abs(same), same_std)


def test_seeded_and_accepts_torch_tensors(samples):
    x, y = samples
    first = kid(x, y, num_subsets=5, subset_size=10, seed=3)
    assert kid(torch.from_numpy(x), torch.from_numpy(y), num_subsets=5, subset_size=10, seed=3) == (
        pytest.approx(first[0], rel=1e-12),
        pytest.approx(first[1], rel=1e-12),
    )
    assert kid(x, y, num_subsets=5, subset_size=10, seed=4) != first


def test_rejects_bad_input(samples):
    x, y = samples
    with pytest.raises(ValueError, match="dimensions differ"):
        kid(x, y[:, :5])
    with pytest.raises(ValueError, match="at least 2 samples"):
        kid(x[:1], y)
    with pytest.raises(ValueError, match="num_subsets"):
        kid(x, y, num_subsets=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kid(bad, y)
