"""The distance layer of FID: the Fréchet distance between two Gaussians, in pure numpy.

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁ Σ₂)

pytorch-fid computes the last term with ``scipy.linalg.sqrtm`` of the non-symmetric product
Σ₁Σ₂ (a complex Schur decomposition: seconds at 2048 dimensions, and complex round-off to clean
up). Only the trace is needed, and Σ₁Σ₂ is similar to the symmetric positive semi-definite
matrix Lᵀ Σ₂ L where Σ₁ = L Lᵀ, so tr √(Σ₁Σ₂) is the sum of the square roots of that matrix's
eigenvalues: one Cholesky factorisation and one symmetric eigenvalue solve, all real.

Features that are constant on one side (dead ReLU units: 55 of the shipped MNIST classifier's 128
are always 0) make that side's covariance singular, which would force the slower route for
singular covariances and leave round-off eigenvalues near zero. A dimension without variance in
Σ₁ (or Σ₂) has a zero row and column there (the matrix is positive semi-definite), so it drops
out of tr √(Σ₁Σ₂) exactly; it still counts in ‖μ₁ − μ₂‖² and in the other trace. Eigenvalues
that are zero in exact arithmetic come out as round-off of either sign; both signs count as zero,
so their square roots (√1e-14 = 1e-7 each) do not bias the trace upwards.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["frechet_distance", "trace_sqrt_product"]

logger = logging.getLogger(__name__)

# Below this size the two plain matrix products are fast enough that blocking does not pay.
_BLOCKED_MIN_DIM = 256


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): the FID of two feature sets.

    Means have shape [d] and covariances [d, d]; everything is computed in float64. Raises
    ValueError when the shapes disagree or a value is not finite. The result is never negative
    (round-off below zero is clipped).
    """
    m1, s1 = _check_gaussian(mu1, sigma1, "1")
    m2, s2 = _check_gaussian(mu2, sigma2, "2")
    if m1.shape != m2.shape:
        raise ValueError(
            f"the two Gaussians have different dimensions: {m1.shape[0]} and {m2.shape[0]}"
        )
    diff = m1 - m2
    distance = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    # Exact arithmetic never goes below zero; round-off can, by a few ulps of the traces.
    return max(distance, 0.0)


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    """tr √(Σ₁ Σ₂) for symmetric positive semi-definite Σ₁, Σ₂ of the same shape [d, d].

    Like LAPACK, the factorisations read one triangle of each symmetric matrix, so the round-off
    asymmetry of estimated covariances does not matter.
    """
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    if s1.ndim != 2 or s1.shape[0] != s1.shape[1] or s1.shape != s2.shape:
        raise ValueError(f"covariances must be square and of one shape, got {s1.shape}, {s2.shape}")
    # A zero variance on either side means a zero row and column of a PSD matrix: that
    # dimension adds nothing to tr √(Σ₁Σ₂), and dropping it is exact. A constant feature other
    # than 0 gets a variance of round-off size (E[x²] − E[x]²), which counts as zero too.
    d1, d2 = np.diagonal(s1), np.diagonal(s2)
    varies = (d1 > _round_off_floor(d1)) & (d2 > _round_off_floor(d2))
    if not varies.all():
        keep = np.flatnonzero(varies)
        s1, s2 = s1[np.ix_(keep, keep)], s2[np.ix_(keep, keep)]
    if s1.shape[0] == 0:
        return 0.0
    # tr √(Σ₁Σ₂) = tr √(Σ₂Σ₁), so either factor may be the one we factorise; covariances
    # estimated from fewer samples than dimensions are singular and Cholesky refuses them.
    for a, b in ((s1, s2), (s2, s1)):
        factor = _cholesky(a)
        if factor is not None:
            return _sum_sqrt_eigenvalues(_lower_congruence(factor, b))
    logger.debug("both covariances are singular; using the square root of sigma1 on its range")
    # Σ₁ = V Λ Vᵀ on its numerical range (V: [d, r]); tr √(Σ₁Σ₂) = tr √(Λ½ Vᵀ Σ₂ V Λ½).
    eigenvalues, eigenvectors = np.linalg.eigh(s1)
    on_range = eigenvalues > _round_off_floor(eigenvalues)
    scaled = eigenvectors[:, on_range] * np.sqrt(eigenvalues[on_range])
    return _sum_sqrt_eigenvalues(scaled.T @ s2 @ scaled)


def _check_gaussian(mu: ArrayLike, sigma: ArrayLike, which: str) -> tuple[NDArray, NDArray]:
    m = np.asarray(mu, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    if m.ndim != 1:
        raise ValueError(f"mu{which} must be a vector [d], got shape {m.shape}")
    if s.shape != (m.shape[0], m.shape[0]):
        raise ValueError(
            f"sigma{which} must have shape {(m.shape[0], m.shape[0])} to match mu{which}, "
            f"got {s.shape}"
        )
    if not (np.isfinite(m).all() and np.isfinite(s).all()):
        raise ValueError(f"mu{which} or sigma{which} contains NaN or infinite values")
    return m, s


def _lower_congruence(factor: NDArray, s: NDArray) -> NDArray:
    """A matrix whose lower triangle is that of Lᵀ S L, for lower-triangular L = ``factor``.

    Only the lower triangle is needed (eigvalsh reads no more), and L is half zeros: splitting
    both into 2×2 blocks skips the products of zero blocks and of the upper triangle, 9/16 of
    the work of the two full matrix products.
    """
    n = factor.shape[0]
    if n < _BLOCKED_MIN_DIM:
        return factor.T @ s @ factor
    h = n // 2
    top_left, bottom_left, bottom_right = factor[:h, :h], factor[h:, :h], factor[h:, h:]
    left = s[:, :h] @ top_left + s[:, h:] @ bottom_left  # (S L)[:, :h]
    out = np.empty((n, n))
    out[:h, :h] = factor[:, :h].T @ left
    out[h:, :h] = bottom_right.T @ left[h:]
    out[h:, h:] = bottom_right.T @ (s[h:, h:] @ bottom_right)
    out[:h, h:] = 0.0  # the upper triangle, never read
    return out


def _cholesky(a: NDArray) -> NDArray | None:
    """The lower Cholesky factor of ``a``, or None when ``a`` is not positive definite."""
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        return None


def _round_off_floor(eigenvalues: NDArray) -> float:
    """The size below which an eigenvalue of a symmetric matrix cannot be told from zero.

    A symmetric eigenvalue solver is accurate to about n·eps·‖A‖ in absolute terms (the rule
    ``numpy.linalg.matrix_rank`` uses), whatever the size of the eigenvalue itself.
    """
    if eigenvalues.size == 0:
        return 0.0
    largest = float(np.abs(eigenvalues).max())
    return largest * eigenvalues.size * float(np.finfo(np.float64).eps)


def _sum_sqrt_eigenvalues(a: NDArray) -> float:
    """Σ √λᵢ over the eigenvalues of a symmetric PSD matrix given by its lower triangle.

    Eigenvalues within round-off of zero count as zero, whatever their sign: a singular
    matrix's zero eigenvalues come out as ±n·eps·‖A‖, and the square roots of the positive
    ones would add a bias of about √(n·eps·‖A‖) each.
    """
    eigenvalues = np.linalg.eigvalsh(a, UPLO="L")
    kept = eigenvalues[eigenvalues > _round_off_floor(eigenvalues)]
    return float(np.sqrt(kept).sum())
