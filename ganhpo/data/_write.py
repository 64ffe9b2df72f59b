"""Writing image sets as the loaders read them: a folder of PNGs, or an ``.npz`` of uint8.

What ``ganhpo sample`` writes and ``ganhpo score`` (the "image-folder" and "npz" loaders)
reads back pixel for pixel. A set appears all at once or not at all: it is written under a
temporary name beside its place and renamed into it, so a failure half-way (a full disk, an
interrupt) leaves nothing that looks like a finished set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganhpo._files import atomic_write
from ganhpo.errors import ConfigError

__all__ = ["check_image_output", "save_images"]

NPZ_SUFFIX = ".npz"
PNG_SUFFIX = ".png"


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == NPZ_SUFFIX:
        return "npz"
    if suffix == PNG_SUFFIX:
        return "grid"
    if suffix:
        raise ConfigError(
            f"{path} is neither a folder nor a .npz file; give a folder (PNG files), a .npz "
            "file, or a .png file with --grid"
        )
    return "folder"


def check_image_output(path: Path, *, grid: bool = False) -> None:
    """Refuse, before anything is made, a place :func:`save_images` cannot write: another kind
    of file than asked for, a folder that is not empty, a parent that is no folder or cannot
    be written. Raises ConfigError naming the problem and the fix."""
    kind = _kind(path)
    if grid and kind != "grid":
        raise ConfigError(f"--grid writes one PNG; give --out a .png file, not {path}")
    if not grid and kind == "grid":
        raise ConfigError(
            f"{path} is a .png file: one image is a sample grid (add --grid); for images one per "
            "file give a folder, or a .npz file"
        )
    if kind == "folder" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        what = "a folder that is not empty" if path.is_dir() else "a file"
        raise ConfigError(f"{path} is {what}; give a new or empty folder for the images")
    if kind != "folder" and path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name ending in {path.suffix}")
    parent = path.parent
    blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(
            f"cannot write {path}: {blocking} is a file, not a folder; give --out a place you "
            "can write"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot write {path} ({e.strerror or type(e).__name__}: {parent}); give --out a "
            "place you can write"
        ) from e


def save_images(images: torch.Tensor, path: str | Path) -> Path:
    """Write uint8 images [N, C, H, W] (C = 1 or 3) to ``path``, atomically: a ``.npz`` file
    holding ``images`` [N, H, W, C], or else a folder of PNG files ``000000.png`` ...
    (8-bit gray or RGB)."""
    path = Path(path)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, 1|3, H, W] images, got {images.dtype} "
                         f"{tuple(images.shape)}")  # fmt: skip
    kind = _kind(path)
    if kind == "grid":
        raise ValueError(f"{path}: a sample grid is written by ganhpo.train.save_grid")
    array = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()  # [N, H, W, C]
    if kind == "npz":
        with atomic_write(path) as f:
            np.savez(f, images=array)
        return path
    _write_folder(array, path)
    return path


def _write_folder(array: np.ndarray, path: Path) -> None:
    """PNG files in a temporary folder beside ``path``, renamed to ``path`` when all are
    written (an empty folder already there is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        digits = max(6, len(str(len(array) - 1)))
        for i, image in enumerate(array):
            pixels = image[:, :, 0] if image.shape[2] == 1 else image
            Image.fromarray(pixels).save(tmp / f"{i:0{digits}d}.png", format="PNG")
        if path.is_dir():
            path.rmdir()  # empty (checked): a non-empty one makes this fail, and nothing moves
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
