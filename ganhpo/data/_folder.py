"""A directory tree of PNG/JPEG images, centre-cropped to squares, at their native size and
channels unless a resolution or channel count is asked for."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ganhpo.data._source import LoadRequest, RawImages
from ganhpo.data._transforms import MIN_RESOLUTION
from ganhpo.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "count_image_folder", "load_image_folder", "native_shape"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # matched case-insensitively
# Pillow modes without colour: a folder of only these is read as 1 channel.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def _image_files(root: Path) -> list[Path]:
    """The image files under ``root``, recursively, sorted by relative path (deterministic)."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """A 16-bit gray image (Pillow's "I;16" modes; "I" where older Pillows read 16-bit PNGs)
    scaled to 8 bits, 65535 to 255; any other image as it is.

    Pillow's own conversion to "L" clips every value above 255 to 255, which turns a 16-bit
    image into black and white. (Pillow reads 16-bit RGB and gray-with-alpha PNGs as 8-bit
    RGB and RGBA itself, scaled.)
    """
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    values = np.asarray(image).astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise DataError(
            f"image {path} has {image.mode!r} pixels from {low} to {high}; expected 8-bit or "
            "16-bit images (0 to 65535): save it as an 8-bit or 16-bit PNG"
        )
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))  # mode "L"


def _read(path: Path, resolution: int, mode: str) -> np.ndarray:
    """One image as a uint8 [H, W] (mode "L") or [H, W, 3] (mode "RGB") array."""
    try:
        with Image.open(path) as opened:
            image = _eight_bit(ImageOps.exif_transpose(opened), path).convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}; fix or remove the file") from e
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.array(image, dtype=np.uint8)


def native_shape(files: list[Path]) -> tuple[int, int]:
    """(channels, side) the images are read at when the spec names neither: 1 channel when
    every image is gray, else 3; the side of the smallest centre-cropped square, rounded down
    to a size the networks take (a multiple of 4, at least 8). Only the headers are read."""
    sides, gray = [], True
    for path in files:
        try:
            with Image.open(path) as opened:
                sides.append(min(opened.size))
                gray = gray and opened.mode in _GRAY_MODES
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {path}: {e}; fix or remove the file") from e
    smallest = min(sides)
    side = max(MIN_RESOLUTION, smallest - smallest % 4)
    if side != smallest or len(set(sides)) > 1:
        logger.info(
            "images are %s pixels square; reading all at %dx%d (set dataset.resolution to "
            "choose another size)",
            f"{smallest}" if len(set(sides)) == 1 else f"{smallest} to {max(sides)}",
            side,
            side,
        )
    return (1 if gray else 3), side


def count_image_folder(request: LoadRequest) -> int | None:
    """How many images :func:`load_image_folder` would read (files are listed, not opened);
    None when the folder is missing or empty here (it may be elsewhere on the workers)."""
    request.only_train_split()
    root = request.require_path("a directory of PNG or JPEG images (searched recursively)")
    if not root.is_dir():
        return None
    return len(_image_files(root)) or None


def load_image_folder(request: LoadRequest) -> RawImages:
    """Every PNG/JPEG under ``request.path``, as square images: at ``request.resolution`` and
    ``request.channels`` when given, else as :func:`native_shape` says (8×8 gray PNGs stay 8×8
    gray; a folder of photos is RGB at the smallest photo's size)."""
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
    resolution, channels = request.resolution, request.channels
    if resolution is None or channels is None:
        native_channels, native_side = native_shape(files)
        resolution = resolution or native_side
        channels = channels or native_channels
    mode = "L" if channels == 1 else "RGB"
    images = torch.empty((len(files), channels, resolution, resolution), dtype=torch.uint8)
    for i, path in enumerate(files):
        array = torch.from_numpy(_read(path, resolution, mode))
        images[i] = array.unsqueeze(0) if channels == 1 else array.permute(2, 0, 1)
    return RawImages(images=images, labels=None)
