"""The "image-folder" dataset: PNG and JPEG files written here with Pillow."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganhpo.data import dataset_size, load_dataset
from ganhpo.errors import ConfigError, DataError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested folder: 3 gray PNGs, 2 RGB PNGs, 1 RGB JPEG, and a text file to ignore."""
    root = tmp_path / "images"
    (root / "gray").mkdir(parents=True)
    (root / "color" / "deep").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (48, 48), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / "gray" / f"{i}.png")
    for i in range(2):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels, mode="RGB").save(root / "color" / f"{i}.PNG")
    Image.new("RGB", (30, 30), (200, 30, 60)).save(root / "color" / "deep" / "photo.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_default_is_the_smallest_native_size_in_rgb_when_any_image_has_colour(folder: Path):
    """48, 40 and 30 pixel images, some RGB: all are read at 28 (30 rounded down to a multiple
    of 4, so no image is enlarged), in RGB."""
    dataset = load_dataset("image-folder", path=folder)
    assert dataset.images.shape == (6, 3, 28, 28)
    assert dataset.images.dtype == torch.uint8 and dataset.images.is_contiguous()
    assert dataset.labels is None and (dataset.name, dataset.split) == ("image-folder", "train")
    # Sorted by relative path: color/0.PNG, color/1.PNG, color/deep/photo.jpg, gray/0..2.png.
    gray = dataset.images[3:]
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 0], gray[:, 2])
    photo = dataset.images[2].float().mean(dim=(1, 2))
    assert torch.allclose(photo, torch.tensor([200.0, 30.0, 60.0]), atol=4)  # JPEG is lossy


def test_small_gray_pngs_stay_small_and_gray(tmp_path: Path):
    """8×8 gray PNGs used to be loaded as 64×64 RGB: 48 times the pixels, none of them new."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(tmp_path / f"{i}.png")
    dataset = load_dataset("image-folder", path=tmp_path)
    assert dataset.images.shape == (5, 1, 8, 8)
    assert torch.equal(dataset.images[:, 0], torch.from_numpy(pixels))
    # Asked for, size and channels are what the spec says.
    assert load_dataset("image-folder", path=tmp_path, resolution=16, channels=3).shape == (
        3,
        16,
        16,
    )


def test_grayscale_at_native_size_keeps_the_pixels(folder: Path):
    dataset = load_dataset("image-folder", path=folder / "gray", resolution=48, channels=1)
    assert dataset.images.shape == (3, 1, 48, 48)
    with Image.open(folder / "gray" / "0.png") as image:
        expected = np.array(image)
    assert torch.equal(dataset.images[0, 0], torch.from_numpy(expected))


def test_non_square_images_are_center_cropped(tmp_path: Path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:30] = (0, 255, 0)
    pixels[:, 30:] = (0, 0, 255)
    Image.fromarray(pixels, mode="RGB").save(tmp_path / "wide.png")
    dataset = load_dataset("image-folder", path=tmp_path, resolution=20)
    assert torch.equal(dataset.images[0, 1], torch.full((20, 20), 255, dtype=torch.uint8))
    assert int(dataset.images[0, 0].max()) == 0 and int(dataset.images[0, 2].max()) == 0


def test_limit_reads_only_the_first_files(folder: Path):
    dataset = load_dataset("image-folder", path=folder, limit=2, resolution=32)
    assert dataset.images.shape == (2, 3, 32, 32)


def test_empty_folder_is_a_data_error(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=re.escape(f"no images found under {tmp_path}")):
        load_dataset("image-folder", path=tmp_path)


def test_missing_folder_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("image-folder", path=tmp_path / "nowhere")


def test_unreadable_image_is_a_data_error_naming_it(folder: Path):
    broken = folder / "gray" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DataError, match=re.escape(f"cannot read image {broken}")):
        load_dataset("image-folder", path=folder)


def test_path_and_train_split_are_required(folder: Path):
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("image-folder")
    with pytest.raises(ConfigError, match="only a 'train' split"):
        load_dataset("image-folder", path=folder, split="test")


def test_dataset_size_counts_the_files_without_opening_them(folder: Path, tmp_path: Path):
    (folder / "gray" / "broken.png").write_bytes(b"not a png, and never opened by counting")
    assert dataset_size("image-folder", path=folder) == 7
    assert dataset_size("image-folder", path=folder, limit=2) == 2
    (folder / "gray" / "broken.png").unlink()
    assert len(load_dataset("image-folder", path=folder, resolution=8)) == 6
    assert dataset_size("image-folder", path=folder) == 6
    # Not on this machine (the workers may have it), or empty here: unknown, not an error.
    assert dataset_size("image-folder", path=tmp_path / "nowhere") is None
    (tmp_path / "empty").mkdir()
    assert dataset_size("image-folder", path=tmp_path / "empty") is None
    with pytest.raises(ConfigError, match="needs a path"):
        dataset_size("image-folder")
    with pytest.raises(ConfigError, match="only a 'train' split"):
        dataset_size("image-folder", path=folder, split="test")


def test_sixteen_bit_pngs_read_as_their_eight_bit_twins(tmp_path: Path):
    """16-bit gray PNGs (Pillow's mode "I;16") were clipped to 0 or 255 by Pillow's
    conversion; they read as the same images saved in 8 bits, at native size or resized, gray
    or RGB."""
    pixels = np.random.default_rng(2).integers(0, 256, (4, 12, 12), dtype=np.uint8)
    (tmp_path / "8").mkdir()
    (tmp_path / "16").mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(tmp_path / "8" / f"{i}.png")
        wide = Image.fromarray(image.astype(np.uint16) * 257)  # 0..255 -> 0..65535
        assert wide.mode == "I;16"
        wide.save(tmp_path / "16" / f"{i}.png")
    with Image.open(tmp_path / "16" / "0.png") as reread:
        assert reread.mode == "I;16"  # as written: 16 bits in the file
    for options in [{}, {"resolution": 8}, {"channels": 3}]:
        eight = load_dataset("image-folder", path=tmp_path / "8", **options).images
        sixteen = load_dataset("image-folder", path=tmp_path / "16", **options).images
        assert torch.equal(sixteen, eight), options
    assert torch.equal(
        load_dataset("image-folder", path=tmp_path / "16").images[:, 0], torch.from_numpy(pixels)
    )
