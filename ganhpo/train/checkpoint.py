"""Full training-state checkpoints: bytes for an artifact store, or files written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ganhpo._files import atomic_write_bytes
from ganhpo.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "dump_checkpoint",
    "load_checkpoint",
    "parse_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1


def dump_checkpoint(state: dict[str, Any]) -> bytes:
    """The serialized checkpoint of a training state."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    return buffer.getvalue()


def parse_checkpoint(data: bytes, *, source: str = "checkpoint") -> dict[str, Any]:
    """Read bytes from :func:`dump_checkpoint` (tensors on the CPU; no code is unpickled)."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{source} cannot be read ({type(e).__name__}: {e}); "
            "it is corrupt or not a ganhpo checkpoint: delete it to start over"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not a ganhpo checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint file atomically (never half-written)."""
    path = Path(path)
    atomic_write_bytes(path, dump_checkpoint(state))
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    return parse_checkpoint(path.read_bytes(), source=f"checkpoint {path}")
