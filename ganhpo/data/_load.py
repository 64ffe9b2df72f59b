"""Datasets by name: the registry and :func:`load_dataset`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ganhpo.data._dataset import ImageDataset, image_digest
from ganhpo.data._folder import count_image_folder, load_image_folder
from ganhpo.data._idx import read_idx_shape
from ganhpo.data._idx_datasets import (
    FASHION_MNIST,
    MNIST,
    count_idx_collection,
    load_idx_collection,
)
from ganhpo.data._npz import count_npz, load_npz
from ganhpo.data._paths import shipped_mnist_subset_dir
from ganhpo.data._source import Counter, Loader, LoadRequest, RawImages
from ganhpo.data._transforms import check_channels, check_resolution, conform
from ganhpo.errors import ConfigError
from ganhpo.registry import Registry

__all__ = [
    "DATASETS",
    "HOLDOUT_SPLIT",
    "SPLITS",
    "dataset_names",
    "dataset_size",
    "has_test_split",
    "holdout_indices",
    "load_dataset",
]

SPLITS = ("train", "test")
# The part of the train split a ``holdout`` share sets aside: never trained on, never in a
# search's FID; what ``ganhpo study test`` scores on for a dataset without a test split.
HOLDOUT_SPLIT = "holdout"
# The held-out images are a random sample of the train split drawn from this seed: the same
# images on every machine, whatever the study's seed (so two studies of one dataset agree).
_HOLDOUT_SEED = 20261207


def holdout_indices(count: int, share: float) -> torch.Tensor:
    """The sorted indices (int64) of the ``share`` of ``count`` images set aside: round(share *
    count) of them (at least 1 when share > 0), a seeded random sample."""
    if not 0 <= share < 1:
        raise ConfigError(f"holdout must be a share from 0 to below 1; got {share!r}")
    n = 0 if share == 0 else max(1, round(share * count))
    generator = torch.Generator().manual_seed(_HOLDOUT_SEED)
    return torch.randperm(count, generator=generator)[:n].sort().values


DATASETS: Registry[Loader] = Registry("dataset")
DATASETS.add("mnist", partial(load_idx_collection, MNIST))
DATASETS.add("fashion-mnist", partial(load_idx_collection, FASHION_MNIST))
DATASETS.add("image-folder", load_image_folder)


def _load_mnist_subset(request: LoadRequest) -> RawImages:
    # The real MNIST subset shipped in the package: runs offline with no files to fetch.
    from dataclasses import replace

    shipped = replace(request, data_dir=shipped_mnist_subset_dir(), download=False)
    return load_idx_collection(MNIST, shipped)


DATASETS.add("mnist-subset", _load_mnist_subset)
DATASETS.add("npz", load_npz)


def _count_mnist_subset(request: LoadRequest) -> int:
    request.forbid_path()
    images, _ = MNIST.splits[request.split]
    return read_idx_shape(shipped_mnist_subset_dir() / images.filename)[0]


# How many images each registered dataset has, told without loading it (see Counter); a
# dataset registered without one has an unknown size.
_COUNTERS: dict[str, Counter] = {
    "mnist": partial(count_idx_collection, MNIST),
    "fashion-mnist": partial(count_idx_collection, FASHION_MNIST),
    "image-folder": count_image_folder,
    "mnist-subset": _count_mnist_subset,
    "npz": count_npz,
}


def dataset_names() -> list[str]:
    """The names :func:`load_dataset` accepts, sorted."""
    return DATASETS.names()


def _request(
    name: str,
    split: str,
    data_dir: str | Path | None,
    resolution: int | None,
    channels: int | None,
    path: str | Path | None,
    download: bool,
    limit: int | None,
) -> LoadRequest:
    """The checked arguments of :func:`load_dataset` (ConfigError naming a bad one)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if resolution is not None:
        check_resolution(resolution)
    if channels is not None:
        check_channels(channels)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of images; got {limit!r}")
    return LoadRequest(
        name=name,
        split=split,
        data_dir=data_dir,
        path=Path(path).expanduser() if path is not None else None,
        resolution=resolution,
        channels=channels,
        download=download,
        limit=limit,
    )


