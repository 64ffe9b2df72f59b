"""What a dataset loader receives and returns; loaders are registered by name in ``_load``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ganhpo.errors import ConfigError

__all__ = ["Counter", "LoadRequest", "Loader", "RawImages"]


@dataclass(frozen=True)
class LoadRequest:
    """The arguments of :func:`ganhpo.data.load_dataset`, checked, for one loader."""

    name: str
    split: str
    data_dir: str | Path | None  # as given; loaders that use it resolve it
    path: Path | None
    resolution: int | None
    channels: int | None
    download: bool
    limit: int | None

    def require_path(self, what: str) -> Path:
        """``path``, or a ConfigError saying that this dataset needs ``what`` there."""
        if self.path is None:
            raise ConfigError(f"dataset {self.name!r} needs a path: {what}")
        return self.path

    def forbid_path(self) -> None:
        """Raise ConfigError when a path was given to a dataset that does not read one."""
        if self.path is not None:
            raise ConfigError(
                f"dataset {self.name!r} takes no path (got {str(self.path)!r}); it reads its "
                "files from the data directory: --data-dir DIR or GANHPO_DATA_DIR"
            )

    def only_train_split(self) -> None:
        """Raise ConfigError unless the train split was asked for."""
        if self.split != "train":
            raise ConfigError(
                f"dataset {self.name!r} has only a 'train' split; got split={self.split!r}"
            )


@dataclass(frozen=True, eq=False)
class RawImages:
    """A loader's result: uint8 [N, C, H, W] CPU images and optional int64 [N] labels."""

    images: torch.Tensor
    labels: torch.Tensor | None


# A loader turns a request into images; it may already apply limit, resolution and channels
# (load_dataset applies whatever is still different afterwards).
Loader = Callable[[LoadRequest], RawImages]

# A counter tells how many images a loader would return for a request (before ``limit``),
# without loading them; None when it cannot tell here (the files are not on this machine).
Counter = Callable[[LoadRequest], int | None]
