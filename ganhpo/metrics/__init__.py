"""Sample quality metrics: FID and KID, in three layers.

1. features: :func:`get_extractor` builds a :class:`FeatureExtractor` by name ("classifier",
   a small CNN trained on the real data, with shipped MNIST weights; "inception",
   pytorch-fid's Inception-v3);
2. statistics: :class:`RunningStats` streams float64 means and covariances, and
   :func:`real_statistics` caches those of real data on disk;
3. distances: :func:`frechet_distance` and :func:`kid`, pure numpy.

:class:`Evaluator` ties them together to score a generator on :func:`fixed_latents`.
"""

from __future__ import annotations

from ganhpo._files import CACHE_DIR_ENV, resolve_cache_dir
from ganhpo.metrics._cache import RealStats, real_sample_indices, real_statistics
from ganhpo.metrics._classifier import (
    ClassifierNet,
    classifier_accuracy,
    load_classifier,
    prepare_input,
    serialize_classifier,
    train_classifier,
)
from ganhpo.metrics._evaluate import (
    EvalResult,
    Evaluator,
    content_order,
    fixed_latents,
    generate_images,
)
from ganhpo.metrics._features import (
    EXTRACTORS,
    INCEPTION_WEIGHTS_ENV,
    SHIPPED_WEIGHTS_DIR,
    ClassifierExtractor,
    FeatureExtractor,
    InceptionExtractor,
    check_extractor,
    extract_features,
    get_extractor,
    iter_features,
)
from ganhpo.metrics._fid import frechet_distance, trace_sqrt_product
from ganhpo.metrics._kid import kid, polynomial_mmd2
from ganhpo.metrics._stats import RunningStats

__all__ = [
    "CACHE_DIR_ENV",
    "EXTRACTORS",
    "INCEPTION_WEIGHTS_ENV",
    "SHIPPED_WEIGHTS_DIR",
    "ClassifierExtractor",
    "ClassifierNet",
    "EvalResult",
    "Evaluator",
    "FeatureExtractor",
    "InceptionExtractor",
    "RealStats",
    "RunningStats",
    "check_extractor",
    "classifier_accuracy",
    "content_order",
    "extract_features",
    "fixed_latents",
    "frechet_distance",
    "generate_images",
    "get_extractor",
    "iter_features",
    "kid",
    "load_classifier",
    "polynomial_mmd2",
    "prepare_input",
    "real_sample_indices",
    "real_statistics",
    "resolve_cache_dir",
    "serialize_classifier",
    "trace_sqrt_product",
    "train_classifier",
]
