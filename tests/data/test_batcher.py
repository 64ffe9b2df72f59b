"""Batcher: random float minibatches on the device, reproducible from a CPU generator."""

from __future__ import annotations

import pytest
import torch

from ganhpo.data import Batcher, ImageDataset, load_dataset, shipped_mnist_subset_dir, to_unit_range
from ganhpo.errors import ConfigError


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    return load_dataset("mnist", data_dir=shipped_mnist_subset_dir(), download=False)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batches_have_the_shape_dtype_device_and_range(mnist: ImageDataset):
    batcher = Batcher(mnist, 64, "cpu", _generator(0))
    batch = batcher.next()
    assert batch.shape == (64, 1, 28, 28)
    assert batch.dtype == torch.float32 and batch.device.type == "cpu"
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
    # MNIST has pure black and pure white pixels: the range is used to its ends.
    assert float(batch.min()) == -1.0 and float(batch.max()) == 1.0


def test_batches_are_the_dataset_images_at_indices_drawn_from_the_generator(mnist: ImageDataset):
    batcher = Batcher(mnist, 16, torch.device("cpu"), _generator(3))
    expected_index = torch.randint(len(mnist), (16,), generator=_generator(3))
    assert torch.equal(batcher.next(), to_unit_range(mnist.images[expected_index]))


def test_same_seed_gives_same_batches_and_the_state_resumes_the_stream(mnist: ImageDataset):
    first = Batcher(mnist, 32, "cpu", _generator(7))
    second = Batcher(mnist, 32, "cpu", _generator(7))
    for _ in range(3):
        assert torch.equal(first.next(), second.next())
    other = Batcher(mnist, 32, "cpu", _generator(8))
    assert not torch.equal(first.next(), other.next())

    state = first.generator.get_state()  # what a checkpoint stores
    expected = [first.next() for _ in range(2)]
    resumed = Batcher(mnist, 32, "cpu", torch.Generator())
    resumed.generator.set_state(state)
    assert all(torch.equal(resumed.next(), batch) for batch in expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(mnist: ImageDataset):
    on_cpu = Batcher(mnist, 128, "cpu", _generator(5))
    on_gpu = Batcher(mnist, 128, "cuda", _generator(5))
    for _ in range(3):
        batch = on_gpu.next()
        assert batch.device.type == "cuda"
        assert torch.equal(batch.cpu(), on_cpu.next())


def test_bad_arguments_are_rejected(mnist: ImageDataset):
    with pytest.raises(ConfigError, match="batch size must be a positive integer"):
        Batcher(mnist, 0, "cpu", _generator(0))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"CPU torch\.Generator"):
            Batcher(mnist, 8, "cpu", torch.Generator(device="cuda"))
