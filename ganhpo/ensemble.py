"""Ensembles of a study's best generators: a mixture that draws each image from one member.

A study ends with many good generators, and generators drop modes (a digit they never draw);
a mixture of several (Arora et al. 2017's MIX+GAN, Tolstikhin et al. 2017's AdaGAN) can cover
what each misses. :func:`ensemble_study` takes the K best completed trials of a study and
scores on the test reference (the images ``ganhpo study test`` uses, with the same fresh
latents) each member alone, their uniform mixture, and the mixture whose weights minimise the
FID against a *validation* reference (:func:`fit_weights`): a sample of the training split, on
latents of their own, so the test reference plays no part in choosing the weights.

FID of a mixture needs no sampling to fit the weights: the mixture's feature mean and
covariance are those of its members mixed (:func:`mixture_moments`), so the FID of any
weights follows from each member's moments, measured once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from numpy.typing import NDArray
from torch import nn

from ganhpo.errors import ConfigError, GanhpoError, StorageError
from ganhpo.metrics import FeatureExtractor, RunningStats, frechet_distance
from ganhpo.results import best_completed, fid_sort_key, finite_or_none
from ganhpo.train.export import GeneratorFile
from ganhpo.train.mixture import MixtureGenerator

__all__ = [
    "EnsembleRun",
    "MemberScore",
    "MixtureScore",
    "ensemble_study",
    "feature_moments",
    "fit_weights",
    "mixture_fid",
    "mixture_moments",
]

logger = logging.getLogger(__name__)

# Weights below this share are dropped from a fitted mixture (and the rest renormalized).
_MIN_WEIGHT = 1e-3


# --------------------------------------------------------------------------- the mixture's FID
def feature_moments(
    extractor: FeatureExtractor,
    generator: nn.Module,
    latents: torch.Tensor,
    *,
    batch_size: int = 500,
    device: torch.device | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(mean [d], covariance [d, d]) of the features of ``generator``'s images on ``latents``,
    quantized to uint8 as evaluations quantize them."""
    from ganhpo.data import from_unit_range
    from ganhpo.metrics import generate_images, iter_features

    stats = RunningStats(extractor.dim)
    for images in generate_images(generator, latents, batch_size=batch_size, device=device):
        if not bool(torch.isfinite(images).all()):
            raise ValueError("makes NaN or infinite pixels")
        for features in iter_features(extractor, from_unit_range(images), batch_size=batch_size):
            stats.update(features)
    return stats.mean, stats.cov


