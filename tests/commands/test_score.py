"""``ganhpo score``: FID of images made elsewhere, through the code path trials use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganhpo.cli import main
from ganhpo.data import load_dataset, shipped_mnist_subset_dir
from ganhpo.metrics import Evaluator

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mnist_test_images(mnist_dir: Path) -> np.ndarray:
    test = load_dataset("mnist", split="test", data_dir=mnist_dir, download=False, limit=1000)
    return test.images.numpy()[:, 0]  # [1000, 28, 28] uint8


def noisy(images: np.ndarray, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, sigma, images.shape)
    return np.clip(images + noise, 0, 255).astype(np.uint8)


def test_real_vs_real_is_near_zero_and_a_noisy_copy_is_higher(
    capsys, tmp_path, mnist_dir, mnist_test_images
) -> None:
    np.savez(tmp_path / "real.npz", images=mnist_test_images)
    np.savez(tmp_path / "noisy.npz", images=noisy(mnist_test_images, 40.0))
    cache = str(tmp_path / "cache")
    scores = {}
    for name in ("real", "noisy"):
        code, out, err = run(
            capsys, "score", str(tmp_path / f"{name}.npz"), "--dataset", "mnist", "--split",
            "test", "--data-dir", str(mnist_dir), "--cache-dir", cache, "--json", "-q",
        )  # fmt: skip
        assert code == 0, err
        scores[name] = json.loads(out)
    real, noise = scores["real"], scores["noisy"]
    # 1000 test images against another random 1000 of the same split: measured 6.3 ± 1.6.
    assert real["fid"] < 12.0 and real["num_samples"] == real["real_samples"] == 1000
    assert noise["fid"] > real["fid"] + 10 * (real["fid_std"] + noise["fid_std"])
    assert noise["kid"] > real["kid"]
    assert real["reference"] == "mnist/test" and real["extractor"] == "classifier"


def test_study_scores_equal_the_evaluator_of_its_trials(capsys, tmp_path, monkeypatch) -> None:
    """Against a study: the numbers its workers would report for these images, exactly."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    assert run(capsys, "study", "create", str(ROOT / "studies" / "quick.toml"))[0] == 0
    subset = load_dataset("mnist-subset", data_dir=shipped_mnist_subset_dir())
    fake = torch.from_numpy(noisy(subset.images[:600, 0].numpy(), 30.0)).unsqueeze(1)
    folder = tmp_path / "pngs"
    folder.mkdir()
    from PIL import Image

    for i, image in enumerate(fake[:, 0].numpy()):
        Image.fromarray(image, mode="L").save(folder / f"{i:04d}.png")
    cache = tmp_path / "cache"
    code, out, err = run(
        capsys, "score", str(folder), "--study", "quick", "--cache-dir", str(cache), "--json"
    )
    assert code == 0, err
    scored = json.loads(out)
    evaluator = Evaluator(subset, extractor="classifier", cache_dir=cache, seed=0, latent_dim=1)
    expected = evaluator.evaluate_images(fake)
    assert scored["fid"] == expected.fid and scored["fid_std"] == expected.fid_std
    assert scored["kid"] == expected.kid and scored["kid_std"] == expected.kid_std
    assert scored["num_samples"] == 600 and scored["reference"] == "mnist-subset/train"
    # The PNGs are read at their native size and channels: 28×28 gray, as written.
    assert load_dataset("image-folder", path=folder).shape == (1, 28, 28)


def test_the_same_images_in_another_order_score_the_same(capsys, tmp_path) -> None:
    """A class-sorted .npz and the same images shuffled: one FID, one std. The jackknife's
    groups were runs of consecutive images, one class each: ± 11.5 against ± 0.33."""
    subset = shipped_mnist_subset_dir()
    test = load_dataset("mnist-subset", split="test", data_dir=subset)
    assert test.labels is not None
    images, labels = test.images[:, 0].numpy(), test.labels.numpy()
    np.savez(tmp_path / "sorted.npz", images=images[np.argsort(labels, kind="stable")])
    np.savez(tmp_path / "shuffled.npz", images=images[np.random.default_rng(0).permutation(1000)])
    scores = {}
    for name in ("sorted", "shuffled"):
        code, out, err = run(
            capsys, "score", str(tmp_path / f"{name}.npz"), "--dataset", "mnist-subset",
            "--cache-dir", str(tmp_path / "cache"), "--json", "-q",
        )  # fmt: skip
        assert code == 0, err
        scores[name] = json.loads(out)
    by_class, shuffled = scores["sorted"], scores["shuffled"]
    assert by_class["fid"] == pytest.approx(shuffled["fid"], rel=1e-9)
    assert by_class["fid_std"] == pytest.approx(shuffled["fid_std"], rel=1e-6)
    assert by_class["kid"] == pytest.approx(shuffled["kid"], rel=1e-6)  # the same subsets too
    assert 0 < shuffled["fid_std"] < 0.2 * shuffled["fid"]


