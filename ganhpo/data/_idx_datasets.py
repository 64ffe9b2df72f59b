"""MNIST and Fashion-MNIST: four IDX files each, local or downloaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganhpo.data._download import DownloadFailed, RemoteFile, fetch
from ganhpo.data._idx import read_idx
from ganhpo.data._paths import DATA_DIR_ENV, resolve_data_dir
from ganhpo.data._source import LoadRequest, RawImages
from ganhpo.errors import ConfigError, DataError

__all__ = [
    "FASHION_MNIST",
    "IDX_COLLECTIONS",
    "MNIST",
    "IdxCollection",
    "count_idx_collection",
    "load_idx_collection",
    "locate_idx_dataset",
]


@dataclass(frozen=True)
class IdxCollection:
    """A dataset published as IDX files: per split an images file and a labels file."""

    title: str  # for messages
    torchvision_dir: str  # files are also looked for in <data_dir>/<torchvision_dir>/raw
    mirrors: tuple[str, ...]
    splits: Mapping[str, tuple[RemoteFile, RemoteFile]]  # split -> (images, labels)
    sizes: Mapping[str, int]  # split -> number of images, as published

    def search_dirs(self, root: Path) -> tuple[Path, Path]:
        """Where the files are looked for: the data directory, then torchvision's layout."""
        return (root, root / self.torchvision_dir / "raw")


# sha256 of the decompressed IDX files (identical to the original publication; computed from
# the published files, whose label counts they match).
MNIST = IdxCollection(
    title="MNIST",
    torchvision_dir="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    splits={
        "train": (
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
        ),
        "test": (
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        ),
    },
    sizes={"train": 60000, "test": 10000},
)

# md5 of the published .gz files, the values torchvision's FashionMNIST checks (no copy of
# Fashion-MNIST was at hand to compute a sha256 of the content from).
FASHION_MNIST = IdxCollection(
    title="Fashion-MNIST",
    torchvision_dir="FashionMNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    splits={
        "train": (
            RemoteFile("train-images-idx3-ubyte.gz", gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", gz_md5="25c81989df183df01b3e8a0aad5dffbe"),
        ),
        "test": (
            RemoteFile("t10k-images-idx3-ubyte.gz", gz_md5="bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", gz_md5="bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    },
    sizes={"train": 60000, "test": 10000},
)


def _stem(remote: RemoteFile) -> str:
    return remote.filename.removesuffix(".gz")


def _find(directory: Path, remote: RemoteFile) -> Path | None:
    """The raw or (else) gzip-compressed copy of ``remote`` in ``directory``, if any."""
    for candidate in (directory / _stem(remote), directory / remote.filename):
        if candidate.is_file():
            return candidate
    return None


def _locate(collection: IdxCollection, split: str, root: Path, download: bool) -> tuple[Path, Path]:
    """The images and labels files of ``split``, downloaded when missing and allowed."""
    wanted = collection.splits[split]
    dirs = collection.search_dirs(root)
    for directory in dirs:
        found = [_find(directory, remote) for remote in wanted]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]

    names = " and ".join(_stem(remote) for remote in wanted)
    where = f"{dirs[0]} or {dirs[1]}"
    how = (
        f"put them (raw or .gz) into {dirs[0]}, or point at the directory holding them with "
        f"--data-dir DIR or {DATA_DIR_ENV}=DIR"
    )
    if not download:
        raise DataError(
            f"{collection.title} {split} files not found in {where}: expected {names}; "
            f"downloading is off; {how}"
        )
    target = dirs[1]  # torchvision's layout keeps MNIST and Fashion-MNIST apart
    paths = []
    for remote in wanted:
        present = _find(target, remote)
        if present is not None:
            paths.append(present)
            continue
        try:
            paths.append(fetch(remote, collection.mirrors, target))
        except DownloadFailed as e:
            raise DataError(
                f"{collection.title} {split} files not found in {where}: expected {names}; "
                f"downloading them failed ({e}); {how}"
            ) from e
    return paths[0], paths[1]


# The datasets published as IDX files, by their registered names.
IDX_COLLECTIONS: Mapping[str, IdxCollection] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}


def locate_idx_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = True
) -> Path:
    """The directory holding the files of every split of "mnist" or "fashion-mnist".

    Looked for as :func:`ganhpo.data.load_dataset` does (``data_dir`` resolved by
    :func:`ganhpo.data.resolve_data_dir`, the files directly there or in torchvision's layout),
    downloaded and checksum-verified when missing and ``download``. Raises DataError saying
    where it looked, what it expected and how to provide it.
    """
    if name not in IDX_COLLECTIONS:
        raise ConfigError(f"{name!r} is not an IDX dataset; use {' or '.join(IDX_COLLECTIONS)}")
    collection = IDX_COLLECTIONS[name]
    root = resolve_data_dir(data_dir)
    files = [
        path for split in collection.splits for path in _locate(collection, split, root, download)
    ]
    directories = sorted({str(path.parent) for path in files})
    if len(directories) != 1:
        raise DataError(
            f"the {collection.title} files are spread over {' and '.join(directories)}; "
            "keep all of them in one directory"
        )
    return Path(directories[0])


def count_idx_collection(collection: IdxCollection, request: LoadRequest) -> int:
    """How many images ``request.split`` of ``collection`` has as published (no file is read)."""
    request.forbid_path()
    return collection.sizes[request.split]


def load_idx_collection(collection: IdxCollection, request: LoadRequest) -> RawImages:
    """Load one split of ``collection`` from the data directory (downloading if allowed)."""
    request.forbid_path()
    images_path, labels_path = _locate(
        collection, request.split, resolve_data_dir(request.data_dir), request.download
    )
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(
            f"{images_path} holds an array of shape {images.shape}; expected [N, H, W] images"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path} holds labels of shape {labels.shape} but {images_path} holds "
            f"{images.shape[0]} images; the two files do not belong together"
        )
    if request.limit is not None:
        images, labels = images[: request.limit], labels[: request.limit]
    # np.array copies the read-only view over the file's bytes into memory torch may own.
    return RawImages(
        images=torch.from_numpy(np.array(images)).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )
