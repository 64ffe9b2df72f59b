"""Datasets by name: the registry and :func:`load_dataset`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

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

__all__ = ["DATASETS", "SPLITS", "dataset_names", "dataset_size", "load_dataset"]

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
    name: str, *, split: str = "train", path: str | Path | None = None, limit: int | None = None
) -> int | None:
    """How many images :func:`load_dataset` would return, told without loading them.

    "mnist" and "fashion-mnist": their published split sizes (no file is needed);
    "mnist-subset": the shipped files' headers; "image-folder": the image files under
    ``path`` (listed, not opened); "npz": the array's header. None when that cannot be told
    here: ``path`` is missing or unreadable on this machine (it may exist where the workers
    run), or the dataset was registered without a counter. ``limit`` caps the count.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: an argument can never work (a path for MNIST, none for "npz", a "test"
            split of an image folder, a bad ``limit``).
    """
    DATASETS.get(name)
    request = _request(name, split, None, None, None, path, False, limit)
    counter = _COUNTERS.get(name)
    count = counter(request) if counter is not None else None
    if count is None or limit is None:
        return count
    return min(count, limit)


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
    request = _request(name, split, data_dir, resolution, channels, path, download, limit)
    raw = loader(request)
    images = raw.images[:limit] if limit is not None else raw.images
    labels = raw.labels[:limit] if raw.labels is not None and limit is not None else raw.labels
    images = conform(images, resolution, channels)
    return ImageDataset(
        name=name, split=split, images=images, labels=labels, digest=image_digest(images)
    )
