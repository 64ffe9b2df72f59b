"""Evaluator on real MNIST: real test images score low, noise high, degraded sets in between."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganhpo.data import ImageDataset, load_dataset, to_unit_range
from ganhpo.metrics import EvalResult, Evaluator, fixed_latents

LATENT_DIM = 16


class BankGenerator(nn.Module):
    """A stand-in generator that returns real images, picked deterministically from z."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bank", to_unit_range(images))
        self.scale = nn.Parameter(torch.ones(()))
        self.saw_grad_enabled: list[bool] = []
        self.saw_training: list[bool] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.saw_grad_enabled.append(torch.is_grad_enabled())
        self.saw_training.append(self.training)
        index = (z[:, 0].abs() * 1e4).long() % self.bank.shape[0]
        return self.bank[index] * self.scale


class NaNGenerator(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full((z.shape[0], 1, 28, 28), float("nan"))


@pytest.fixture(scope="module")
def evaluator(mnist_train, tmp_path_factory) -> Evaluator:
    cache = tmp_path_factory.mktemp("cache")
    # 20 KID subsets instead of 100: each subset costs three 1000×1000 kernels, and the tests
    # compare scores that differ by orders of magnitude.
    return Evaluator(mnist_train, cache_dir=cache, seed=0, latent_dim=LATENT_DIM, kid_subsets=20)


@pytest.fixture(scope="module")
def scores(evaluator, mnist_test) -> dict[str, EvalResult]:
    """FID/KID of real test images and degraded versions against 2000 training images."""
    test = to_unit_range(mnist_test.images)
    ones = mnist_test.images[mnist_test.labels == 1]
    single_digit = to_unit_range(ones.repeat(-(-len(test) // len(ones)), 1, 1, 1)[: len(test)])
    blurred = F.avg_pool2d(test, 3, stride=1, padding=1, count_include_pad=False)
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {
        "real": evaluator.evaluate_images(test),
        "blurred": evaluator.evaluate_images(blurred),
        "single digit": evaluator.evaluate_images(single_digit),
        "noise": evaluator.evaluate_images(noise),
    }


def test_fixed_latents_are_seeded_cpu_float32():
    z = fixed_latents(7, 100, LATENT_DIM)
    assert z.shape == (100, LATENT_DIM) and z.dtype == torch.float32 and z.device.type == "cpu"
    assert torch.equal(z, torch.randn(100, LATENT_DIM, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(z[:30], fixed_latents(7, 30, LATENT_DIM))
    assert not torch.equal(z, fixed_latents(8, 100, LATENT_DIM))


def test_real_test_images_score_low_and_noise_high(scores):
    # Seen with the shipped classifier: real 5.6, blurred 305, single digit 814, noise 1211.
    real, noise = scores["real"], scores["noise"]
    assert real.num_samples == 2000 and real.seconds > 0
    assert real.fid < 15.0, real
    assert noise.fid > 50 * real.fid, (real, noise)
    assert noise.kid > 100 * max(real.kid, real.kid_std), (real, noise)


def test_degraded_sets_score_in_between(scores):
    real, noise = scores["real"], scores["noise"]
    for name in ("blurred", "single digit"):
        degraded = scores[name]
        assert 20 * real.fid < degraded.fid < noise.fid, (name, scores)
        assert real.kid + 3 * degraded.kid_std < degraded.kid < noise.kid, (name, scores)


def test_evaluate_generator_on_fixed_latents(evaluator, mnist_test):
    generator = BankGenerator(mnist_test.images).train()
    first = evaluator.evaluate(generator, 1000)
    assert generator.training, "the generator's mode is restored"
    assert generator.saw_grad_enabled and not any(generator.saw_grad_enabled)
    assert not any(generator.saw_training)
    assert first.num_samples == 1000 and first.fid < 20.0, first
    # The latents do not depend on the batch size, so neither does the score.
    again = evaluator.evaluate(generator.eval(), 1000, batch_size=128)
    assert not generator.training
    assert again.fid == pytest.approx(first.fid, rel=1e-5)
    assert again.kid == pytest.approx(first.kid, rel=1e-4, abs=1e-7)


def test_kid_is_skipped_when_not_asked_for(evaluator, mnist_test):
    generator = BankGenerator(mnist_test.images)
    with_kid = evaluator.evaluate(generator, 1000)
    fid_only = evaluator.evaluate(generator, 1000, kid=False)
    assert fid_only.fid == pytest.approx(with_kid.fid, rel=1e-6)
    assert math.isnan(fid_only.kid) and math.isnan(fid_only.kid_std)
    assert math.isfinite(with_kid.kid)


def test_non_finite_images_score_infinity(evaluator):
    result = evaluator.evaluate(NaNGenerator(), 100)
    assert math.isinf(result.fid) and math.isinf(result.kid)


def test_real_statistics_are_cached_per_sample_size(evaluator):
    assert evaluator.real_stats(1000) is evaluator.real_stats(1000)
    assert evaluator.real_stats(500).num_samples == 500


def test_resized_rgb_mnist_uses_the_shipped_classifier(mnist_dir, evaluator, tmp_path):
    """MNIST at 32×32 RGB: same weights (resized inside), statistics of the resized real data."""
    real = load_dataset(
        "mnist", data_dir=mnist_dir, download=False, limit=2000, resolution=32, channels=3
    )
    test = load_dataset(
        "mnist",
        split="test",
        data_dir=mnist_dir,
        download=False,
        limit=1000,
        resolution=32,
        channels=3,
    )
    resized = Evaluator(real, cache_dir=tmp_path, latent_dim=LATENT_DIM, kid_subsets=5)
    assert resized.extractor.digest == evaluator.extractor.digest
    assert resized.evaluate_images(to_unit_range(test.images)).fid < 20.0


def test_evaluator_for_a_dataset_without_labels_needs_another_extractor(mnist_train, tmp_path):
    from ganhpo.errors import ExtractorError

    faces = ImageDataset.from_images("faces", mnist_train.images[:10])
    with pytest.raises(ExtractorError, match="inception"):
        Evaluator(faces, cache_dir=tmp_path, latent_dim=LATENT_DIM)


@pytest.fixture(scope="module")
def mnist_test_all(mnist_dir) -> ImageDataset:
    return load_dataset("mnist", split="test", data_dir=mnist_dir, download=False)


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [
        # Far from 0 FID is a smooth function of the sample's moments and the jackknife is
        # unbiased (measured at 2000 samples: 3.46 vs 3.68 across draws near FID 390).
        pytest.param("noisy", 0.5, 2.0, id="far-from-zero"),
        # Near 0 the distance's floor makes the jackknife conservative (measured at 2000
        # samples: 0.65 vs 0.34 across draws near FID 2).
        pytest.param("real", 0.7, 3.5, id="near-zero"),
    ],
)
def test_fid_std_matches_the_spread_over_new_draws(evaluator, mnist_test_all, kind, low, high):
    """The std recorded with each evaluation, from one sample, against the std of FID over ten
    disjoint samples of real test images (plain or noisy) scored against the same reference."""
    generator = torch.Generator().manual_seed(3)
    order = torch.randperm(len(mnist_test_all), generator=generator)
    fids, stds = [], []
    for draw in range(10):
        images = to_unit_range(mnist_test_all.images[order[draw * 1000 : (draw + 1) * 1000]])
        if kind == "noisy":
            noise = torch.randn(images.shape, generator=generator)
            images = (images + 0.6 * noise).clamp(-1.0, 1.0)
        result = evaluator.evaluate_images(images, kid=False)
        fids.append(result.fid)
        stds.append(result.fid_std)
    across_draws = float(torch.tensor(fids).std())
    jackknife = float(torch.tensor(stds).median())
    assert low * across_draws <= jackknife <= high * across_draws, (fids, stds)


def test_fid_std_needs_twenty_samples(evaluator, mnist_test):
    assert math.isnan(evaluator.evaluate_images(mnist_test.images[:19], kid=False).fid_std)
    assert evaluator.evaluate_images(mnist_test.images[:20], kid=False).fid_std > 0
