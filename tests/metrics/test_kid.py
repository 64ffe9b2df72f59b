"""KID against a direct O(n²) implementation of the unbiased MMD² estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganhpo.metrics import kid, polynomial_mmd2
from ganhpo.metrics._kid import subset_size_for


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


def test_subsets_hold_half_of_each_set(samples):
    # 40 rows a side: each subset is a random 20 of each, drawn from default_rng(seed).
    x, y = samples
    mean, std = kid(x, y, num_subsets=4, subset_size=1000, seed=5)
    rng = np.random.default_rng(5)
    values = [
        reference_mmd2(x[rng.choice(40, 20, replace=False)], y[rng.choice(40, 20, replace=False)])
        for _ in range(4)
    ]
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-8)


def test_equal_sets_give_different_subsets_and_a_spread():
    # As the Evaluator calls it: 1000 fake against 1000 real rows. Subsets as large as the sets
    # would be the whole sets every time: std 0 and 99 wasted rounds.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1000, 8))
    y = rng.standard_normal((1000, 8)) + 0.2
    mean, std = kid(x, y, num_subsets=10, subset_size=1000)
    whole = polynomial_mmd2(x, y)
    assert std > 0.01 * abs(whole)
    assert mean == pytest.approx(whole, rel=0.2)  # unbiased: subsets estimate the same MMD²


@pytest.mark.parametrize(
    ("n1", "n2", "expected"),
    [(1000, 1000, 500), (1000, 10000, 500), (2000, 2000, 1000), (10000, 10000, 1000), (5, 4, 2)],
)
def test_subset_size_is_at_most_half_of_each_set(n1, n2, expected):
    assert subset_size_for(n1, n2) == expected
    assert subset_size_for(n1, n2, 100) == min(100, expected)


def test_value_is_the_unscaled_mmd2():
    # Every row 0 on one side and 1 on the other: k(0, 0) = 1, k(1, 1) = (d/d + 1)³ = 8 and
    # k(0, 1) = 1, so MMD² = 1 + 8 - 2 = 7 for any subset, not 7 × 10³ or a d-dependent value.
    for dim in (4, 128):
        mean, std = kid(np.zeros((20, dim)), np.ones((30, dim)), num_subsets=3)
        assert mean == pytest.approx(7.0, rel=1e-12)
        assert std == pytest.approx(0.0, abs=1e-12)


def test_unequal_sets(samples):
    x, y = samples
    mean, std = kid(x[:30], x[:30] * 2.0, num_subsets=5, subset_size=1000)
    assert mean > 0.0
    # 30 vs 40 rows: every subset holds 15 of each, so the subsets differ.
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
    with pytest.raises(ValueError, match="at most half of each set"):
        kid(x[:3], y)  # half of 3 rows is 1
    with pytest.raises(ValueError, match="num_subsets"):
        kid(x, y, num_subsets=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kid(bad, y)
