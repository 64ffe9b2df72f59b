"""Downloads from mirrors, served here from file:// URLs (real urllib, real files)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from ganhpo.data import load_dataset, shipped_mnist_subset_dir
from ganhpo.data._download import DownloadFailed, RemoteFile, fetch
from ganhpo.data._idx_datasets import IdxCollection, load_idx_collection
from ganhpo.data._source import LoadRequest

NAMES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _remote(name: str) -> RemoteFile:
    """The shipped subset's file, described by the sha256 of its content."""
    content = gzip.decompress((shipped_mnist_subset_dir() / name).read_bytes())
    return RemoteFile(name, sha256=hashlib.sha256(content).hexdigest())


@pytest.fixture
def mirror(tmp_path: Path) -> str:
    """A file:// mirror holding the shipped subset's test split."""
    root = tmp_path / "mirror"
    root.mkdir()
    for name in NAMES:
        shutil.copy(shipped_mnist_subset_dir() / name, root / name)
    return root.as_uri() + "/"


def test_fetch_verifies_and_falls_back_to_the_next_mirror(mirror: str, tmp_path: Path):
    target = tmp_path / "out"
    empty = (tmp_path / "empty").as_uri() + "/"
    path = fetch(_remote(NAMES[0]), (empty, mirror), target)
    assert path == target / NAMES[0]
    assert path.read_bytes() == (shipped_mnist_subset_dir() / NAMES[0]).read_bytes()
    assert [p.name for p in target.iterdir()] == [NAMES[0]]  # no temporary left


def test_fetch_rejects_a_checksum_mismatch_and_writes_nothing(mirror: str, tmp_path: Path):
    wrong = RemoteFile(NAMES[0], sha256="0" * 64)
    with pytest.raises(DownloadFailed, match=r"decompressed sha256 \w+ instead of 0000"):
        fetch(wrong, (mirror,), tmp_path / "out")
    wrong_md5 = RemoteFile(NAMES[0], gz_md5="0" * 32)
    with pytest.raises(DownloadFailed, match=r"md5 \w+ instead of 0000"):
        fetch(wrong_md5, (mirror,), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_files_are_downloaded_into_the_torchvision_layout(mirror: str, tmp_path: Path):
    collection = IdxCollection(
        title="MNIST subset",
        torchvision_dir="MNIST",
        mirrors=(mirror,),
        splits={"test": (_remote(NAMES[0]), _remote(NAMES[1]))},
        sizes={"test": 1000},
    )
    request = LoadRequest(
        name="mnist",
        split="test",
        data_dir=tmp_path / "data",
        path=None,
        resolution=None,
        channels=None,
        download=True,
        limit=None,
    )
    raw = load_idx_collection(collection, request)
    assert raw.images.shape == (1000, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "data" / "MNIST" / "raw").iterdir()) == sorted(NAMES)
    # The downloaded files are now found by the ordinary loader, offline.
    again = load_dataset("mnist", split="test", data_dir=tmp_path / "data", download=False)
    assert torch.equal(again.images, raw.images)
