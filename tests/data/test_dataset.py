"""ImageDataset, the value conversions, the registry of names and the data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ganhpo.data import (
    ImageDataset,
    dataset_names,
    from_unit_range,
    image_digest,
    load_dataset,
    resolve_data_dir,
    shipped_mnist_subset_dir,
    to_unit_range,
)
from ganhpo.errors import UnknownNameError


def test_dataset_names():
    assert dataset_names() == ["fashion-mnist", "image-folder", "mnist", "mnist-subset", "npz"]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        load_dataset("mnsit")
    message = str(info.value)
    assert "did you mean 'mnist'?" in message
    assert "choose one of: fashion-mnist, image-folder, mnist, mnist-subset, npz" in message


def test_unit_range_conversion_is_exact_at_the_ends_and_inverts():
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    floats = to_unit_range(values)
    assert floats.dtype == torch.float32
    assert float(floats.min()) == -1.0 and float(floats.max()) == 1.0
    assert torch.allclose(floats.flatten(), torch.arange(256) / 127.5 - 1)
    assert torch.equal(from_unit_range(floats), values)
    assert torch.equal(ImageDataset.to_float(values), floats)
    assert from_unit_range(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]
    with pytest.raises(TypeError, match="expects uint8"):
        to_unit_range(floats)


def test_from_images_and_digest():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    dataset = ImageDataset.from_images("toy", images, labels=torch.arange(4))
    assert dataset.shape == (3, 8, 8) and len(dataset) == 4
    assert dataset.digest == image_digest(images) and len(dataset.digest) == 64
    # The same bytes in another shape are other images.
    assert image_digest(images.reshape(4, 3, 4, 16)) != dataset.digest
    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1
    assert image_digest(changed) != dataset.digest


def test_invalid_dataset_contents_are_rejected():
    with pytest.raises(ValueError, match=r"expected uint8 \[N, C, H, W\] images"):
        ImageDataset.from_images("toy", torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="labels must be int64 of shape"):
        images = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
        ImageDataset("toy", "train", images, torch.arange(3), "")


def test_resolve_data_dir_prefers_argument_then_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("GANHPO_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir("~/x") == Path.home() / "x"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("GANHPO_DATA_DIR")
    default = resolve_data_dir(None)
    assert default.name == "data" and default.parent.name == "ganhpo"


def test_shipped_subset_loads_without_the_full_set():
    directory = shipped_mnist_subset_dir()
    assert (directory / "README.md").is_file()
    total = sum(p.stat().st_size for p in directory.iterdir())
    assert total < 1_500_000
    train = load_dataset("mnist", data_dir=directory, download=False)
    test = load_dataset("mnist", split="test", data_dir=directory, download=False)
    assert train.images.shape == (2000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert test.labels is not None
    assert torch.bincount(test.labels).tolist() == [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]


def test_mnist_subset_is_the_shipped_real_subset() -> None:
    from ganhpo.data import load_dataset, shipped_mnist_subset_dir

    subset = load_dataset("mnist-subset")
    same = load_dataset("mnist", data_dir=shipped_mnist_subset_dir())
    assert subset.digest == same.digest and len(subset) == 2000
    assert len(load_dataset("mnist-subset", split="test")) == 1000
