"""Datasets by name: the registry and :func:`load_dataset`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ganhpo.data._dataset import ImageDataset, image_digest
from ganhpo.data._folder import load_image_folder
from ganhpo.data._idx_datasets import FASHION_MNIST, MNIST, load_idx_collection
from ganhpo.data._npz import load_npz
from ganhpo.data._paths import shipped_mnist_subset_dir
from ganhpo.data._source import Loader, LoadRequest, RawImages
from ganhpo.data._transforms import check_channels, check_resolution, conform
from ganhpo.errors import ConfigError
from ganhpo.registry import Registry

__all__ = ["DATASETS", "SPLITS", "dataset_names", "load_dataset"]

SPLITS = ("train", "test")

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


def dataset_names() -> list[str]:
    """The names :func:`load_dataset` accepts, sorted."""
    return DATASETS.names()


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
) -> ImageDataset:
    """Load the dataset registered as ``name`` into memory.

    Args:
        name: one of :func:`dataset_names`.
        split: "train" or "test" ("image-folder" and "npz" have only "train").
        data_dir: where "mnist" and "fashion-mnist" look for (and download) their IDX files,
            directly or in torchvision's ``MNIST/raw`` / ``FashionMNIST/raw``; see
            :func:`ganhpo.data.resolve_data_dir` for the default.
        resolution: square side to resize to (a multiple of 4, at least 8); None keeps the
            native size ("image-folder": 64). Non-square images are centre-cropped first.
        channels: 1 (grayscale) or 3 (RGB); None keeps the native count ("image-folder": 3).
        path: the directory ("image-folder") or ``.npz`` file ("npz") to read.
        download: whether missing MNIST/Fashion-MNIST files may be downloaded.
        limit: keep only the first ``limit`` images.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: an argument is out of range.
        DataError: the files are missing, unreadable, corrupt or of the wrong shape.
    """
    loader = DATASETS.get(name)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if resolution is not None:
        check_resolution(resolution)
    if channels is not None:
        check_channels(channels)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of images; got {limit!r}")
    request = LoadRequest(
        name=name,
        split=split,
        data_dir=data_dir,
        path=Path(path).expanduser() if path is not None else None,
        resolution=resolution,
        channels=channels,
        download=download,
        limit=limit,
    )
    raw = loader(request)
    images = raw.images[:limit] if limit is not None else raw.images
    labels = raw.labels[:limit] if raw.labels is not None and limit is not None else raw.labels
    images = conform(images, resolution, channels)
    return ImageDataset(
        name=name, split=split, images=images, labels=labels, digest=image_digest(images)
    )
