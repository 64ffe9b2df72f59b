"""Real-data statistics: computed once, read from the cache after, safe for parallel writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from ganhpo._files import atomic_write
from ganhpo.data import ImageDataset
from ganhpo.metrics import (
    CACHE_DIR_ENV,
    RunningStats,
    extract_features,
    get_extractor,
    real_statistics,
)
from ganhpo.metrics._cache import real_sample_indices

WORKERS = 4


def test_computes_then_reads_the_cache(mnist_train, tmp_path):
    extractor = get_extractor("classifier", dataset=mnist_train)
    first = real_statistics(mnist_train, extractor, num_samples=1000, seed=0, cache_dir=tmp_path)
    assert not first.cached and first.path.is_file()
    assert first.path.parent == tmp_path / "stats"
    assert first.num_samples == 1000 and first.features.dtype == np.float32
    mtime = first.path.stat().st_mtime_ns

    second = real_statistics(mnist_train, extractor, num_samples=1000, seed=0, cache_dir=tmp_path)
    assert second.cached and second.path == first.path
    assert first.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.mu, first.mu)
    np.testing.assert_array_equal(second.sigma, first.sigma)
    np.testing.assert_array_equal(second.features, first.features)

    # The statistics are those of a random sample of 1000 distinct images, in dataset order.
    np.testing.assert_array_equal(second.indices, first.indices)
    indices = torch.from_numpy(first.indices)
    assert first.indices.dtype == np.int64 and bool((indices.diff() > 0).all())
    assert torch.equal(indices, real_sample_indices(len(mnist_train), 1000, seed=0))
    assert int(indices[-1]) >= 1000  # not the first 1000
    features = extract_features(extractor, mnist_train.images[indices]).numpy()
    np.testing.assert_allclose(first.features, features, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first.mu, features.astype(np.float64).mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(
        first.sigma, np.cov(features.astype(np.float64), rowvar=False), atol=1e-6
    )


def test_key_covers_what_determines_the_statistics(mnist_train, mnist_test, tmp_path):
    extractor = get_extractor("classifier", dataset=mnist_train)
    paths = {
        real_statistics(ds, extractor, num_samples=n, seed=seed, cache_dir=tmp_path).path
        for ds, n, seed in [
            (mnist_train, 100, 0),
            (mnist_train, 200, 0),
            (mnist_test, 100, 0),
            (mnist_train, 100, 1),  # another sample of the same split
        ]
    }
    renamed = ImageDataset("mnist-copy", "train", mnist_train.images, None, mnist_train.digest)
    paths.add(real_statistics(renamed, extractor, num_samples=100, seed=0, cache_dir=tmp_path).path)
    assert len(paths) == 5


def test_sample_indices_are_seeded_nested_and_distinct():
    small = real_sample_indices(10_000, 2000, seed=0)
    large = real_sample_indices(10_000, 5000, seed=0)
    assert len(torch.unique(small)) == 2000 and bool((small.diff() > 0).all())
    assert bool(torch.isin(small, large).all())  # the 2000 reference is part of the 5000 one
    assert torch.equal(small, real_sample_indices(10_000, 2000, seed=0))
    assert not torch.equal(small, real_sample_indices(10_000, 2000, seed=1))
    assert torch.equal(real_sample_indices(300, 5000, seed=3), torch.arange(300))


def test_cache_files_without_the_sample_indices_are_recomputed(mnist_train, tmp_path):
    """A file in the old layout (first images, no indices) under the same name is not reused."""
    extractor = get_extractor("classifier", dataset=mnist_train)
    good = real_statistics(mnist_train, extractor, num_samples=100, seed=0, cache_dir=tmp_path)
    np.savez(good.path, mu=good.mu, sigma=good.sigma, features=good.features)
    redone = real_statistics(mnist_train, extractor, num_samples=100, seed=0, cache_dir=tmp_path)
    assert not redone.cached
    np.testing.assert_array_equal(redone.indices, good.indices)


def test_asking_for_more_than_the_dataset_holds_uses_all(mnist_train, tmp_path):
    small = ImageDataset.from_images("mnist", mnist_train.images[:300])
    extractor = get_extractor("classifier", dataset=small)
    stats = real_statistics(small, extractor, num_samples=5000, seed=0, cache_dir=tmp_path)
    assert stats.num_samples == 300
    np.testing.assert_array_equal(stats.indices, np.arange(300))
    # The whole split is the same sample whatever the seed: one file.
    again = real_statistics(small, extractor, num_samples=300, seed=5, cache_dir=tmp_path)
    assert again.cached and again.path == stats.path


def test_environment_variable_names_the_cache(mnist_train, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "from-env"))
    extractor = get_extractor("classifier", dataset=mnist_train)
    stats = real_statistics(mnist_train, extractor, num_samples=50, seed=0)
    assert stats.path.parent == tmp_path / "from-env" / "stats"


def test_corrupt_cache_file_is_recomputed(mnist_train, tmp_path):
    extractor = get_extractor("classifier", dataset=mnist_train)
    good = real_statistics(mnist_train, extractor, num_samples=100, seed=0, cache_dir=tmp_path)
    good.path.write_bytes(b"truncated")
    redone = real_statistics(mnist_train, extractor, num_samples=100, seed=0, cache_dir=tmp_path)
    assert not redone.cached
    np.testing.assert_allclose(redone.mu, good.mu)
    assert real_statistics(
        mnist_train, extractor, num_samples=100, seed=0, cache_dir=tmp_path
    ).cached


def _compute_in_worker(dataset: ImageDataset, cache_dir: Path, barrier, results) -> None:
    """One worker process: wait for all the others, then compute (and write) the statistics."""
    import torch

    torch.set_num_threads(1)
    extractor = get_extractor("classifier", dataset=dataset)
    barrier.wait()
    stats = real_statistics(
        dataset, extractor, num_samples=len(dataset), seed=0, cache_dir=cache_dir
    )
    results.put((stats.cached, stats.mu.tolist()))


def test_parallel_workers_leave_one_valid_file(mnist_train, tmp_path):
    dataset = ImageDataset.from_images("mnist", mnist_train.images[:500])
    # spawn, not fork: forking a process whose torch thread pool is running can deadlock.
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    workers = [
        ctx.Process(target=_compute_in_worker, args=(dataset, tmp_path, barrier, results))
        for _ in range(WORKERS)
    ]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0

    files = sorted(p.name for p in (tmp_path / "stats").iterdir())
    assert len(files) == 1 and files[0].endswith(".npz"), files  # no temporary files left
    extractor = get_extractor("classifier", dataset=dataset)
    stats = real_statistics(dataset, extractor, num_samples=500, seed=0, cache_dir=tmp_path)
    assert stats.cached
    reference = RunningStats(128).update(extract_features(extractor, dataset.images))
    np.testing.assert_allclose(stats.mu, reference.mean, atol=1e-5)
    np.testing.assert_allclose(stats.sigma, reference.cov, atol=1e-5)
    for _, mu in outcomes:
        np.testing.assert_allclose(mu, stats.mu, atol=1e-5)


def test_atomic_write_leaves_nothing_on_error_and_first_writer_can_win(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("crash")
    assert list((tmp_path / "sub").iterdir()) == []
    with atomic_write(target) as f:
        f.write(b"first")
    with atomic_write(target, replace=False) as f:
        f.write(b"second")
    assert target.read_bytes() == b"first"
    with atomic_write(target) as f:
        f.write(b"third")
    assert target.read_bytes() == b"third"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
