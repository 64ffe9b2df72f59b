"""Real MNIST slices shared by the metrics tests (loaded once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganhpo.data import ImageDataset, load_dataset

N = 2000  # images per slice: enough for stable FID numbers, fast on two cores


@pytest.fixture(scope="session")
def mnist_train(mnist_dir: Path) -> ImageDataset:
    """The first 2000 MNIST training images (name "mnist": the shipped classifier applies)."""
    return load_dataset("mnist", split="train", data_dir=mnist_dir, download=False, limit=N)


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path) -> ImageDataset:
    """The first 2000 MNIST test images."""
    return load_dataset("mnist", split="test", data_dir=mnist_dir, download=False, limit=N)
