"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

# The full real MNIST next to the repository (see its README.md): ../shared/data/mnist.
FULL_MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The directory of the full MNIST (four .gz IDX files); fails loudly when it is absent.

    Tests that do not need all 70000 images use ``ganhpo.data.shipped_mnist_subset_dir()``.
    """
    if not (FULL_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"the full MNIST is expected in {FULL_MNIST_DIR} (see ../shared/data/mnist)")
    return FULL_MNIST_DIR
