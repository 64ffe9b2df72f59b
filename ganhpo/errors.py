"""The one exception hierarchy of ganhpo.

Every user mistake is raised as a :class:`GanhpoError` subclass whose message says what is
wrong and what to do about it; ``ganhpo.cli.main`` turns it into a one-line error and a
non-zero exit code. Library code never prints or exits.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "ExtractorError",
    "GanhpoError",
    "StorageError",
    "UnknownNameError",
]


class GanhpoError(Exception):
    """Base class of every error ganhpo raises on purpose."""

    exit_code: int = 1


class ConfigError(GanhpoError):
    """A configuration or spec file, or a command-line value, is invalid."""

    exit_code = 2


class UnknownNameError(ConfigError):
    """A name looked up in a registry (loss, penalty, dataset, ...) does not exist."""


class ModelError(ConfigError):
    """A user's network builder (``[model] arch = "package.module:function"``) cannot be
    imported, fails, or returns networks that do not fit the data."""


class ModelImportError(ModelError):
    """A user's network builder cannot be imported here (its package is not installed on
    this machine): the environment's fault, not the trial's."""


class DataError(GanhpoError):
    """A dataset is missing, corrupt or of the wrong shape."""


class ExtractorError(GanhpoError):
    """A feature extractor cannot be built (missing weights, missing optional package)."""


class CheckpointError(GanhpoError):
    """A checkpoint cannot be read or does not match the configuration."""


class StorageError(GanhpoError):
    """The study database cannot be reached or used."""


class DivergenceError(GanhpoError):
    """Training produced a non-finite loss or metric.

    ``step`` is the training step at which it was seen and ``what`` names the quantity.
    """

    def __init__(self, what: str, step: int, value: float) -> None:
        self.what = what
        self.step = step
        self.value = value
        super().__init__(
            f"training diverged at step {step}: {what} is {value}; "
            "lower the learning rates or add a gradient penalty"
        )