def dataset_size(
    name: str,
    *,
    split: str = "train",
    path: str | Path | None = None,
    limit: int | None = None,
    holdout: float = 0.0,
) -> int | None:
    """How many images :func:`load_dataset` would return, told without loading them.

    "mnist" and "fashion-mnist": their published split sizes (no file is needed);
    "mnist-subset": the shipped files' headers; "image-folder": the image files under
    ``path`` (listed, not opened); "npz": the array's header. None when that cannot be told
    here: ``path`` is missing or unreadable on this machine (it may exist where the workers
    run), or the dataset was registered without a counter. ``limit`` caps the count;
    ``holdout`` and the "holdout" split as for :func:`load_dataset`.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: an argument can never work (a path for MNIST, none for "npz", a "test"
            split of an image folder, a bad ``limit``).
    """
    DATASETS.get(name)
    source = _source_split(split, holdout)
    request = _request(name, source, None, None, None, path, False, None if holdout else limit)
    counter = _COUNTERS.get(name)
    count = counter(request) if counter is not None else None
    if count is not None and holdout > 0:
        kept = len(holdout_indices(count, holdout))
        count = kept if split == HOLDOUT_SPLIT else count - kept
    if count is None or limit is None:
        return count
    return min(count, limit)


def has_test_split(name: str, path: str | Path | None = None) -> bool:
    """Whether the dataset registered as ``name`` has a test split (image folders and .npz
    files do not), told without loading it."""
    try:
        dataset_size(name, split="test", path=path)
    except ConfigError:
        return False
    return True


def _source_split(split: str, holdout: float) -> str:
    """The split a request reads: the train split for its held-out part."""
    if split == HOLDOUT_SPLIT:
        if not holdout > 0:
            raise ConfigError(
                "the holdout split needs a holdout share (dataset.holdout, e.g. 0.1) of the "
                "train split set aside"
            )
        return "train"
    if holdout and split != "train":
        raise ConfigError(f"holdout sets aside part of the train split, not of {split!r}")
    return split


def load_dataset(
    name: str,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    resolution: int | None = None,
    channels: int | None = None,
    path: str | Path | None = None,
    download: bool = True,
    limit: int | None = None,
    holdout: float = 0.0,
) -> ImageDataset:
    """Load the dataset registered as ``name`` into memory.

    Args:
        name: one of :func:`dataset_names`.
        split: "train" or "test" ("image-folder" and "npz" have only "train"), or "holdout":
            the ``holdout`` share of the train split (:func:`holdout_indices`).
        data_dir: where "mnist" and "fashion-mnist" look for (and download) their IDX files,
            directly or in torchvision's ``MNIST/raw`` / ``FashionMNIST/raw``; see
            :func:`ganhpo.data.resolve_data_dir` for the default.
        resolution: square side to resize to (a multiple of 4, at least 8); None keeps the
            native size ("image-folder": 64). Non-square images are centre-cropped first.
        channels: 1 (grayscale) or 3 (RGB); None keeps the native count ("image-folder": 3).
        path: the directory ("image-folder") or ``.npz`` file ("npz") to read.
        download: whether missing MNIST/Fashion-MNIST files may be downloaded.
        limit: keep only the first ``limit`` images (of those the split keeps).
        holdout: a share of the train split set aside: split "train" leaves it out, split
            "holdout" is only it. Labels stay with their images.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: an argument is out of range.
        DataError: the files are missing, unreadable, corrupt or of the wrong shape.
    """
    loader = DATASETS.get(name)
    source = _source_split(split, holdout)
    # With a holdout, the loader reads all of the split: the limit applies to what is kept.
    request = _request(
        name, source, data_dir, resolution, channels, path, download, None if holdout else limit
    )
    raw = loader(request)
    images, labels = raw.images, raw.labels
    if holdout > 0:
        held = holdout_indices(len(images), holdout)
        keep = held
        if split != HOLDOUT_SPLIT:
            mask = torch.ones(len(images), dtype=torch.bool)
            mask[held] = False
            keep = mask.nonzero(as_tuple=True)[0]
        images = images[keep]
        labels = labels[keep] if labels is not None else None
    images = images[:limit] if limit is not None else images
    labels = labels[:limit] if labels is not None and limit is not None else labels
    images = conform(images, resolution, channels)
    return ImageDataset(
        name=name, split=split, images=images, labels=labels, digest=image_digest(images)
    )
