"""The "npz" dataset: arrays in NumPy files, in every accepted layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ganhpo.data import dataset_size, load_dataset
from ganhpo.errors import ConfigError, DataError

RNG = np.random.default_rng(1)
NCHW_RGB = RNG.integers(0, 256, (5, 3, 12, 12), dtype=np.uint8)
NCHW_GRAY = RNG.integers(0, 256, (5, 1, 12, 12), dtype=np.uint8)


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("key", "array", "expected"),
    [
        ("images", NCHW_GRAY[:, 0], NCHW_GRAY),  # NHW
        ("x", NCHW_RGB.transpose(0, 2, 3, 1), NCHW_RGB),  # NHWC
        ("images", NCHW_RGB, NCHW_RGB),  # NCHW
        ("anything", NCHW_GRAY.transpose(0, 2, 3, 1), NCHW_GRAY),  # the only array, NHWC
    ],
)
def test_layouts_are_recognised(tmp_path: Path, key: str, array: np.ndarray, expected: np.ndarray):
    dataset = load_dataset("npz", path=_save(tmp_path / "d.npz", **{key: array}))
    assert dataset.images.is_contiguous() and dataset.images.dtype == torch.uint8
    assert torch.equal(dataset.images, torch.from_numpy(expected))
    assert dataset.labels is None


def test_labels_are_read_and_limit_applies(tmp_path: Path):
    path = _save(tmp_path / "d.npz", x=NCHW_RGB, y=np.arange(5, dtype=np.uint8))
    dataset = load_dataset("npz", path=path, limit=3)
    assert len(dataset) == 3
    assert dataset.labels is not None and dataset.labels.dtype == torch.int64
    assert dataset.labels.tolist() == [0, 1, 2]


def test_resolution_and_channels_apply(tmp_path: Path):
    path = _save(tmp_path / "d.npz", images=NCHW_RGB)
    dataset = load_dataset("npz", path=path, resolution=8, channels=1)
    assert dataset.images.shape == (5, 1, 8, 8)


def test_npy_file_is_accepted(tmp_path: Path):
    np.save(tmp_path / "d.npy", NCHW_RGB)
    assert load_dataset("npz", path=tmp_path / "d.npy").images.shape == (5, 3, 12, 12)


def test_float_array_is_rejected_saying_what_is_expected(tmp_path: Path):
    path = _save(tmp_path / "d.npz", images=NCHW_RGB.astype(np.float32) / 255)
    with pytest.raises(DataError, match="has dtype float32; expected uint8 images"):
        load_dataset("npz", path=path)


def test_wrong_shape_is_rejected_saying_what_was_found(tmp_path: Path):
    path = _save(tmp_path / "d.npz", images=np.zeros((4, 5, 8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"has shape \(4, 5, 8, 8\); expected uint8 images"):
        load_dataset("npz", path=path)


def test_ambiguous_arrays_and_bad_labels_are_rejected(tmp_path: Path):
    path = _save(tmp_path / "a.npz", first=NCHW_RGB, second=NCHW_RGB)
    with pytest.raises(DataError, match="holds the arrays first, second; expected one named"):
        load_dataset("npz", path=path)
    path = _save(tmp_path / "b.npz", images=NCHW_RGB, labels=np.zeros(4, dtype=np.int64))
    with pytest.raises(DataError, match="expected 5 integer labels"):
        load_dataset("npz", path=path)


def test_missing_or_broken_file_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", path=tmp_path / "missing.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match=r"broken\.npz"):
        load_dataset("npz", path=tmp_path / "broken.npz")


def test_dataset_size_reads_only_the_header(tmp_path: Path):
    many = np.zeros((1234, 3, 8, 8), dtype=np.uint8)
    files = {
        "plain.npz": _save(tmp_path / "plain.npz", x=many[:, 0], y=np.arange(1234)),
        "nhwc.npz": _save(tmp_path / "nhwc.npz", images=many.transpose(0, 2, 3, 1)),
        "only.npz": _save(tmp_path / "only.npz", anything=many),
    }
    np.savez_compressed(tmp_path / "packed.npz", images=many)
    np.save(tmp_path / "d.npy", many)
    files |= {"packed.npz": tmp_path / "packed.npz", "d.npy": tmp_path / "d.npy"}
    for name, path in files.items():
        assert dataset_size("npz", path=path) == len(load_dataset("npz", path=path)) == 1234, name
    assert dataset_size("npz", path=tmp_path / "d.npy", limit=10) == 10


def test_dataset_size_is_unknown_when_the_file_is_not_here_or_broken(tmp_path: Path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    ambiguous = _save(tmp_path / "a.npz", first=NCHW_RGB, second=NCHW_RGB)
    for path in (tmp_path / "missing.npz", tmp_path / "broken.npz", ambiguous):
        assert dataset_size("npz", path=path) is None  # the loader says what is wrong
    with pytest.raises(ConfigError, match="needs a path"):
        dataset_size("npz")
    with pytest.raises(ConfigError, match="only a 'train' split"):
        dataset_size("npz", path=tmp_path / "missing.npz", split="test")
