"""Real-data feature statistics, cached on disk under a key hashed from all their inputs.

Every trial of a study compares its samples with the same real statistics, and many workers
start at once: the first to need them computes them and writes them atomically (temporary
file in the same directory, then ``os.replace``); everyone else reads the file.

The real reference is a seeded random sample of the split, not its first images: datasets are
often stored sorted by class (IDX files are not, but ``.npz`` exports and class-per-folder image
folders are), and the first 2000 images of a class-sorted MNIST hold only 0s to 3s, against
which even the real data scores an FID near 400.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from ganhpo._files import atomic_write, resolve_cache_dir, safe_name
from ganhpo.data import ImageDataset
from ganhpo.metrics._features import FeatureExtractor, iter_features
from ganhpo.metrics._stats import RunningStats

__all__ = ["RealStats", "real_sample_indices", "real_statistics"]

logger = logging.getLogger(__name__)

# Bump when the file layout or the way statistics are computed changes: old files are ignored.
# 2: a seeded random sample of the split (1 took its first images) and the indices are stored.
_FORMAT_VERSION = 2
# How the sample is drawn from the seed; part of the cache key, so a change here is a new key.
_SAMPLING = "torch.randperm(cpu generator)[:n], sorted"


@dataclass(frozen=True, eq=False)
class RealStats:
    """Feature statistics of real images: mean [d], covariance [d, d] (float64), features.

    ``features`` [n, d] (float32) are kept for KID; row i belongs to dataset image
    ``indices[i]`` (int64, increasing). ``path`` is the cache file and ``cached`` says whether
    this call read it (True) or computed and wrote it (False).
    """

    mu: NDArray[np.float64]
    sigma: NDArray[np.float64]
    features: NDArray[np.float32]
    indices: NDArray[np.int64]
    path: Path
    cached: bool

    @property
    def num_samples(self) -> int:
        """How many real images the statistics were computed from."""
        return int(self.features.shape[0])


def real_sample_indices(num_images: int, num_samples: int, seed: int) -> torch.Tensor:
    """Which of ``num_images`` images form the real reference of ``num_samples``: int64, sorted.

    A uniform random sample without replacement drawn from ``seed`` with a CPU
    ``torch.Generator``, so every trial and worker of a study gets the same one; all images when
    ``num_samples >= num_images``. Samples of one seed are nested: the 2000-image reference is
    part of the 10000-image one.
    """
    if num_images < 0 or num_samples < 0:
        raise ValueError(f"need non-negative counts, got {num_images} images, {num_samples}")
    if num_samples >= num_images:
        return torch.arange(num_images, dtype=torch.int64)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(num_images, generator=generator, dtype=torch.int64)
    # Sorted: the statistics do not depend on the order, and reading in order is cache-friendly.
    return order[:num_samples].sort().values


def real_statistics(
    dataset: ImageDataset,
    extractor: FeatureExtractor,
    *,
    num_samples: int,
    seed: int,
    cache_dir: str | Path | None = None,
    batch_size: int = 500,
    device: str | torch.device | None = None,
) -> RealStats:
    """Feature statistics of a seeded random sample of ``num_samples`` images of ``dataset``.

    The sample is :func:`real_sample_indices` (``seed`` is the study's evaluation seed, so
    every trial and worker compares with the same real images). When the dataset has fewer
    images, all of them are used (and ``num_samples`` of the result says how many); requests
    for more than the dataset holds therefore share one file, whatever the seed. The cache key
    hashes the dataset's name, split and content digest, the extractor's name and digest, the
    number of images and the seed and method of the sample, so changing any of them computes
    new statistics. A corrupt cache file is recomputed and replaced. The cache directory is
    ``cache_dir``, else ``$GANHPO_CACHE_DIR``, else the user cache directory (see
    :func:`resolve_cache_dir`), plus ``stats/``.
    ``device``, when given, is where the extractor is moved to run (``extractor.to(device)``).
    """
    if num_samples < 2:
        raise ValueError(
            f"num_samples must be at least 2 to estimate a covariance, got {num_samples}"
        )
    n = min(num_samples, len(dataset))
    if n < 2:
        raise ValueError(
            f"dataset {dataset.name!r} has {len(dataset)} images; FID needs at least 2"
        )
    # The whole split is the same sample for every seed: leave the seed out of its key.
    sample_seed = seed if n < len(dataset) else None
    path = _stats_path(resolve_cache_dir(cache_dir), dataset, extractor, n, sample_seed)
    loaded = _load(path, extractor.dim, n)
    if loaded is not None:
        logger.debug("real statistics from %s", path)
        mu, sigma, features, indices = loaded
        return RealStats(mu, sigma, features, indices, path, cached=True)

    started = time.perf_counter()
    if device is not None:
        extractor.to(device)
    stats = RunningStats(extractor.dim)
    chunks: list[torch.Tensor] = []
    index = real_sample_indices(len(dataset), n, seed)
    # Gathered a batch at a time: a copy of a large sample would double the dataset's memory.
    for start in range(0, n, batch_size):
        images = dataset.images[index[start : start + batch_size]]
        for batch in iter_features(extractor, images, batch_size=batch_size):
            stats.update(batch)
            chunks.append(batch.to("cpu", torch.float32))
    features = torch.cat(chunks).numpy()
    mu, sigma = stats.mean, stats.cov
    indices = index.numpy()
    with atomic_write(path) as f:
        np.savez(f, mu=mu, sigma=sigma, features=features, indices=indices)
    logger.info(
        "real statistics of %d %s/%s images (%s) with %r computed in %.1f s and cached in %s",
        n,
        dataset.name,
        dataset.split,
        "all" if sample_seed is None else f"random sample, seed {sample_seed}",
        extractor.name,
        time.perf_counter() - started,
        path,
    )
    return RealStats(mu, sigma, features, indices, path, cached=False)


def _stats_path(
    root: Path, dataset: ImageDataset, extractor: FeatureExtractor, n: int, seed: int | None
) -> Path:
    """The cache file for ``n`` images drawn with ``seed`` (None: the whole split)."""
    key = json.dumps(
        {
            "version": _FORMAT_VERSION,
            "dataset": dataset.name,
            "split": dataset.split,
            "dataset_digest": dataset.digest,
            "extractor": extractor.name,
            "extractor_digest": extractor.digest,
            "num_samples": n,
            "sampling": _SAMPLING if seed is not None else "all",
            "seed": seed,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    name = safe_name(f"{dataset.name}-{dataset.split}-{extractor.name}-{n}-{digest}")
    return root / "stats" / f"{name}.npz"


_Arrays = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float32], NDArray[np.int64]]


def _load(path: Path, dim: int, n: int) -> _Arrays | None:
    """The cached (mu, sigma, features, indices) at ``path``, or None when absent or unusable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma, features = data["mu"], data["sigma"], data["features"]
            indices = data["indices"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("ignoring unreadable statistics cache %s (%s); recomputing", path, e)
        return None
    if (
        mu.shape != (dim,)
        or sigma.shape != (dim, dim)
        or features.shape != (n, dim)
        or indices.shape != (n,)
    ):
        logger.warning("ignoring statistics cache %s with unexpected shapes; recomputing", path)
        return None
    return mu, sigma, features, indices.astype(np.int64, copy=False)
