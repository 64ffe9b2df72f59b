"""The feature layer of FID: extractors that map images to feature vectors, by name.

An extractor takes float images [N, C, H, W] in [-1, 1] (the generators' range) and returns
features [N, dim]. Its ``digest`` identifies architecture and weights, so statistics cached
with one extractor are never compared with features of another.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import traceback
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ganhpo._files import atomic_write, resolve_cache_dir, safe_name
from ganhpo.data import ImageDataset, to_unit_range
from ganhpo.data._npz import IMAGE_KEYS, LABEL_KEYS
from ganhpo.errors import DataError, ExtractorError
from ganhpo.metrics._classifier import (
    FEATURE_DIM,
    ClassifierNet,
    load_classifier,
    prepare_input,
    serialize_classifier,
    train_classifier,
)
from ganhpo.registry import Registry

__all__ = [
    "EXTRACTORS",
    "INCEPTION_WEIGHTS_ENV",
    "SHIPPED_WEIGHTS_DIR",
    "ClassifierExtractor",
    "FeatureExtractor",
    "InceptionExtractor",
    "check_extractor",
    "extract_features",
    "get_extractor",
    "iter_features",
    "split_holdout",
]

logger = logging.getLogger(__name__)

# Weights shipped inside the package; see weights/mnist_classifier.json for their provenance.
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Environment variable with the path of pytorch-fid's Inception weights (for offline machines).
INCEPTION_WEIGHTS_ENV = "GANHPO_INCEPTION_WEIGHTS"
_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
_INCEPTION_SHA256_PREFIX = "6726825d"  # torch.hub names files after their hash's first digits
_POOL3_BLOCK = 3  # pytorch-fid's block index of the 2048-d final average pool features
# Share of each class of a labelled dataset held out to measure a classifier trained on demand.
_HOLDOUT_FRACTION = 0.1
_HOLDOUT_MAX = 5000
# Fewest images per class to train on demand: 9 to train on and 1 to hold out at the least;
# fewer cannot measure anything (and the accuracy check below refuses most datasets near it).
_MIN_IMAGES_PER_CLASS = 10
# Hold-out accuracy a classifier trained on demand must reach for its features to be a FID
# space. Features that separate the classes are what makes FID see missing or confused modes.
# This CNN reaches 0.99 on MNIST (0.96 from 900 images); CNNs of its size are typically
# reported near 0.9 on Fashion-MNIST, the hardest of the gray 28×28 sets it is meant for, and
# near 0.6 on 28×28 gray copies of photos (CIFAR-10), where Inception features are the
# meaningful ones: 0.8 passes the first and refuses the second. Chance is at most 0.5.
_MIN_HOLDOUT_ACCURACY = 0.8
# Fewest optimizer steps: three epochs of a small dataset are a few steps, far too few. 64
# steps on 900 class-sorted MNIST images reach 0.96 hold-out accuracy (about 30 s on 2 cores).
_MIN_TRAIN_STEPS = 100
_TRAIN_EPOCHS = 3
_TRAIN_BATCH_SIZE = 128
# Seed of the hold-out split, the initial weights and the batch order of on-demand training;
# recorded next to the weights. The cached file is per dataset, shared by every study using it.
_CLASSIFIER_SEED = 0
# Part of the cached file's name; bump when training changes so older files are not reused.
# v2: stratified random hold-out and the accuracy check (v1 held out the last images).
# v3: the network sees the data's channels (v2 made RGB gray).
_CLASSIFIER_FORMAT = "v3"


@runtime_checkable
class FeatureExtractor(Protocol):
    """What FID and KID need from a feature network."""

    name: str  # the registry name, e.g. "classifier"
    dim: int  # feature dimension
    digest: str  # hex string identifying architecture and weights (cache keys)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features [N, dim] (float32, on the extractor's device) of images in [-1, 1]."""
        ...

    def to(self, device: str | torch.device) -> FeatureExtractor:
        """Move the network to ``device``; returns self."""
        ...


