"""Sample grids: a fixed latent batch rendered as one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganhpo._files import atomic_write

__all__ = ["make_grid", "save_grid"]


def make_grid(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile images in [-1, 1] (``[N, C, H, W]``) into one uint8 ``H x W x C`` array."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape [N, 1|3, H, W], got {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = np.zeros((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = pixels[i].permute(1, 2, 0).numpy()
    return grid


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    """Write a sample grid PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    grid = make_grid(images, nrow=nrow)
    img = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    with atomic_write(path) as f:
        img.save(f, format="PNG")
    return path
