"""ganhpo: hyperparameter optimization for GANs.

What a study hands over is a trial's final generator (``generator.pt`` in the study's
artifact store, or ``ganhpo train --out DIR``'s ``DIR/generator.pt``);
:func:`load_generator` rebuilds it in one call, :func:`read_generator` reads its
configuration without building it. Both are imported on first use (torch is not imported
with ``ganhpo``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_generator", "read_generator"]

_LAZY = {"load_generator", "read_generator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ganhpo.train import export

        return getattr(export, name)
    raise AttributeError(f"module 'ganhpo' has no attribute {name!r}")
