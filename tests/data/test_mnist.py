"""MNIST and Fashion-MNIST from IDX files: real files, every layout and failure."""

from __future__ import annotations

import gzip
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from ganhpo.data import (
    ImageDataset,
    dataset_size,
    load_dataset,
    locate_idx_dataset,
    read_idx,
    shipped_mnist_subset_dir,
    write_idx,
)
from ganhpo.data._transforms import convert_channels
from ganhpo.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@pytest.fixture(scope="module")
def full_train(mnist_dir: Path) -> ImageDataset:
    return load_dataset("mnist", data_dir=mnist_dir, download=False)


@pytest.fixture(scope="module")
def full_test(mnist_dir: Path) -> ImageDataset:
    return load_dataset("mnist", split="test", data_dir=mnist_dir, download=False)


@pytest.fixture
def subset_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped subset's .gz files."""
    target = tmp_path / "subset"
    target.mkdir()
    for path in shipped_mnist_subset_dir().glob("*.gz"):
        shutil.copy(path, target / path.name)
    return target


def _gunzip_all(directory: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.gz"):
        (target / path.stem).write_bytes(gzip.decompress(path.read_bytes()))


def test_full_train_split_has_the_published_shape_and_label_counts(full_train: ImageDataset):
    assert len(full_train) == 60000
    assert full_train.shape == (1, 28, 28)
    assert full_train.images.dtype == torch.uint8 and full_train.images.is_contiguous()
    assert full_train.labels is not None and full_train.labels.dtype == torch.int64
    assert torch.bincount(full_train.labels).tolist() == TRAIN_COUNTS
    assert (full_train.name, full_train.split) == ("mnist", "train")
    assert int(full_train.images.max()) == 255 and int(full_train.images.min()) == 0


def test_full_test_split_has_the_published_shape_and_label_counts(full_test: ImageDataset):
    assert full_test.images.shape == (10000, 1, 28, 28)
    assert full_test.labels is not None
    assert torch.bincount(full_test.labels).tolist() == TEST_COUNTS
    assert full_test.digest != ""


def test_shipped_subset_is_the_first_images_of_the_full_set(
    full_train: ImageDataset, full_test: ImageDataset, mnist_dir: Path
):
    train = load_dataset("mnist", data_dir=shipped_mnist_subset_dir(), download=False)
    test = load_dataset("mnist", split="test", data_dir=shipped_mnist_subset_dir(), download=False)
    assert (len(train), len(test)) == (2000, 1000)
    assert torch.equal(train.images, full_train.images[:2000])
    assert torch.equal(test.images, full_test.images[:1000])
    assert train.labels is not None and full_train.labels is not None
    assert torch.equal(train.labels, full_train.labels[:2000])
    limited = load_dataset("mnist", data_dir=mnist_dir, limit=2000)
    assert limited.digest == train.digest  # same content, same cache key


def test_subset_script_reproduces_the_shipped_subset(mnist_dir: Path, tmp_path: Path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from make_mnist_subset import DEFAULT_COUNTS, make_subset
    finally:
        sys.path.remove(str(REPO / "scripts"))
    written = make_subset(mnist_dir, tmp_path, DEFAULT_COUNTS)
    assert sorted(p.name for p in written) == sorted(
        p.name for p in shipped_mnist_subset_dir().glob("*.gz")
    )
    for path in written:
        # Content, not bytes: another zlib build may compress the same data differently.
        assert (read_idx(path) == read_idx(shipped_mnist_subset_dir() / path.name)).all()


def test_written_idx_files_are_byte_identical_and_read_back(tmp_path: Path):
    array = read_idx(shipped_mnist_subset_dir() / "t10k-images-idx3-ubyte.gz")[:100]
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    # No file name and mtime 0 in the gzip header: equal arrays give equal files.
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    write_idx(tmp_path / "c", array)
    assert (read_idx(tmp_path / "a.gz") == array).all()
    assert (read_idx(tmp_path / "c") == array).all()
    assert (tmp_path / "c").stat().st_size == 16 + 100 * 28 * 28
    assert not list(tmp_path.glob(".*.part"))  # atomic writes leave no temporaries


def test_raw_files_and_gz_files_give_the_same_dataset(subset_copy: Path, tmp_path: Path):
    _gunzip_all(subset_copy, tmp_path / "raw")
    from_gz = load_dataset("mnist", data_dir=subset_copy, download=False)
    from_raw = load_dataset("mnist", data_dir=tmp_path / "raw", download=False)
    assert from_raw.digest == from_gz.digest
    assert torch.equal(from_raw.images, from_gz.images)


def test_torchvision_layout_is_found(subset_copy: Path, tmp_path: Path):
    _gunzip_all(subset_copy, tmp_path / "MNIST" / "raw")
    mnist = load_dataset("mnist", split="test", data_dir=tmp_path, download=False)
    assert mnist.images.shape == (1000, 1, 28, 28)
    # Fashion-MNIST has the same format; its torchvision directory is FashionMNIST/raw.
    shutil.copytree(subset_copy, tmp_path / "fashion" / "FashionMNIST" / "raw")
    fashion = load_dataset("fashion-mnist", data_dir=tmp_path / "fashion", download=False)
    assert (fashion.name, len(fashion)) == ("fashion-mnist", 2000)


def test_data_dir_from_environment(subset_copy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GANHPO_DATA_DIR", str(subset_copy))
    assert len(load_dataset("mnist", split="test", download=False)) == 1000


def test_truncated_gz_file_is_a_data_error_naming_it(subset_copy: Path):
    path = subset_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz") as info:
        load_dataset("mnist", data_dir=subset_copy, download=False)
    assert "delete it and download it again" in str(info.value)


def test_truncated_raw_file_is_a_data_error_naming_it(subset_copy: Path, tmp_path: Path):
    _gunzip_all(subset_copy, tmp_path / "raw")
    path = tmp_path / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated.*delete it"):
        load_dataset("mnist", split="test", data_dir=tmp_path / "raw", download=False)


def test_corrupt_header_and_trailing_bytes_are_data_errors(subset_copy: Path, tmp_path: Path):
    _gunzip_all(subset_copy, tmp_path / "raw")
    labels = tmp_path / "raw" / "t10k-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is not an IDX file"):
        load_dataset("mnist", split="test", data_dir=tmp_path / "raw", download=False)
    labels.write_bytes(good + b"\0")
    with pytest.raises(DataError, match="has trailing bytes"):
        load_dataset("mnist", split="test", data_dir=tmp_path / "raw", download=False)


def test_mismatched_images_and_labels_are_a_data_error(subset_copy: Path):
    # Test-split labels (1000) next to train images (2000).
    shutil.copy(
        subset_copy / "t10k-labels-idx1-ubyte.gz", subset_copy / "train-labels-idx1-ubyte.gz"
    )
    with pytest.raises(DataError, match="do not belong together"):
        load_dataset("mnist", data_dir=subset_copy, download=False)


def test_missing_files_fail_fast_with_an_actionable_message(tmp_path: Path):
    start = time.monotonic()
    try:
        dataset = load_dataset("mnist", split="test", data_dir=tmp_path, download=True)
    except DataError as e:
        message = str(e)
        assert time.monotonic() - start < 30
        assert "\n" not in message
        assert str(tmp_path) in message and str(tmp_path / "MNIST" / "raw") in message
        for name in FILES["test"]:
            assert name in message
        assert "downloading them failed" in message
        assert "--data-dir DIR" in message and "GANHPO_DATA_DIR" in message
        # A failed download leaves no partial file behind.
        assert not any(p.is_file() for p in tmp_path.rglob("*"))
    else:  # a machine with internet access: the files came and were verified
        assert len(dataset) == 10000
        assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()


def test_missing_files_without_download_say_so(tmp_path: Path):
    with pytest.raises(DataError, match="downloading is off") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(info.value)
    assert "train-images-idx3-ubyte and train-labels-idx1-ubyte" in str(info.value)


def test_resize_to_32_and_three_channels():
    subset = shipped_mnist_subset_dir()
    native = load_dataset("mnist", data_dir=subset, limit=64)
    rgb32 = load_dataset("mnist", data_dir=subset, limit=64, resolution=32, channels=3)
    assert rgb32.images.shape == (64, 3, 32, 32)
    assert rgb32.images.dtype == torch.uint8 and rgb32.images.is_contiguous()
    assert torch.equal(rgb32.images[:, 0], rgb32.images[:, 1])
    assert torch.equal(rgb32.images[:, 0], rgb32.images[:, 2])
    # Upscaling by 32/28 keeps the ink: the mean brightness moves by well under 1 %.
    mean_native = native.images.float().mean()
    assert abs(rgb32.images.float().mean() - mean_native) < 0.01 * mean_native
    assert rgb32.digest != native.digest
    assert rgb32.labels is not None and native.labels is not None
    assert torch.equal(rgb32.labels, native.labels)


def test_downscale_is_antialiased_and_gray_round_trip_is_exact():
    subset = shipped_mnist_subset_dir()
    small = load_dataset("mnist", data_dir=subset, limit=16, resolution=16)
    native = load_dataset("mnist", data_dir=subset, limit=16)
    assert small.shape == (1, 16, 16)
    # Area-like averaging keeps the mean brightness (plain bilinear would drop strokes).
    assert abs(small.images.float().mean() - native.images.float().mean()) < 2.0
    rgb = load_dataset("mnist", data_dir=subset, limit=16, channels=3)
    assert torch.equal(convert_channels(rgb.images, 1), native.images)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"resolution": 30}, "multiple of 4 and at least 8"),
        ({"resolution": 4}, "multiple of 4 and at least 8"),
        ({"channels": 2}, r"channels must be 1 \(grayscale\) or 3 \(RGB\); got 2"),
        ({"split": "val"}, "split must be one of train, test; got 'val'"),
        ({"limit": 0}, "limit must be a positive number"),
        ({"path": "x.npz"}, "takes no path"),
    ],
)
def test_impossible_arguments_are_config_errors(kwargs: dict, pattern: str):
    with pytest.raises(ConfigError, match=pattern):
        load_dataset("mnist", data_dir=shipped_mnist_subset_dir(), **kwargs)


