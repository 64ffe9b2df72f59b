"""Random minibatches on the training device, without a DataLoader."""

from __future__ import annotations

import torch

from ganhpo.data._dataset import ImageDataset, to_unit_range
from ganhpo.errors import ConfigError

__all__ = ["Batcher"]


class Batcher:
    """Draws random minibatches of a dataset as float32 [B, C, H, W] in [-1, 1] on ``device``.

    The uint8 images are moved to ``device`` once, here; each batch is converted on the device.
    Indices are drawn with replacement by ``torch.randint`` from ``generator``, a CPU generator:
    the stream of batches is then the same on every device, and the generator's state alone
    (``generator.get_state()``) is enough to checkpoint and resume it; no epoch position to save.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        device: torch.device | str,
        generator: torch.Generator,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size must be a positive integer; got {batch_size!r}")
        if len(dataset) == 0:
            raise ConfigError(f"dataset {dataset.name!r} has no images to draw batches from")
        if generator.device.type != "cpu":
            raise ValueError(
                f"Batcher needs a CPU torch.Generator (got one on {generator.device}), so that "
                "the batches do not depend on the device"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generator = generator
        self._images = dataset.images.to(self.device)

    def next(self) -> torch.Tensor:
        """The next random batch, float32 [batch_size, C, H, W] in [-1, 1] on the device."""
        index = torch.randint(
            len(self.dataset), (self.batch_size,), generator=self.generator, dtype=torch.int64
        )
        return to_unit_range(self._images[index.to(self.device)])