def test_sixteen_bit_pngs_score_as_their_eight_bit_twins(capsys, tmp_path) -> None:
    """The same pixels in 16-bit and 8-bit PNGs: one FID (16-bit ones scored 856, clipped to
    black and white, where the 8-bit ones scored 2.6)."""
    from PIL import Image

    subset = shipped_mnist_subset_dir()
    test = load_dataset("mnist-subset", split="test", data_dir=subset).images[:500, 0].numpy()
    for bits in (8, 16):
        (tmp_path / str(bits)).mkdir()
    for i, image in enumerate(test):
        Image.fromarray(image, mode="L").save(tmp_path / "8" / f"{i:03d}.png")
        Image.fromarray(image.astype(np.uint16) * 257).save(tmp_path / "16" / f"{i:03d}.png")
    scores = {}
    for bits in ("8", "16"):
        code, out, err = run(
            capsys, "score", str(tmp_path / bits), "--dataset", "mnist-subset",
            "--cache-dir", str(tmp_path / "cache"), "--json", "--no-kid", "-q",
        )  # fmt: skip
        assert code == 0, err
        scores[bits] = json.loads(out)["fid"]
    assert scores["16"] == scores["8"] < 20.0


def one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganhpo: error: "), err
    return lines[0]


def subset_images(split: str) -> np.ndarray:
    """The shipped MNIST subset's images of ``split`` as uint8 [N, 28, 28]."""
    subset = load_dataset("mnist-subset", split=split, data_dir=shipped_mnist_subset_dir())
    return subset.images[:, 0].numpy()


def test_too_few_images_are_refused(capsys, tmp_path) -> None:
    """5 images scored FID 583.7 (rc 0): below twice the feature dimension (256 for the
    classifier's 128) the covariance is singular or nearly and FID mostly its bias."""
    images = subset_images("test")
    np.savez(tmp_path / "few.npz", images=images[:255])
    np.savez(tmp_path / "enough.npz", images=images[:256])
    reference = ["--dataset", "mnist-subset", "--cache-dir", str(tmp_path / "cache"), "-q"]
    line = one_error_line(*run(capsys, "score", str(tmp_path / "few.npz"), *reference))
    assert "holds only 255 image(s)" in line and "needs at least 256 images per side" in line
    line = one_error_line(
        *run(capsys, "score", str(tmp_path / "enough.npz"), *reference, "--samples", "100")
    )
    assert "--samples 100 is too few" in line and "ask for 256 or more" in line
    code, out, err = run(capsys, "score", str(tmp_path / "enough.npz"), *reference, "--no-kid")
    assert code == 0 and out.startswith("FID "), err


def test_images_of_another_shape_than_the_studys_are_refused(capsys, tmp_path, monkeypatch):
    """64x64 RGB noise scored FID 1258.5 (rc 0) against a study whose generators make 28x28
    gray images; against a dataset, the difference is warned about."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    assert run(capsys, "study", "create", str(ROOT / "studies" / "quick.toml"))[0] == 0
    noise = np.random.default_rng(0).integers(0, 256, (300, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise)
    cache = ["--cache-dir", str(tmp_path / "cache"), "--no-kid", "-q"]
    line = one_error_line(*run(capsys, "score", "noise.npz", "--study", "quick", *cache))
    assert "noise.npz holds 64x64 RGB images and study 'quick' makes 28x28 gray ones" in line
    code, out, err = run(capsys, "score", "noise.npz", "--dataset", "mnist-subset", *cache)
    assert code == 0 and out.startswith("FID ")
    (warning,) = err.splitlines()
    assert "holds 64x64 RGB images and the reference 28x28 gray ones" in warning


def test_images_the_reference_holds_are_warned_about(capsys, tmp_path) -> None:
    """A set scored against a split that holds it gets FID near 0, and a warning saying so;
    images the reference does not hold get none."""
    np.savez(tmp_path / "test.npz", images=subset_images("test"))
    mixed = np.concatenate([subset_images("train")[:200], subset_images("test")[:100]])
    np.savez(tmp_path / "mixed.npz", images=mixed)
    options = ["--dataset", "mnist-subset", "--cache-dir", str(tmp_path / "cache"), "--no-kid"]
    # -q: the result on stdout, warnings alone on stderr.
    code, out, err = run(capsys, "score", str(tmp_path / "test.npz"), *options, "-q")
    assert code == 0 and out.startswith("FID ") and err == ""  # the train split: disjoint
    code, out, err = run(
        capsys, "score", str(tmp_path / "test.npz"), *options, "--split", "test", "-q"
    )
    assert code == 0 and out.startswith("FID ")
    (warning,) = err.splitlines()
    assert warning.startswith(
        "1000 of the 1000 images scored are also in the reference mnist-subset/test "
        "(identical pixels): FID is biased low"
    )
    code, out, err = run(capsys, "score", str(tmp_path / "mixed.npz"), *options, "-q")
    assert code == 0
    (warning,) = err.splitlines()
    assert warning.startswith("200 of the 300 images scored are also in the reference")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.npz", "--dataset", "mnist"], "missing.npz does not exist; give a folder"),
        (["notes.txt", "--dataset", "mnist"], "notes.txt is neither a folder nor an .npz/.npy"),
        (
            ["real.npz", "--against", "real.npz"],
            "the classifier extractor needs labels to train on, and dataset 'npz' (real.npz) "
            "has none; use extractor 'inception'",
        ),
        (["real.npz"], "one of the arguments --study --dataset --against is required"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "real.npz", images=np.zeros((30, 28, 28), np.uint8))
    (tmp_path / "notes.txt").write_text("not images")
    code, out, err = run(capsys, "score", *args)
    assert code in (1, 2) and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
