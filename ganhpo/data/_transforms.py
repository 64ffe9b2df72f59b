"""Shape changes of uint8 image batches: square crop, resize, gray <-> RGB."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganhpo.errors import ConfigError

__all__ = [
    "CHANNELS",
    "MIN_RESOLUTION",
    "center_crop_square",
    "check_channels",
    "check_resolution",
    "conform",
    "convert_channels",
    "resize",
]

CHANNELS = (1, 3)  # grayscale or RGB
MIN_RESOLUTION = 8  # smaller images leave no room for a GAN's downsampling stages
_RESOLUTION_STEP = 4  # the networks halve the resolution at least twice
_CHUNK = 1024  # images converted to float at once, to bound memory on large datasets
# ITU-R 601-2 luma, the weights Pillow uses for "L": folders and tensors then agree.
_LUMA = (0.299, 0.587, 0.114)


def check_resolution(resolution: int) -> None:
    """Raise ConfigError unless ``resolution`` is a multiple of 4 and at least 8."""
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or resolution < MIN_RESOLUTION
        or resolution % _RESOLUTION_STEP
    ):
        raise ConfigError(
            f"resolution must be a multiple of {_RESOLUTION_STEP} and at least {MIN_RESOLUTION} "
            f"(e.g. 28, 32, 64, 128); got {resolution!r}"
        )


def check_channels(channels: int) -> None:
    """Raise ConfigError unless ``channels`` is 1 (grayscale) or 3 (RGB)."""
    if isinstance(channels, bool) or channels not in CHANNELS:
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB); got {channels!r}")


def center_crop_square(images: torch.Tensor) -> torch.Tensor:
    """The largest centred square of each [N, C, H, W] image."""
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images[..., top : top + side, left : left + side]


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Square uint8 [N, C, H, H] images resized to ``resolution`` (bilinear, antialiased down)."""
    h, w = images.shape[-2:]
    assert h == w, "crop to a square before resizing"
    if h == resolution:
        return images
    out = torch.empty((*images.shape[:2], resolution, resolution), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].to(torch.float32)
        chunk = F.interpolate(
            chunk,
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=resolution < h,  # without it, downscaling aliases thin strokes away
        )
        out[start : start + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 [N, C, H, W] images as grayscale (C=1) or RGB (C=3)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        for start in range(0, images.shape[0], _CHUNK):
            chunk = images[start : start + _CHUNK].to(torch.float32)
            gray = (chunk * weights).sum(dim=1, keepdim=True)
            out[start : start + _CHUNK] = gray.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise AssertionError(f"cannot convert {have} channels to {channels}")


def conform(images: torch.Tensor, resolution: int | None, channels: int | None) -> torch.Tensor:
    """Images with the requested resolution and channels (None keeps the native one).

    Non-square images are centre-cropped to a square before resizing. The result is contiguous.
    """
    if channels is not None and channels < images.shape[1]:
        # Fewer channels first: the resize then has less to do (and vice versa below).
        images = convert_channels(images, channels)
    if resolution is not None:
        images = resize(center_crop_square(images), resolution)
    if channels is not None:
        images = convert_channels(images, channels)
    return images.contiguous()
