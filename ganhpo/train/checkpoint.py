"""Full training-state checkpoints, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ganhpo._files import atomic_write
from ganhpo.errors import CheckpointError

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temp file and ``os.replace`` (never half-written)."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
            "it is corrupt or not a ganhpo checkpoint: delete it to start over"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a ganhpo checkpoint of format {CHECKPOINT_FORMAT}"
        )
    return state