def test_dataset_size_is_the_published_count_without_reading_files(
    full_train: ImageDataset, full_test: ImageDataset, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("GANHPO_DATA_DIR", str(tmp_path / "empty"))  # no file to read
    assert dataset_size("mnist") == len(full_train) == 60000
    assert dataset_size("mnist", split="test") == len(full_test) == 10000
    assert dataset_size("fashion-mnist", split="test") == 10000
    assert dataset_size("mnist", limit=500) == 500
    assert dataset_size("mnist", split="test", limit=10**9) == 10000
    assert not (tmp_path / "empty").exists()


def test_dataset_size_of_the_shipped_subset_is_what_loads():
    for split, count in (("train", 2000), ("test", 1000)):
        assert dataset_size("mnist-subset", split=split) == count
        assert len(load_dataset("mnist-subset", split=split)) == count
    assert dataset_size("mnist-subset", limit=7) == 7
    with pytest.raises(ConfigError, match="takes no path"):
        dataset_size("mnist-subset", path="x")


def test_locate_idx_dataset_finds_the_files_where_the_loader_does(
    subset_copy: Path, tmp_path: Path
):
    assert locate_idx_dataset("mnist", subset_copy, download=False) == subset_copy
    torchvision = tmp_path / "tv"
    shutil.copytree(subset_copy, torchvision / "MNIST" / "raw")
    found = locate_idx_dataset("mnist", torchvision, download=False)
    assert found == torchvision / "MNIST" / "raw"
    assert len(load_dataset("mnist", split="test", data_dir=found)) == 1000


def test_locate_idx_dataset_names_what_is_missing(subset_copy: Path, tmp_path: Path):
    with pytest.raises(DataError, match="downloading is off") as info:
        locate_idx_dataset("mnist", tmp_path / "none", download=False)
    assert "train-images-idx3-ubyte" in str(info.value)
    (subset_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="MNIST test files not found"):
        locate_idx_dataset("mnist", subset_copy, download=False)
    # One split at the top and the other in torchvision's layout: not one directory.
    raw = subset_copy / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shipped_mnist_subset_dir() / name, raw / name)
    with pytest.raises(DataError, match="spread over"):
        locate_idx_dataset("mnist", subset_copy, download=False)
    with pytest.raises(ConfigError, match="not an IDX dataset"):
        locate_idx_dataset("npz")