ExtractorFactory = Callable[..., FeatureExtractor]
"""Builds an extractor from keyword arguments ``dataset``, ``device`` and ``cache_dir``."""

EXTRACTORS: Registry[ExtractorFactory] = Registry("feature extractor")


def get_extractor(
    name: str,
    *,
    dataset: ImageDataset | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> FeatureExtractor:
    """The feature extractor registered as ``name`` (see ``EXTRACTORS.names()``), on ``device``.

    ``dataset`` is the real data the features are for: the "classifier" extractor uses the
    shipped weights for MNIST and trains (once, cached under ``cache_dir``) on other labelled
    datasets. Raises UnknownNameError for an unknown name and ExtractorError when the extractor
    cannot be built.
    """
    factory = EXTRACTORS.get(name)
    return factory(dataset=dataset, device=device, cache_dir=cache_dir)


class _ModuleExtractor:
    """Shared plumbing: eval mode, no autograd, inputs moved to the network's device."""

    name: str
    dim: int
    digest: str

    def __init__(self, network: nn.Module, device: str | torch.device) -> None:
        self.network = network.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.network.to(self.device)

    def to(self, device: str | torch.device) -> _ModuleExtractor:
        """Move the network to ``device``; returns self."""
        self.device = torch.device(device)
        self.network.to(self.device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features [N, dim] (float32, on the extractor's device) of images in [-1, 1]."""
        if images.dim() != 4:
            raise ExtractorError(
                f"{self.name} extractor takes images [N, C, H, W]; got {tuple(images.shape)}"
            )
        features = self._features(images.to(self.device, torch.float32))
        return features.to(torch.float32)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(dim={self.dim}, digest={self.digest[:12]}, device={self.device})"


class ClassifierExtractor(_ModuleExtractor):
    """Penultimate features (128-d) of a small CNN trained to classify the real data.

    Any image size and 1 or 3 channels: inputs are resized to 28×28 inside and given the
    channels the network was trained on (see :func:`ganhpo.metrics.prepare_input`): the shipped
    MNIST network sees gray, one trained on RGB data sees colour. ``digest`` is the sha256 of
    the weight file.
    """

    name = "classifier"
    dim = FEATURE_DIM

    def __init__(
        self, model: ClassifierNet, digest: str, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(model, device)
        self.model = model
        self.digest = digest

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> ClassifierExtractor:
        """The extractor for the classifier weights saved at ``path``."""
        model, digest = load_classifier(path)
        return cls(model, digest, device)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(prepare_input(images, self.model.in_channels))


class InceptionExtractor(_ModuleExtractor):
    """pytorch-fid's Inception-v3 pool features (2048-d): the standard FID feature space.

    Needs the optional extra ``ganhpo[inception]``. Gray images are repeated to RGB; inputs
    are resized to 299×299 by pytorch-fid.
    """

    name = "inception"
    dim = 2048

    def __init__(self, network: nn.Module, digest: str, device: str | torch.device = "cpu") -> None:
        super().__init__(network, device)
        self.digest = digest

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] != 3:
            raise ExtractorError(
                f"the inception extractor takes 1 or 3 channels; got {images.shape[1]}"
            )
        # pytorch-fid takes [0, 1] and (normalize_input=True) maps it back to [-1, 1] itself.
        unit = ((images + 1.0) * 0.5).clamp(0.0, 1.0)
        (pool,) = self.network(unit)
        return pool.flatten(start_dim=1)


def iter_features(
    extractor: FeatureExtractor, images: torch.Tensor, *, batch_size: int = 500
) -> Iterator[torch.Tensor]:
    """Features of ``images`` batch by batch, on the extractor's device.

    ``images`` are uint8 (0..255, as stored in an ImageDataset) or float in [-1, 1], [N, C, H, W].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        if batch.dtype == torch.uint8:
            batch = to_unit_range(batch)
        yield extractor(batch)


def extract_features(
    extractor: FeatureExtractor, images: torch.Tensor, *, batch_size: int = 500
) -> torch.Tensor:
    """Features [N, dim] of ``images`` (uint8 or float in [-1, 1]) as a float32 CPU tensor."""
    batches = iter_features(extractor, images, batch_size=batch_size)
    chunks = [features.to("cpu", torch.float32) for features in batches]
    if not chunks:
        return torch.empty((0, extractor.dim), dtype=torch.float32)
    return torch.cat(chunks)


# --- factories -------------------------------------------------------------------------------


# Datasets whose images are MNIST digits: they share the shipped classifier's feature space.
MNIST_NAMES = frozenset({"mnist", "mnist-subset"})
# Registered datasets whose loaders always return labels; "image-folder" never does (neither
# file nor folder names are read as classes); an "npz" file has them when it stores an array
# named in LABEL_KEYS.
_LABELLED_DATASETS = MNIST_NAMES | {"fashion-mnist"}
_INSTALL_INCEPTION = "pip install 'ganhpo[inception]'"


class _InceptionUnavailable(Exception):
    """pytorch-fid's Inception cannot be imported here.

    ``problem`` says why, ``fix`` what to do (a clause), ``hint`` the same as a parenthesis
    after "use extractor 'inception'".
    """

    def __init__(self, problem: str, fix: str, hint: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix
        self.hint = hint


def _one_line(error: BaseException) -> str:
    """The first line of an exception's message (the traceback stays in the chained cause)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _raised_in(error: BaseException, package: str) -> bool:
    """Whether ``error`` was raised from inside the files of ``package``."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(package in Path(frame.filename).parts for frame in frames)


def _import_pytorch_fid() -> Any:
    """pytorch-fid's ``inception`` module, imported on first use (it pulls in torchvision,
    heavy and optional). Raises _InceptionUnavailable saying what to install."""
    try:
        return importlib.import_module("pytorch_fid.inception")
    except Exception as e:  # any failure of an import is the environment's, fixed by installing
        missing = e.name if isinstance(e, ModuleNotFoundError) else None
        if missing is not None and missing.split(".")[0] in ("pytorch_fid", "torchvision"):
            package = "pytorch-fid" if missing.startswith("pytorch_fid") else "torchvision"
            raise _InceptionUnavailable(
                f"{package} is not installed", f"run: {_INSTALL_INCEPTION}", _INSTALL_INCEPTION
            ) from e
        if _raised_in(e, "torchvision") or "torchvision" in str(e):
            # Typically the CUDA torchvision next to a CPU torch (or another torch release):
            # "operator torchvision::nms does not exist" or an undefined symbol.
            raise _InceptionUnavailable(
                f"torchvision does not match torch {torch.__version__} ({_one_line(e)})",
                "install the torchvision built for this torch",
                f"after installing the torchvision built for torch {torch.__version__}",
            ) from e
        raise _InceptionUnavailable(
            f"importing pytorch-fid failed ({type(e).__name__}: {_one_line(e)})",
            "reinstall it: pip install --force-reinstall pytorch-fid",
            "after: pip install --force-reinstall pytorch-fid",
        ) from e


def _inception_advice() -> str:
    """The advice to use extractor 'inception', with what to install first on this machine."""
    try:
        _import_pytorch_fid()
    except _InceptionUnavailable as e:
        return f"use extractor 'inception' ({e.hint})"
    return "use extractor 'inception'"


def _no_labels_advice(dataset: str) -> str:
    """What to do when the classifier extractor finds no labels in ``dataset``."""
    advice = _inception_advice()
    if dataset == "npz":
        advice += ", or store one integer class label per image in the .npz as array 'labels'"
    return advice


def _inception_refusal(error: _InceptionUnavailable, *, classifier_works: bool) -> str:
    """The one line saying why the inception extractor cannot be built and what works instead."""
    other = ", or use extractor 'classifier'" if classifier_works else ""
    return (
        f"the 'inception' feature extractor cannot be used here: {error.problem}; "
        f"{error.fix}{other}"
    )


def _npz_has_labels(path: Path) -> bool | None:
    """Whether the .npz at ``path`` stores labels next to its images, from the archive's list of
    arrays (nothing is loaded); None when the file is not here or not an .npz/.npy file."""
    try:
        if not path.is_file():
            return None
        if not zipfile.is_zipfile(path):  # a .npy file holds one array: the images
            with path.open("rb") as file:
                return False if file.read(6) == b"\x93NUMPY" else None
        with zipfile.ZipFile(path) as archive:
            keys = [name.removesuffix(".npy") for name in archive.namelist()]
    except (OSError, zipfile.BadZipFile):
        return None
    images = next((k for k in IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    return any(k in keys and k != images for k in LABEL_KEYS)


def _has_labels(dataset: str, path: str | Path | None) -> bool | None:
    """Whether ``load_dataset(dataset, path=path)`` returns labels, told without loading it;
    None when that cannot be told here."""
    if dataset in _LABELLED_DATASETS:
        return True
    if dataset == "image-folder":
        return False
    if dataset == "npz" and path is not None:
        return _npz_has_labels(Path(path).expanduser())
    return None


def check_extractor(name: str, *, dataset: str, path: str | Path | None = None) -> None:
    """Refuse, before any training, a feature extractor that can never work for ``dataset``.

    Checks what is knowable without loading the data: ``name`` is registered; "inception"
    imports (pytorch-fid, and a torchvision that matches torch); "classifier" on a dataset other
    than MNIST has labels to train on ("image-folder" has none; an "npz" file at ``path`` has
    them when it stores a labels array). A file not on this machine passes: the workers may
    have it. The labels of an .npz are read (that array only) and must hold at least two
    classes of 10 images or more. Raises UnknownNameError, or ExtractorError naming what works
    for this dataset; DataError when, besides, the dataset's folder or file is not here (the
    likelier mistake: a mistyped path).
    """
    EXTRACTORS.get(name)
    try:
        _check_extractor(name, dataset, path)
    except ExtractorError as e:
        missing = _missing_here(dataset, path)
        if missing is None:
            raise
        raise DataError(f"{missing}: fix [dataset] path; also, {e}") from e


def _missing_here(dataset: str, path: str | Path | None) -> str | None:
    """What is missing, when ``dataset`` reads a folder or file at ``path`` that is not here."""
    if path is None:
        return None
    where = Path(path).expanduser()
    if dataset == "image-folder" and not where.is_dir():
        return f"image folder {path} does not exist"
    if dataset == "npz" and not where.is_file():
        return f"{path} does not exist"
    return None


def _check_extractor(name: str, dataset: str, path: str | Path | None) -> None:
    labelled = _has_labels(dataset, path)
    if name == "inception":
        try:
            _import_pytorch_fid()
        except _InceptionUnavailable as e:
            refusal = _inception_refusal(e, classifier_works=labelled is True)
            raise ExtractorError(refusal) from e.__cause__
    elif name == "classifier" and labelled is False:
        raise ExtractorError(
            f"the classifier extractor needs labels to train on, and dataset {dataset!r}"
            f"{'' if path is None else f' ({path})'} has none; {_no_labels_advice(dataset)}"
        )
    elif name == "classifier" and labelled and dataset == "npz" and path is not None:
        labels = _npz_labels(Path(path).expanduser())
        if labels is not None and labels.ndim == 1 and labels.dtype.kind in "iub":
            classes, counts = np.unique(labels, return_counts=True)
            _check_classes(dataset, classes.tolist(), counts.tolist())


@EXTRACTORS.register("classifier")
def _classifier_extractor(
    *,
    dataset: ImageDataset | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> ClassifierExtractor:
    if dataset is None or dataset.name in MNIST_NAMES:
        # One feature space for every MNIST variant (full, shipped subset, resized, RGB):
        # the resize and gray conversion happen inside the extractor.
        return ClassifierExtractor.from_file(SHIPPED_WEIGHTS_DIR / "mnist_classifier.pt", device)
    return ClassifierExtractor.from_file(_trained_classifier(dataset, device, cache_dir), device)


def _trained_classifier(
    dataset: ImageDataset, device: str | torch.device, cache_dir: str | Path | None
) -> Path:
    """The path of a classifier trained on ``dataset``, training and caching it if needed."""
    if dataset.labels is None:
        raise ExtractorError(
            f"the classifier extractor needs labels to train on, and dataset {dataset.name!r} "
            f"has none; {_no_labels_advice(dataset.name)}"
        )
    root = resolve_cache_dir(cache_dir) / "classifiers"
    name = f"{safe_name(dataset.name)}-{dataset.digest[:20]}-{_CLASSIFIER_FORMAT}"
    path = root / f"{name}.pt"
    if path.exists():
        return path
    train, holdout = split_holdout(dataset, seed=_CLASSIFIER_SEED)
    steps_per_epoch = -(-len(train) // _TRAIN_BATCH_SIZE)
    epochs = max(_TRAIN_EPOCHS, -(-_MIN_TRAIN_STEPS // steps_per_epoch))
    logger.info(
        "training a classifier on %d %s images (%d epochs) for FID features (once; cached in %s)",
        len(train),
        dataset.name,
        epochs,
        path,
    )
    model, accuracy = train_classifier(
        train,
        holdout,
        epochs=epochs,
        seed=_CLASSIFIER_SEED,
        device=device,
        batch_size=_TRAIN_BATCH_SIZE,
    )
    if not accuracy >= _MIN_HOLDOUT_ACCURACY:
        # Not cached: weights this poor must not become a study's feature space later.
        raise ExtractorError(
            f"a classifier trained on dataset {dataset.name!r} labels only {accuracy:.1%} of "
            f"{len(holdout)} held-out images correctly (needs {_MIN_HOLDOUT_ACCURACY:.0%}), so "
            f"its features cannot measure FID; {_inception_advice()}, which suits RGB photos"
        )
    logger.info("classifier hold-out accuracy on %s: %.4f", dataset.name, accuracy)
    # First writer wins: workers that trained concurrently all end up with the same weights.
    with atomic_write(path, replace=False) as f:
        f.write(serialize_classifier(model))
    info = {
        "dataset": dataset.name,
        "dataset_digest": dataset.digest,
        "seed": _CLASSIFIER_SEED,
        "epochs": epochs,
        "train_images": len(train),
        "holdout_images": len(holdout),
        "holdout_accuracy": accuracy,
        "min_holdout_accuracy": _MIN_HOLDOUT_ACCURACY,
    }
    with atomic_write(path.with_suffix(".json")) as f:
        f.write(json.dumps(info, indent=2).encode())
    return path


def _check_classes(dataset: str, classes: list[int], counts: list[int]) -> None:
    """Refuse labels a classifier cannot learn features from: one class, or a class with
    fewer than 10 images (an id per image is the extreme case)."""
    if len(classes) < 2:
        raise ExtractorError(
            f"dataset {dataset!r} has one class ({sum(counts)} images labelled "
            f"{classes[0] if classes else '-'}); a classifier needs at least two to "
            f"learn features that tell images apart; {_inception_advice()}"
        )
    smallest = min(range(len(counts)), key=counts.__getitem__)
    if counts[smallest] < _MIN_IMAGES_PER_CLASS:
        raise ExtractorError(
            f"class {classes[smallest]} of dataset {dataset!r} has only "
            f"{counts[smallest]} image(s); training a classifier needs at least "
            f"{_MIN_IMAGES_PER_CLASS} per class; {_inception_advice()}"
        )


def _npz_labels(path: Path) -> np.ndarray | None:
    """The labels array of the .npz at ``path`` (only that array is read), or None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            images = next((k for k in IMAGE_KEYS if k in keys), None)
            key = next((k for k in LABEL_KEYS if k in keys and k != images), None)
            return None if key is None else np.asarray(data[key])
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # load_dataset says what is wrong with the file


def split_holdout(dataset: ImageDataset, *, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """A labelled dataset as (train, hold-out): a random split stratified by class, from ``seed``.

    Each class gives 10 % of its images to the hold-out (at least one; fewer overall when that
    would exceed 5000 images), so every class is both trained on and measured, however the
    dataset is ordered. Raises ExtractorError, before any training, when there are no labels,
    fewer than two classes or a class with fewer than 10 images.
    """
    labels = dataset.labels
    if labels is None:
        raise ExtractorError(
            f"dataset {dataset.name!r} has no labels to train a classifier on; "
            f"{_no_labels_advice(dataset.name)}"
        )
    classes, counts = torch.unique(labels, return_counts=True)
    _check_classes(dataset.name, classes.tolist(), counts.tolist())
    fraction = min(_HOLDOUT_FRACTION, _HOLDOUT_MAX / len(dataset))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    held: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        k = max(1, int(count * fraction))
        held.append(members[:k])
        kept.append(members[k:])
    parts = []
    for split, index in (("train", torch.cat(kept)), ("holdout", torch.cat(held))):
        # Kept in dataset order: training shuffles anyway, and the split reads back the same.
        index = index.sort().values
        parts.append(
            ImageDataset(
                dataset.name,
                split,
                dataset.images[index].contiguous(),
                labels[index].contiguous(),
                dataset.digest,
            )
        )
    return parts[0], parts[1]


@EXTRACTORS.register("inception")
def _inception_extractor(
    *,
    dataset: ImageDataset | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> InceptionExtractor:
    del cache_dir  # the same network for every dataset; pytorch-fid caches its weights
    try:
        fid_inception = _import_pytorch_fid()
    except _InceptionUnavailable as e:
        classifier_works = (
            dataset is None or dataset.name in MNIST_NAMES or dataset.labels is not None
        )
        refusal = _inception_refusal(e, classifier_works=classifier_works)
        raise ExtractorError(refusal) from e.__cause__  # the import's own error and traceback
    weights = os.environ.get(INCEPTION_WEIGHTS_ENV)
    if weights:
        network = _inception_from_file(fid_inception, Path(weights).expanduser())
    else:
        try:
            network = fid_inception.InceptionV3([_POOL3_BLOCK])
        except Exception as e:  # the download has many ways to fail; all mean the same to a user
            raise ExtractorError(
                f"cannot get pytorch-fid's Inception weights ({_one_line(e)}); without internet, "
                f"download {fid_inception.FID_WEIGHTS_URL} elsewhere and set "
                f"{INCEPTION_WEIGHTS_ENV} to its path"
            ) from e
    digest = hashlib.sha256(f"pytorch-fid:{_INCEPTION_FILE}:pool3-2048".encode()).hexdigest()
    return InceptionExtractor(network, digest, device)


def _inception_from_file(fid_inception: Any, path: Path) -> nn.Module:
    """pytorch-fid's InceptionV3 with weights read from a local file instead of downloaded."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ExtractorError(
            f"cannot read the Inception weights {path} named by ${INCEPTION_WEIGHTS_ENV} ({e})"
        ) from e
    if not hashlib.sha256(data).hexdigest().startswith(_INCEPTION_SHA256_PREFIX):
        raise ExtractorError(
            f"{path} (from ${INCEPTION_WEIGHTS_ENV}) is not {_INCEPTION_FILE}: its sha256 does "
            f"not start with {_INCEPTION_SHA256_PREFIX}; download {fid_inception.FID_WEIGHTS_URL}"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # the hash matched, so the file is right and torch cannot read it
        raise ExtractorError(
            f"torch {torch.__version__} cannot read the Inception weights {path} "
            f"({_one_line(e)}); upgrade torch or download {fid_inception.FID_WEIGHTS_URL} again"
        ) from e
    # pytorch-fid fetches its weights through the module-level load_state_dict_from_url and
    # offers no other way in; hand it the local state_dict for the duration of the build.
    original = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        return fid_inception.InceptionV3([_POOL3_BLOCK])
    except Exception as e:  # e.g. a pytorch-fid whose network no longer fits these weights
        raise ExtractorError(
            f"pytorch-fid cannot build its Inception from {path} ({_one_line(e)}); "
            "reinstall it: pip install --force-reinstall pytorch-fid"
        ) from e
    finally:
        fid_inception.load_state_dict_from_url = original
