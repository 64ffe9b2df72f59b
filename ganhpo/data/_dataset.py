"""The in-memory image dataset every part of ganhpo trains and measures on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

__all__ = ["ImageDataset", "from_unit_range", "image_digest", "image_hashes", "to_unit_range"]


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in 0..255 as float32 in [-1, 1] (``x / 127.5 - 1``), on the same device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_unit_range expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def from_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] back to uint8 in 0..255 (rounded, out-of-range values clipped)."""
    return images.detach().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def image_digest(images: torch.Tensor) -> str:
    """Hex SHA-256 of the shape and bytes of a uint8 [N, C, H, W] tensor: a content cache key."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"expected uint8 [N, C, H, W] images, got {images.dtype} {tuple(images.shape)}"
        )
    digest = hashlib.sha256()
    # The shape goes in too: the same bytes read as 1x56x14 instead of 1x28x28 are other images.
    digest.update("x".join(str(d) for d in images.shape).encode("ascii") + b"\n")
    digest.update(images.detach().cpu().contiguous().numpy().data)
    return digest.hexdigest()


def image_hashes(images: torch.Tensor) -> list[bytes]:
    """A 16-byte hash of each image of ``images`` [N, ...] (its bytes, in any dtype): equal
    for identical images, in any order or set."""
    flat = images.detach().cpu().contiguous().reshape(len(images), -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images held in memory as uint8 [N, C, H, W] on the CPU, with optional int64 labels.

    Build one with :func:`ganhpo.data.load_dataset` or :meth:`from_images`; ``digest`` identifies
    the image content (not the name or the labels) and keys caches such as FID statistics.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor | None
    digest: str

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                "ImageDataset.images must be a uint8 tensor of shape [N, C, H, W], got "
                f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}"
            )
        if images.device.type != "cpu" or not images.is_contiguous():
            raise ValueError("ImageDataset.images must be a contiguous CPU tensor")
        labels = self.labels
        if labels is not None and (
            labels.dtype != torch.int64 or labels.shape != (images.shape[0],)
        ):
            raise ValueError(
                f"ImageDataset.labels must be int64 of shape [{images.shape[0]}], got "
                f"{labels.dtype} {tuple(labels.shape)}"
            )

    @classmethod
    def from_images(
        cls,
        name: str,
        images: torch.Tensor,
        *,
        split: str = "train",
        labels: torch.Tensor | None = None,
    ) -> ImageDataset:
        """A dataset of the given uint8 [N, C, H, W] images, with its digest computed."""
        images = images.detach().cpu().contiguous()
        if labels is not None:
            labels = labels.detach().cpu().to(torch.int64)
        return cls(name, split, images, labels, image_digest(images))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, (C, H, W)."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def __len__(self) -> int:
        return self.images.shape[0]

    @staticmethod
    def to_float(images: torch.Tensor) -> torch.Tensor:
        """Same as :func:`to_unit_range`: uint8 images as float32 in [-1, 1]."""
        return to_unit_range(images)
