"""Real-data feature statistics, cached on disk under a key hashed from all their inputs.

Every trial of a study compares its samples with the same real statistics, and many workers
start at once: the first to need them computes them and writes them atomically (temporary
file in the same directory, then ``os.replace``); everyone else reads the file.
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

__all__ = ["RealStats", "real_statistics"]

logger = logging.getLogger(__name__)

# Bump when the file layout or the way statistics are computed changes: old files are ignored.
_FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class RealStats:
    """Feature statistics of real images: mean [d], covariance [d, d] (float64), features.

    ``features`` [n, d] (float32) are kept for KID. ``path`` is the cache file and ``cached``
    says whether this call read it (True) or computed and wrote it (False).
    """

    mu: NDArray[np.float64]
    sigma: NDArray[np.float64]
    features: NDArray[np.float32]
    path: Path
    cached: bool

    @property
    def num_samples(self) -> int:
        """How many real images the statistics were computed from."""
        return int(self.features.shape[0])


def real_statistics(
    dataset: ImageDataset,
    extractor: FeatureExtractor,
    *,
    num_samples: int,
    cache_dir: str | Path | None = None,
    batch_size: int = 500,
    device: str | torch.device | None = None,
) -> RealStats:
    """Feature statistics of the first ``num_samples`` images of ``dataset``, from the cache.

    When the dataset has fewer images, all of them are used (and ``num_samples`` of the result
    says how many); requests for more than the dataset holds therefore share one file. The cache
    key hashes the dataset's name, split and content digest, the extractor's name and digest and
    the number of images, so changing any of them computes new statistics. A corrupt cache file
    is recomputed and replaced. The cache directory is ``cache_dir``, else ``$GANHPO_CACHE_DIR``,
    else the user cache directory (see :func:`resolve_cache_dir`), plus ``stats/``.
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
    path = _stats_path(resolve_cache_dir(cache_dir), dataset, extractor, n)
    loaded = _load(path, extractor.dim, n)
    if loaded is not None:
        logger.debug("real statistics from %s", path)
        mu, sigma, features = loaded
        return RealStats(mu, sigma, features, path, cached=True)

    started = time.perf_counter()
    if device is not None:
        extractor.to(device)
    stats = RunningStats(extractor.dim)
    chunks: list[torch.Tensor] = []
    for batch in iter_features(extractor, dataset.images[:n], batch_size=batch_size):
        stats.update(batch)
        chunks.append(batch.to("cpu", torch.float32))
    features = torch.cat(chunks).numpy()
    mu, sigma = stats.mean, stats.cov
    with atomic_write(path) as f:
        np.savez(f, mu=mu, sigma=sigma, features=features)
    logger.info(
        "real statistics of %d %s/%s images with %r computed in %.1f s and cached in %s",
        n,
        dataset.name,
        dataset.split,
        extractor.name,
        time.perf_counter() - started,
        path,
    )
    return RealStats(mu, sigma, features, path, cached=False)


def _stats_path(root: Path, dataset: ImageDataset, extractor: FeatureExtractor, n: int) -> Path:
    key = json.dumps(
        {
            "version": _FORMAT_VERSION,
            "dataset": dataset.name,
            "split": dataset.split,
            "dataset_digest": dataset.digest,
            "extractor": extractor.name,
            "extractor_digest": extractor.digest,
            "num_samples": n,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    name = safe_name(f"{dataset.name}-{dataset.split}-{extractor.name}-{n}-{digest}")
    return root / "stats" / f"{name}.npz"


def _load(
    path: Path, dim: int, n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float32]] | None:
    """The cached (mu, sigma, features) at ``path``, or None when absent or unusable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma, features = data["mu"], data["sigma"], data["features"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("ignoring unreadable statistics cache %s (%s); recomputing", path, e)
        return None
    if mu.shape != (dim,) or sigma.shape != (dim, dim) or features.shape != (n, dim):
        logger.warning("ignoring statistics cache %s with unexpected shapes; recomputing", path)
        return None
    return mu, sigma, features
