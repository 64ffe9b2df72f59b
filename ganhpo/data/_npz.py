"""Images stored as a uint8 array in a NumPy ``.npz`` (or ``.npy``) file."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

import numpy as np
import torch

from ganhpo.data._source import LoadRequest, RawImages
from ganhpo.errors import DataError

__all__ = ["IMAGE_KEYS", "LABEL_KEYS", "count_npz", "load_npz"]

IMAGE_KEYS = ("images", "x")  # looked for in this order; else the file's only array
LABEL_KEYS = ("labels", "y")
_CHANNELS = (1, 3)
_EXPECTED = "uint8 images of shape [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3"


def _pick_images_key(keys: list[str], path: Path) -> str:
    for key in IMAGE_KEYS:
        if key in keys:
            return key
    if len(keys) == 1:
        return keys[0]
    raise DataError(
        f"{path} holds the arrays {', '.join(keys) or '(none)'}; expected one named "
        f"{' or '.join(IMAGE_KEYS)}, or a single array"
    )


def _to_nchw(array: np.ndarray, where: str) -> np.ndarray:
    """The image array as [N, C, H, W], guessing the layout from which axis has 1 or 3 entries."""
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        first, last = array.shape[1] in _CHANNELS, array.shape[3] in _CHANNELS
        if last and not first:
            return array.transpose(0, 3, 1, 2)
        if first and not last:
            return array
    raise DataError(f"{where} has shape {array.shape}; expected {_EXPECTED}")


def _npy_shape(file: IO[bytes]) -> tuple[int, ...]:
    """The shape in the header of an open ``.npy`` stream (the data is not read)."""
    version = np.lib.format.read_magic(file)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, _, _ = read_header(file)
    return tuple(shape)


def count_npz(request: LoadRequest) -> int | None:
    """How many images :func:`load_npz` would read, from the array's header alone; None when
    the file is missing here (it may be elsewhere on the workers) or unreadable (the loader
    says why)."""
    request.only_train_split()
    path = request.require_path("a .npz file holding a uint8 image array")
    try:
        if not zipfile.is_zipfile(path):  # a .npy file: its one array holds the images
            with path.open("rb") as file:
                shape = _npy_shape(file)
        else:
            with zipfile.ZipFile(path) as archive:
                members = {name.removesuffix(".npy"): name for name in archive.namelist()}
                key = _pick_images_key(list(members), path)
                with archive.open(members[key]) as file:
                    shape = _npy_shape(file)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, DataError):
        return None
    return shape[0] if len(shape) in (3, 4) and shape[0] > 0 else None


def load_npz(request: LoadRequest) -> RawImages:
    """The images (and labels, if stored) of the ``.npz`` file at ``request.path``."""
    request.only_train_split()
    path = request.require_path("a .npz file holding a uint8 image array")
    try:
        # Our own file handle: np.load leaks its handle when the file is not a valid zip.
        with path.open("rb") as file:
            loaded = np.load(file, allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # a .npy file: its one array holds the images
                array, labels, label_key = loaded, None, None
                where = str(path)
            else:
                with loaded as npz:
                    keys = list(npz.files)
                    key = _pick_images_key(keys, path)
                    array = npz[key]
                    label_key = next((k for k in LABEL_KEYS if k in keys and k != key), None)
                    labels = npz[label_key] if label_key is not None else None
                where = f"array {key!r} of {path}"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as a .npz file: {e}") from e
    if array.dtype != np.uint8:
        raise DataError(
            f"{where} has dtype {array.dtype}; expected {_EXPECTED} "
            "(convert 0..1 floats with (x * 255).round().astype(np.uint8))"
        )
    array = _to_nchw(array, where)
    if array.shape[0] == 0:
        raise DataError(f"{where} holds no images")
    if labels is not None and (
        labels.ndim != 1
        or labels.shape[0] != array.shape[0]
        or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise DataError(
            f"array {label_key!r} of {path} has dtype {labels.dtype} and shape {labels.shape}; "
            f"expected {array.shape[0]} integer labels, one per image"
        )
    if request.limit is not None:
        array = array[: request.limit]
        labels = labels[: request.limit] if labels is not None else None
    return RawImages(
        images=torch.from_numpy(np.ascontiguousarray(array)),
        labels=torch.from_numpy(labels.astype(np.int64)) if labels is not None else None,
    )
