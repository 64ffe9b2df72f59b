"""Scoring a generator: fixed latents → images → features → FID and KID against real data."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganhpo.data import ImageDataset, from_unit_range, image_hashes
from ganhpo.metrics._cache import RealStats, real_statistics
from ganhpo.metrics._features import FeatureExtractor, get_extractor, iter_features
from ganhpo.metrics._fid import frechet_distance
from ganhpo.metrics._kid import SUBSET_SIZE, kid
from ganhpo.metrics._stats import BlockedStats, RunningStats

__all__ = ["EvalResult", "Evaluator", "content_order", "fixed_latents", "generate_images"]

logger = logging.getLogger(__name__)

# Rows per KID subset (Bińkowski et al.); kid() caps it at half of each set, so that 1000
# samples give subsets of 500 that differ from one another rather than 100 copies of the set.
KID_SUBSET_SIZE = SUBSET_SIZE
KID_SUBSETS = 100  # subsets KID averages over; each costs three [m, m] kernel matrices, m <= 1000
# Groups of the fake sample for the jackknife std of FID: each costs one more Fréchet distance
# (milliseconds at 128 dimensions; 0.7 s at 2048 on two CPU cores, so about 7 s per Inception
# evaluation); 10 groups estimate a std to within about ±25 % (a jackknife std over k groups
# has about k - 1 degrees of freedom).
FID_STD_GROUPS = 10


def fixed_latents(seed: int, n: int, latent_dim: int) -> torch.Tensor:
    """``n`` standard normal latents [n, latent_dim], float32 on the CPU, determined by ``seed``.

    Drawn from a CPU ``torch.Generator``, so they are the same on every machine and device:
    every trial of a study is scored on the same z. A prefix of n latents is the same for any
    larger n.
    """
    if n < 0 or latent_dim < 1:
        raise ValueError(f"need n >= 0 and latent_dim >= 1, got n={n}, latent_dim={latent_dim}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(n, latent_dim, generator=generator, dtype=torch.float32)


def generate_images(
    generator: nn.Module,
    latents: torch.Tensor,
    *,
    batch_size: int = 500,
    device: torch.device | None = None,
) -> Generator[torch.Tensor, None, None]:
    """The generator's float images [B, C, H, W] on ``latents`` [N, latent_dim], batch by batch.

    In eval mode without autograd (the mode is restored when the iteration ends), on the
    device of the generator's parameters (else ``device``, else the CPU). What evaluations
    score and what ``ganhpo sample`` writes, in the same batches: both then quantize them with
    :func:`ganhpo.data.from_unit_range`, so a saved sample scores what its trial recorded.
    """
    device = _module_device(generator, device or torch.device("cpu"))
    was_training = generator.training
    generator.eval()
    try:
        for start in range(0, len(latents), batch_size):
            with torch.no_grad():  # not around the yield: the caller's grad mode stays its own
                images = generator(latents[start : start + batch_size].to(device))
            yield images
    finally:
        generator.train(was_training)


def content_order(images: torch.Tensor) -> torch.Tensor:
    """Indices that put ``images`` [N, ...] in an order set by their pixels alone (sorted by a
    hash of each image's bytes): the same images in any order come out in the same order.

    Scores of a set of images (FID, its jackknife std, KID's random subsets) then depend on
    which images it holds, not on how its files were named or sorted.
    """
    keys = image_hashes(images)
    return torch.tensor(sorted(range(len(keys)), key=keys.__getitem__), dtype=torch.long)


@dataclass(frozen=True)
class EvalResult:
    """FID (with its sampling std) and KID (mean and std over subsets) of ``num_samples`` fake
    images.

    ``fid_std`` is how much this FID would vary over new draws of the fake sample (the real
    reference fixed): the delete-a-group jackknife over 10 random groups (drawn from the
    evaluation seed) of the same samples, so it costs no extra generation. Two FIDs of one
    study closer than about twice their stds cannot be told apart. Both are ``inf`` when the
    generator produced NaN or infinite pixels; KID is ``nan`` when it was not asked for,
    ``fid_std`` with fewer than 20 samples. ``seconds`` is the wall time of the evaluation
    (generation, features and distances).
    """

    fid: float
    kid: float
    kid_std: float
    num_samples: int
    seconds: float
    fid_std: float = math.nan


class Evaluator:
    """Scores generators against one real dataset, on fixed latents, with one feature extractor.

    Real statistics come from :func:`real_statistics` (cached on disk, shared by workers) for
    the same number of images as the fake sample, since FID depends on the sample size; those
    images are a random sample of the real split drawn from ``seed``, as the latents are. The
    extractor is built by name with :func:`get_extractor` (for "classifier" on a non-MNIST
    dataset that may train one first). KID averages over ``kid_subsets`` random subsets of
    min(1000, n // 2) samples of each side, drawn from ``seed`` as the latents are.
    ``extractor_data`` is the dataset the extractor is for when the reference is another
    (a study's test split: the features stay those its trials were scored with).

    Generated images are quantized to uint8 (:func:`ganhpo.data.from_unit_range`) before their
    features: they are scored as they would be saved.
    """

    def __init__(
        self,
        real: ImageDataset,
        *,
        extractor: str = "classifier",
        device: str | torch.device = "cpu",
        cache_dir: str | Path | None = None,
        seed: int = 0,
        latent_dim: int,
        kid_subsets: int = KID_SUBSETS,
        extractor_data: ImageDataset | None = None,
    ) -> None:
        self.real = real
        self.device = torch.device(device)
        self.cache_dir = cache_dir
        self.seed = seed
        self.latent_dim = latent_dim
        self.kid_subsets = kid_subsets
        self.extractor: FeatureExtractor = get_extractor(
            extractor,
            dataset=real if extractor_data is None else extractor_data,
            device=self.device,
            cache_dir=cache_dir,
        )
        self._real_stats: dict[int, RealStats] = {}

    def real_stats(self, num_samples: int) -> RealStats:
        """Statistics of ``num_samples`` real images (or all, if fewer), sampled from ``seed``."""
        if num_samples not in self._real_stats:
            self._real_stats[num_samples] = real_statistics(
                self.real,
                self.extractor,
                num_samples=num_samples,
                seed=self.seed,
                cache_dir=self.cache_dir,
            )
        return self._real_stats[num_samples]

    def evaluate(
        self,
        generator: nn.Module,
        num_samples: int,
        *,
        batch_size: int = 500,
        kid: bool = True,
        real_samples: int | None = None,
        latent_dim: int | None = None,
    ) -> EvalResult:
        """FID and KID of ``num_samples`` images from ``generator`` on the study's fixed latents.

        The generator maps z [B, latent_dim] to images [B, C, H, W] in [-1, 1]; it runs in eval
        mode without autograd, on the device of its parameters, and its mode is restored.
        ``kid=False`` skips KID (most of an evaluation's time with 100 subsets); it is then nan.
        The real reference has ``real_samples`` images (default: as many as generated; the
        dataset's size for the whole split, as the FID-50k protocol does). ``latent_dim`` is
        the generator's when it differs from the evaluator's (a study that searches it).
        """
        started = time.perf_counter()
        latents = fixed_latents(self.seed, num_samples, latent_dim or self.latent_dim)
        batches = generate_images(generator, latents, batch_size=batch_size, device=self.device)
        try:
            return self._score(batches, num_samples, started, kid, real_samples)
        finally:
            batches.close()  # the generator's mode is restored even when scoring stopped early

    def evaluate_images(
        self,
        images: torch.Tensor,
        *,
        batch_size: int = 500,
        kid: bool = True,
        real_samples: int | None = None,
    ) -> EvalResult:
        """FID and KID of given fake images [N, C, H, W] (float in [-1, 1], or uint8), whatever
        their order (:func:`content_order`); ``real_samples`` as for :meth:`evaluate`."""
        started = time.perf_counter()
        images = images[content_order(images)]
        batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        return self._score(batches, len(images), started, kid, real_samples)

    def _accumulate(
        self,
        batches: Iterable[torch.Tensor],
        num_samples: int,
        stats: RunningStats,
        blocked: BlockedStats | None,
        chunks: list[torch.Tensor] | None,
    ) -> bool:
        """Add the features of every batch of images to ``stats`` (and ``blocked``, and, for
        KID, ``chunks``); False, at once, on images that are not finite."""
        for images in batches:
            if images.is_floating_point() and not bool(torch.isfinite(images).all()):
                return False
            if images.is_floating_point():
                # Scored as they are saved (a PNG, a uint8 .npz), as clean-fid and StyleGAN's
                # metrics do: 'ganhpo score' of a trial's written samples gives its FID exactly.
                images = from_unit_range(images)
            for features in iter_features(self.extractor, images, batch_size=len(images)):
                if blocked is not None and stats.count + len(features) > num_samples:
                    raise ValueError(
                        f"expected {num_samples} images, got more: the generator must return "
                        "one image [C, H, W] per latent"
                    )
                stats.update(features)
                if blocked is not None:
                    blocked.update(features)
                if chunks is not None:
                    chunks.append(features.to("cpu", torch.float32))
        return True

    def _score(
        self,
        batches: Iterable[torch.Tensor],
        num_samples: int,
        started: float,
        with_kid: bool,
        real_samples: int | None = None,
    ) -> EvalResult:
        if num_samples < 2:
            raise ValueError(f"FID needs at least 2 samples, got {num_samples}")
        real = self.real_stats(num_samples if real_samples is None else real_samples)
        groups = FID_STD_GROUPS if num_samples >= 2 * FID_STD_GROUPS else None
        blocked = (
            None
            if groups is None
            else BlockedStats(self.extractor.dim, num_samples, groups, seed=self.seed)
        )
        stats = RunningStats(self.extractor.dim)
        chunks: list[torch.Tensor] | None = [] if with_kid else None
        if not self._accumulate(batches, num_samples, stats, blocked, chunks):
            logger.warning("generated images contain NaN or infinite values; FID is inf")
            return EvalResult(math.inf, math.inf, math.inf, num_samples, _since(started), math.inf)
        if stats.count != num_samples:
            raise ValueError(
                f"expected {num_samples} images, got {stats.count}: the generator must return "
                "one image [C, H, W] per latent"
            )
        fid = frechet_distance(stats.mean, stats.cov, real.mu, real.sigma)
        fid_std = math.nan
        if blocked is not None:
            fid_std = blocked.jackknife_std(
                lambda part: frechet_distance(part.mean, part.cov, real.mu, real.sigma)
            )
        kid_mean = kid_std = math.nan
        if chunks is not None:
            fake = torch.cat(chunks).numpy()
            kid_mean, kid_std = kid(  # subsets of min(1000, half of each set)
                fake,
                real.features,
                num_subsets=self.kid_subsets,
                subset_size=KID_SUBSET_SIZE,
                seed=self.seed,
            )
        if real.num_samples < num_samples:
            logger.warning(
                "only %d real images to compare %d fake ones with; FID is biased by the mismatch",
                real.num_samples,
                num_samples,
            )
        return EvalResult(fid, kid_mean, kid_std, num_samples, _since(started), fid_std)


def _module_device(module: nn.Module, default: torch.device) -> torch.device:
    """The device of the module's first parameter or buffer, else ``default``."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return default if first is None else first.device


def _since(started: float) -> float:
    return time.perf_counter() - started
