"""The Fréchet distance against pytorch-fid's formula (scipy sqrtm) and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from ganhpo.metrics import frechet_distance, trace_sqrt_product


def reference_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, written out independently."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def random_gaussian(rng, dim, scale=1.0, shift=0.0):
    """A random mean and a random full-rank covariance (B Bᵀ / dim plus a small ridge)."""
    b = rng.standard_normal((dim, dim)) * scale
    return rng.standard_normal(dim) * 0.1 + shift, b @ b.T / dim + 0.01 * np.eye(dim)


def sample_gaussian(rng, n, dim, shift=0.0):
    """Sample mean and covariance of n correlated samples (rank min(n - 1, dim))."""
    x = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.3 + shift
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("dim", [64, 512])
def test_matches_sqrtm_formula(dim):
    rng = np.random.default_rng(dim)
    mu1, s1 = random_gaussian(rng, dim)
    mu2, s2 = random_gaussian(rng, dim, scale=1.3, shift=0.05)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference_fid(mu1, s1, mu2, s2), rel=1e-6)


def test_matches_sqrtm_formula_at_2048_dims():
    # The speed-up over this formula is measured in bench/fid_speed.py, not in a timed test.
    rng = np.random.default_rng(2048)
    mu1, s1 = random_gaussian(rng, 2048)
    mu2, s2 = random_gaussian(rng, 2048, scale=1.1, shift=0.02)
    expected = reference_fid(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_close_distributions_agree_with_sqrtm_despite_cancellation():
    # FID ≪ the traces it is computed from: relative errors of the trace term are amplified.
    rng = np.random.default_rng(7)
    mu1, s1 = sample_gaussian(rng, 5000, 64)
    mu2, s2 = sample_gaussian(np.random.default_rng(7), 4000, 64)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference_fid(mu1, s1, mu2, s2), rel=1e-6, abs=1e-9)


def test_equal_covariances_give_squared_mean_distance():
    rng = np.random.default_rng(0)
    mu1, sigma = random_gaussian(rng, 32)
    mu2 = mu1 + rng.standard_normal(32)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(
        float(np.sum((mu1 - mu2) ** 2)), rel=1e-9
    )


@pytest.mark.parametrize("dim", [8, 128, 512])
def test_identical_inputs_give_zero(dim):
    mu, sigma = random_gaussian(np.random.default_rng(dim), dim)
    assert frechet_distance(mu, sigma, mu, sigma) <= 1e-8


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 4.0, 50), rng.uniform(0.0, 4.0, 50)
    mu1, mu2 = rng.standard_normal(50), rng.standard_normal(50)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_symmetric_in_its_two_arguments():
    rng = np.random.default_rng(4)
    g1, g2 = random_gaussian(rng, 40), random_gaussian(rng, 40, scale=2.0)
    assert frechet_distance(*g1, *g2) == pytest.approx(frechet_distance(*g2, *g1), rel=1e-10)


@pytest.mark.parametrize(
    "n1, n2, dim", [(10, 10, 64), (10, 500, 64), (500, 10, 64), (40, 30, 64), (100, 1000, 300)]
)
def test_rank_deficient_covariances(n1, n2, dim):
    """Covariances from fewer samples than dimensions are singular; Cholesky cannot factor them."""
    rng = np.random.default_rng(n1 * 1000 + n2)
    mu1, s1 = sample_gaussian(rng, n1, dim)
    mu2, s2 = sample_gaussian(rng, n2, dim, shift=0.5)
    assert np.linalg.matrix_rank(s1) == min(n1 - 1, dim)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(ours) and ours >= 0.0
    assert ours == pytest.approx(reference_fid(mu1, s1, mu2, s2), rel=1e-5)


def test_zero_covariances():
    mu1, mu2 = np.zeros(5), np.ones(5)
    assert frechet_distance(mu1, np.zeros((5, 5)), mu2, np.zeros((5, 5))) == pytest.approx(5.0)
    assert trace_sqrt_product(np.zeros((5, 5)), np.eye(5)) == 0.0


def test_rejects_mismatched_shapes():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
    with pytest.raises(ValueError, match="sigma1 must have shape"):
        frechet_distance(mu, np.eye(5), mu, sigma)
    with pytest.raises(ValueError, match="mu2 must be a vector"):
        frechet_distance(mu, sigma, np.zeros((4, 1)), sigma)


def test_rejects_non_finite_values():
    mu, sigma = np.zeros(4), np.eye(4)
    bad = sigma.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        frechet_distance(mu, sigma, mu, bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        frechet_distance(np.full(4, np.inf), sigma, mu, sigma)
