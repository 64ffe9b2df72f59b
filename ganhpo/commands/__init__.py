"""One module per CLI command; each exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ganhpo.commands import (
    dashboard,
    doctor,
    ensemble,
    plot,
    sample,
    score,
    study,
    train,
    worker,
)

__all__ = ["COMMANDS"]

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    train.register,
    study.register,
    worker.register,
    doctor.register,
    plot.register,
    score.register,
    sample.register,
    ensemble.register,
    dashboard.register,
]