def mixture_moments(
    weights: Sequence[float] | NDArray[np.float64],
    means: Sequence[NDArray[np.float64]],
    covs: Sequence[NDArray[np.float64]],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and covariance of a mixture of distributions with these means and covariances:
    mu = sum w_i mu_i, Sigma = sum w_i (Sigma_i + mu_i mu_i^T) - mu mu^T."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mus = np.stack(means)
    mu = w @ mus
    second = sum(wi * (c + np.outer(m, m)) for wi, m, c in zip(w, mus, covs, strict=True))
    return mu, np.asarray(second - np.outer(mu, mu))


def mixture_fid(
    weights: Sequence[float] | NDArray[np.float64],
    means: Sequence[NDArray[np.float64]],
    covs: Sequence[NDArray[np.float64]],
    real_mu: NDArray[np.float64],
    real_sigma: NDArray[np.float64],
) -> float:
    """FID of the mixture of the members' feature distributions against the real one."""
    mu, cov = mixture_moments(weights, means, covs)
    return frechet_distance(mu, cov, real_mu, real_sigma)


def fit_weights(
    means: Sequence[NDArray[np.float64]],
    covs: Sequence[NDArray[np.float64]],
    real_mu: NDArray[np.float64],
    real_sigma: NDArray[np.float64],
    *,
    steps: int = 400,
) -> NDArray[np.float64]:
    """Mixture weights (on the simplex) that minimise :func:`mixture_fid`: Adam on softmax
    logits from the uniform mixture, FID's matrix square root through the eigenvalues of
    ``Sigma_r^1/2 Sigma(w) Sigma_r^1/2``. The best of the fitted weights, the uniform ones and
    each member alone is returned, so the fit is never worse than any of those."""
    k = len(means)
    if k == 0 or k != len(covs):
        raise ValueError("need the moments of at least one member")
    candidates = [np.full(k, 1.0 / k), *np.eye(k)]
    if k > 1:
        candidates.append(_gradient_fit(means, covs, real_mu, real_sigma, steps))
    scored = [
        (mixture_fid(w, means, covs, real_mu, real_sigma), i, w) for i, w in enumerate(candidates)
    ]
    return np.asarray(min(scored, key=lambda s: (s[0], s[1]))[2], dtype=np.float64)


def _gradient_fit(
    means: Sequence[NDArray[np.float64]],
    covs: Sequence[NDArray[np.float64]],
    real_mu: NDArray[np.float64],
    real_sigma: NDArray[np.float64],
    steps: int,
) -> NDArray[np.float64]:
    mus = torch.as_tensor(np.stack(means), dtype=torch.float64)
    seconds = torch.stack(
        [
            torch.as_tensor(c, dtype=torch.float64) + torch.outer(m, m)
            for m, c in zip(mus, covs, strict=True)
        ]
    )
    r_mu = torch.as_tensor(real_mu, dtype=torch.float64)
    eigenvalues, vectors = torch.linalg.eigh(torch.as_tensor(real_sigma, dtype=torch.float64))
    root = vectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ vectors.T
    logits = torch.zeros(len(means), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)

    def objective() -> torch.Tensor:
        w = torch.softmax(logits, 0)
        mu = w @ mus
        cov = torch.einsum("k,kij->ij", w, seconds) - torch.outer(mu, mu)
        inner = root @ cov @ root
        inner = (inner + inner.T) / 2
        trace_sqrt = torch.linalg.eigvalsh(inner).clamp_min(1e-12).sqrt().sum()
        return ((mu - r_mu) ** 2).sum() + torch.trace(cov) - 2 * trace_sqrt

    for _ in range(steps):
        optimizer.zero_grad()
        loss = objective()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    w = torch.softmax(logits.detach(), 0).numpy()
    w = np.where(w < _MIN_WEIGHT, 0.0, w)
    return np.asarray(w / w.sum(), dtype=np.float64)


# ------------------------------------------------------------------------- a study's ensemble
@dataclass(frozen=True)
class MemberScore:
    """A member's search FID and rank, its test FID (with std) and its fitted weight."""

    number: int
    search_rank: int
    search_fid: float
    test_fid: float
    test_fid_std: float
    weight: float


@dataclass(frozen=True)
class MixtureScore:
    """A mixture's weights, its FID on the validation reference (the fit's objective) and on
    the test reference (with std)."""

    weighing: str
    weights: list[float]
    validation_fid: float
    test_fid: float
    test_fid_std: float


@dataclass(frozen=True)
class EnsembleRun:
    """What :func:`ensemble_study` measured, and the generator files of its members."""

    study: str
    members: list[MemberScore]
    mixtures: dict[str, MixtureScore]
    samples: int
    seed: int
    fit_seed: int
    fit_samples: int
    extractor: str
    reference: str
    files: list[GeneratorFile] = field(repr=False, default_factory=list)

    @property
    def best_member(self) -> MemberScore:
        """The member with the best test FID."""
        return min(self.members, key=lambda m: (fid_sort_key(m.test_fid), m.search_rank))

    def beats_best_member(self, weighing: str) -> bool:
        """Whether the mixture's test FID is below the best single member's."""
        return fid_sort_key(self.mixtures[weighing].test_fid) < fid_sort_key(
            self.best_member.test_fid
        )

    def summary(self, weighing: str) -> dict[str, Any]:
        """What a study records of this ensemble (JSON)."""
        chosen = self.mixtures[weighing]
        best = self.best_member
        return {
            "weighing": weighing,
            "trials": [m.number for m in self.members],
            "weights": chosen.weights,
            "test_fid": finite_or_none(chosen.test_fid),
            "test_fid_std": finite_or_none(chosen.test_fid_std),
            "validation_fid": finite_or_none(chosen.validation_fid),
            "best_member": best.number,
            "best_member_test_fid": finite_or_none(best.test_fid),
            "samples": self.samples,
            "seed": self.seed,
            "reference": self.reference,
        }


def ensemble_study(
    study: optuna.Study,
    store: Any,
    *,
    top: int = 3,
    samples: int = 10_000,
    seed: int | None = None,
    fit_samples: int = 5_000,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> EnsembleRun:
    """Mix the final generators of the ``top`` best completed trials and score them.

    Weights are fitted on ``fit_samples`` generated images (latents of ``seed + 1``) against
    as many training images drawn with that seed; every member alone, the uniform mixture and
    the fitted one are then scored on the test reference of :func:`ganhpo.results.test_reference`
    with ``samples`` latents of ``seed`` (default: the evaluation seed + 1, as ``ganhpo study
    test``'s, whose test FIDs these are). The evaluation seed is refused for either."""
    from ganhpo.metrics import Evaluator, fixed_latents
    from ganhpo.results import test_reference, trial_generator
    from ganhpo.study import study_spec

    if top < 2:
        raise ConfigError(
            f"an ensemble needs at least 2 members, got --top {top}; use --top 2 or more"
        )
    base = study_spec(study).base
    search_seed = base.eval.seed
    seed = search_seed + 1 if seed is None else seed
    fit_seed = seed + 1
    if search_seed in (seed, fit_seed):
        raise ConfigError(
            f"--seed {seed} uses the evaluation seed {search_seed} of study "
            f"{study.study_name!r} (the test latents are seed S, the fit's S + 1): choose "
            "another seed"
        )
    test, train = test_reference(study, data_dir=data_dir)
    trials = best_completed(study, top)
    if len(trials) < 2:
        raise StorageError(
            f"study {study.study_name!r} has 1 completed trial: an ensemble needs 2 or more; "
            "run more trials first"
        )
    files = [trial_generator(study, t, store) for t in trials]
    target = torch.device(device)
    built = [f.build(device=target, data_dir=data_dir) for f in files]
    dims = [f.config.model.latent_dim for f in files]
    batch = base.eval.batch_size
    tester = Evaluator(
        test, extractor=base.eval.extractor, device=target, cache_dir=cache_dir, seed=seed,
        latent_dim=max(dims), extractor_data=train,
    )  # fmt: skip
    fitter = Evaluator(
        train, extractor=base.eval.extractor, device=target, cache_dir=cache_dir, seed=fit_seed,
        latent_dim=max(dims),
    )  # fmt: skip
    real = fitter.real_stats(fit_samples)
    moments = []
    for trial, g, d in zip(trials, built, dims, strict=True):
        try:
            moments.append(
                feature_moments(
                    fitter.extractor,
                    g,
                    fixed_latents(fit_seed, fit_samples, d),
                    batch_size=batch,
                    device=target,
                )
            )
        except ValueError as e:  # NaN or infinite pixels: the generator diverged
            raise GanhpoError(
                f"the generator of trial {trial.number} {e} on the fit's latents; it diverged: "
                f"leave it out with a smaller --top, or ensemble other trials"
            ) from None
    means = [m for m, _ in moments]
    covs = [c for _, c in moments]
    weights = {
        "uniform": np.full(len(files), 1.0 / len(files)),
        "fitted": fit_weights(means, covs, real.mu, real.sigma),
    }
    members = []
    for rank, (trial, g, d) in enumerate(zip(trials, built, dims, strict=True), start=1):
        result = tester.evaluate(g, samples, batch_size=batch, kid=False, latent_dim=d)
        logger.info("member trial %d: test FID %.4f", trial.number, result.fid)
        members.append(
            MemberScore(
                trial.number,
                rank,
                trial.values[0],
                result.fid,
                result.fid_std,
                float(weights["fitted"][rank - 1]),
            )
        )
    mixtures = {}
    for weighing, w in weights.items():
        mixture = MixtureGenerator(built, list(w), dims).to(target)
        result = tester.evaluate(
            mixture, samples, batch_size=batch, kid=False, latent_dim=max(dims)
        )
        logger.info("%s mixture %s: test FID %.4f", weighing, np.round(w, 3).tolist(), result.fid)
        mixtures[weighing] = MixtureScore(
            weighing, [float(x) for x in w], mixture_fid(w, means, covs, real.mu, real.sigma),
            result.fid, result.fid_std,
        )  # fmt: skip
    return EnsembleRun(
        study=study.study_name, members=members, mixtures=mixtures, samples=samples, seed=seed,
        fit_seed=fit_seed, fit_samples=fit_samples, extractor=base.eval.extractor,
        reference=f"{test.name}/{test.split}", files=files,
    )  # fmt: skip


def ensemble_info(run: EnsembleRun, weighing: str) -> dict[str, Any]:
    """What an ensemble file records of how it was made."""
    return {"study": run.study, **run.summary(weighing)}
