"""The Fréchet distance against pytorch-fid's formula (scipy sqrtm), mpmath and known answers."""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pytest
import scipy.linalg

from ganhpo.data import load_dataset
from ganhpo.metrics import (
    RunningStats,
    extract_features,
    frechet_distance,
    get_extractor,
    trace_sqrt_product,
)


def reference_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, written out independently."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def mp_frechet_distance(mu1, sigma1, mu2, sigma2, dps=50):
    """The Fréchet distance of the float64 inputs (read exactly) in ``dps``-digit arithmetic.

    Another route than ganhpo's: the symmetric square root R of Σ₁ from its eigenvectors, then
    tr √(Σ₁Σ₂) = Σ √λ(R Σ₂ R). Exact zero eigenvalues come out as ±10⁻⁵⁰-ish and add < 10⁻²⁴.
    """
    with mpmath.workdps(dps):
        diff = sum(
            (mpmath.mpf(float(u)) - mpmath.mpf(float(v))) ** 2
            for u, v in zip(mu1, mu2, strict=True)
        )
        a = mpmath.matrix(np.asarray(sigma1, dtype=np.float64).tolist())
        b = mpmath.matrix(np.asarray(sigma2, dtype=np.float64).tolist())
        lam, vec = mpmath.eigsy(a)
        root = vec * mpmath.diag([mpmath.sqrt(max(x, 0)) for x in lam]) * vec.T
        m = root * b * root
        cross = sum(mpmath.sqrt(max(x, 0)) for x in mpmath.eigsy((m + m.T) / 2, eigvals_only=True))
        traces = sum(a[i, i] + b[i, i] for i in range(a.rows))
        return float(diff + traces - 2 * cross)


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


def test_zero_variance_dimensions_drop_out_but_their_means_count():
    # 12 dims: 5 constant on both sides (dead units) with different means there, 1 constant on
    # one side only, 6 varying; the two Gaussians are close, so FID ≪ the traces it comes from.
    rng = np.random.default_rng(11)
    x = np.maximum(rng.standard_normal((4000, 12)) @ rng.standard_normal((12, 12)), 0.0)
    y = x[:3000] + 0.05 * rng.standard_normal((3000, 12))
    x[:, :5], y[:, :5] = 0.0, 0.3  # dead on both sides, but at different values
    x[:, 5] = 0.0  # dead on one side only
    mu1, s1 = x.mean(axis=0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(axis=0), np.cov(y, rowvar=False)
    assert (np.diag(s1)[:6] == 0).all() and (np.diag(s2)[:5] < 1e-20).all()  # round-off
    expected = mp_frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-10)
    # Dropping the dead dimensions changes nothing but the mean term: 5 × 0.3².
    rest = slice(5, None)
    reduced = frechet_distance(mu1[rest], s1[rest, rest], mu2[rest], s2[rest, rest])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reduced + 5 * 0.09, rel=1e-12)


def test_singular_round_off_does_not_bias_the_trace():
    # Both covariances of rank 20 in 64 dims (fewer samples than dimensions): the 44 zero
    # eigenvalues come out as round-off, whose square roots must not count.
    rng = np.random.default_rng(12)
    basis = rng.standard_normal((64, 20))
    s1 = basis @ np.diag(rng.uniform(0.5, 2.0, 20)) @ basis.T
    s2 = basis @ np.diag(rng.uniform(0.5, 2.0, 20)) @ basis.T
    mu = np.zeros(64)
    expected = mp_frechet_distance(mu, s1, mu, s2)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-9)


# FID of the shipped classifier's features, MNIST test (all 10000) against train[:10000], from
# float64 RunningStats. Computed once from these exact float64 statistics with mpmath at 50
# digits (Cholesky of Σ₁ on the 73 dimensions that vary, then eigsy of Lᵀ Σ₂ L) and checked
# with the roles of Σ₁ and Σ₂ swapped at 60 digits and with mp_frechet_distance above (another
# route): all three agree to 40 digits. The fingerprint below identifies those statistics.
# (Issue 12 quotes 0.809303161 from statistics of its own; ours differ by 5e-8 relative.)
MNIST_FID_REFERENCE = 0.80930312210322641624509064435
MNIST_STATS_FINGERPRINT = (671.8723690117838, 665.1081492032031, 0.10688007049612419)


def test_real_classifier_features_agree_with_high_precision(mnist_dir):
    """55 of the classifier's 128 features are always 0: Σ₁ and Σ₂ are singular."""
    test, train = (
        load_dataset("mnist", split=split, data_dir=mnist_dir, download=False, limit=10000)
        for split in ("test", "train")
    )
    extractor = get_extractor("classifier", dataset=test)
    stats = [
        RunningStats(extractor.dim).update(extract_features(extractor, data.images))
        for data in (test, train)
    ]
    (mu1, s1), (mu2, s2) = ((s.mean, s.cov) for s in stats)
    assert int(((np.diag(s1) == 0) & (np.diag(s2) == 0)).sum()) == 55
    fingerprint = (np.trace(s1), np.trace(s2), float((mu1 - mu2) @ (mu1 - mu2)))
    if np.allclose(fingerprint, MNIST_STATS_FINGERPRINT, rtol=1e-12, atol=0.0):
        expected = MNIST_FID_REFERENCE
    else:  # other features (another CPU, or a changed extractor): recompute (~10 s)
        warnings.warn(
            f"classifier statistics {fingerprint} differ from those of MNIST_FID_REFERENCE; "
            "comparing with mp_frechet_distance instead (update the reference)",
            stacklevel=1,
        )
        live = (np.diag(s1) != 0) | (np.diag(s2) != 0)  # others: zero rows and columns
        keep = np.ix_(live, live)
        dead = ~live
        expected = mp_frechet_distance(mu1[live], s1[keep], mu2[live], s2[keep]) + float(
            (mu1[dead] - mu2[dead]) @ (mu1[dead] - mu2[dead])
        )
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=0.0)
