"""Where dataset files live."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["DATA_DIR_ENV", "resolve_data_dir", "shipped_mnist_subset_dir"]

# Environment variable naming the data directory when --data-dir is not given.
DATA_DIR_ENV = "GANHPO_DATA_DIR"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The directory downloaded datasets live in.

    ``data_dir`` (the ``--data-dir`` argument) when given, else ``$GANHPO_DATA_DIR`` when set and
    non-empty, else the user data directory of ganhpo plus ``data`` (on Linux
    ``~/.local/share/ganhpo/data``). The directory is not created here.
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV) or platformdirs.user_data_path("ganhpo") / "data"
    return Path(data_dir).expanduser()


def shipped_mnist_subset_dir() -> Path:
    """The small real MNIST subset shipped inside the package (see its README.md).

    Pass it as ``data_dir`` to :func:`ganhpo.data.load_dataset` with the name ``"mnist"``.
    """
    return Path(__file__).resolve().parent / "subsets"
