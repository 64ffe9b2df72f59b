"""A directory tree of PNG/JPEG images, centre-cropped to squares and resized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ganhpo.data._source import LoadRequest, RawImages
from ganhpo.errors import DataError

__all__ = [
    "DEFAULT_CHANNELS",
    "DEFAULT_RESOLUTION",
    "IMAGE_SUFFIXES",
    "count_image_folder",
    "load_image_folder",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # matched case-insensitively
DEFAULT_RESOLUTION = 64  # the size photos are brought to when no resolution is asked for
DEFAULT_CHANNELS = 3


def _image_files(root: Path) -> list[Path]:
    """The image files under ``root``, recursively, sorted by relative path (deterministic)."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read(path: Path, resolution: int, mode: str) -> np.ndarray:
    """One image as a uint8 [H, W] (mode "L") or [H, W, 3] (mode "RGB") array."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}; fix or remove the file") from e
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.array(image, dtype=np.uint8)


def count_image_folder(request: LoadRequest) -> int | None:
    """How many images :func:`load_image_folder` would read (files are listed, not opened);
    None when the folder is missing or empty here (it may be elsewhere on the workers)."""
    request.only_train_split()
    root = request.require_path("a directory of PNG or JPEG images (searched recursively)")
    if not root.is_dir():
        return None
    return len(_image_files(root)) or None


def load_image_folder(request: LoadRequest) -> RawImages:
    """Every PNG/JPEG under ``request.path``, as square images (default 64x64 RGB)."""
    request.only_train_split()
    root = request.require_path("a directory of PNG or JPEG images (searched recursively)")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    files = _image_files(root)
    if not files:
        raise DataError(
            f"no images found under {root}: expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)} (searched recursively)"
        )
    if request.limit is not None:
        files = files[: request.limit]
    resolution = request.resolution or DEFAULT_RESOLUTION
    channels = request.channels or DEFAULT_CHANNELS
    mode = "L" if channels == 1 else "RGB"
    images = torch.empty((len(files), channels, resolution, resolution), dtype=torch.uint8)
    for i, path in enumerate(files):
        array = torch.from_numpy(_read(path, resolution, mode))
        images[i] = array.unsqueeze(0) if channels == 1 else array.permute(2, 0, 1)
    return RawImages(images=images, labels=None)
