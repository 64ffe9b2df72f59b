"""Feature extractors: the shipped MNIST classifier, training on demand, the inception error."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ganhpo.data import ImageDataset, load_dataset, to_unit_range
from ganhpo.errors import DataError, ExtractorError, UnknownNameError
from ganhpo.metrics import (
    EXTRACTORS,
    SHIPPED_WEIGHTS_DIR,
    ClassifierExtractor,
    FeatureExtractor,
    InceptionExtractor,
    check_extractor,
    classifier_accuracy,
    extract_features,
    get_extractor,
    load_classifier,
)
from ganhpo.metrics._features import split_holdout

WEIGHTS = SHIPPED_WEIGHTS_DIR / "mnist_classifier.pt"
RECORD = SHIPPED_WEIGHTS_DIR / "mnist_classifier.json"


def test_shipped_classifier_matches_its_record():
    record = json.loads(RECORD.read_text())
    data = WEIGHTS.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert record["test_accuracy"] >= 0.985
    assert record["test_images"] == 10000
    assert record["command"].startswith("python scripts/train_classifier.py --dataset mnist")
    for key in ("seed", "epochs", "torch_version"):
        assert key in record
    assert len(data) < 600_000  # small enough to ship in the package
    extractor = get_extractor("classifier")
    assert isinstance(extractor, FeatureExtractor)
    assert extractor.digest == record["sha256"]
    assert (extractor.name, extractor.dim) == ("classifier", 128)


def test_shipped_classifier_accuracy_on_real_test_images(mnist_test):
    model, _ = load_classifier(WEIGHTS)
    assert classifier_accuracy(model, mnist_test) >= 0.98


def test_features_are_deterministic_float32_without_grad(mnist_test):
    extractor = get_extractor("classifier", dataset=mnist_test)
    images = to_unit_range(mnist_test.images[:64]).requires_grad_(True)
    features = extractor(images)
    assert features.shape == (64, 128) and features.dtype == torch.float32
    assert not features.requires_grad
    assert torch.equal(features, extractor(images))
    assert not extractor.network.training
    # Features of an image do not depend on the rest of its batch (eval-mode batch norm).
    torch.testing.assert_close(extractor(images[:5]), features[:5], rtol=1e-5, atol=1e-5)


def test_same_feature_space_for_every_mnist_variant(mnist_test):
    """RGB copies and resized MNIST use the shipped weights; RGB gray equals gray."""
    gray = mnist_test.images[:100]
    rgb = ImageDataset.from_images("mnist", gray.expand(-1, 3, -1, -1).contiguous())
    extractor = get_extractor("classifier", dataset=rgb)
    assert extractor.digest == get_extractor("classifier", dataset=mnist_test).digest
    torch.testing.assert_close(
        extract_features(extractor, rgb.images),
        extract_features(extractor, gray),
        atol=1e-4,
        rtol=1e-4,
    )
    larger = torch.nn.functional.interpolate(
        to_unit_range(gray), size=(32, 32), mode="bilinear", align_corners=False
    )
    features = extract_features(extractor, larger)
    assert features.shape == (100, 128) and torch.isfinite(features).all()


def test_shipped_mnist_subset_uses_the_shipped_classifier(tmp_path):
    subset = load_dataset("mnist-subset", split="test", limit=10)
    extractor = get_extractor("classifier", dataset=subset, cache_dir=tmp_path)
    assert extractor.digest == json.loads(RECORD.read_text())["sha256"]
    assert not (tmp_path / "classifiers").exists()


def _sorted_by_label(name: str, dataset: ImageDataset, n: int) -> ImageDataset:
    """The first ``n`` images of ``dataset`` sorted by label, as a ``.npz`` export often is."""
    assert dataset.labels is not None
    order = torch.argsort(dataset.labels[:n], stable=True)
    return ImageDataset.from_images(name, dataset.images[order], labels=dataset.labels[order])


def test_classifier_trains_once_on_other_labelled_data_and_is_cached(mnist_train, tmp_path):
    digits = _sorted_by_label("my-digits", mnist_train, 600)
    extractor = get_extractor("classifier", dataset=digits, cache_dir=tmp_path)
    cached = list((tmp_path / "classifiers").glob("*.pt"))
    assert len(cached) == 1 and digits.digest[:20] in cached[0].name
    assert extractor.digest == hashlib.sha256(cached[0].read_bytes()).hexdigest()
    info = json.loads(cached[0].with_suffix(".json").read_text())
    # 540 class-sorted images, at least 100 steps. A hold-out of the last images held only 9s
    # the classifier never saw (accuracy 0.0).
    assert info["holdout_accuracy"] >= info["min_holdout_accuracy"] >= 0.8
    assert 50 <= info["holdout_images"] <= 60 and info["seed"] == 0  # 10 % of each class
    mtime = cached[0].stat().st_mtime_ns
    again = get_extractor("classifier", dataset=digits, cache_dir=tmp_path)
    assert again.digest == extractor.digest and cached[0].stat().st_mtime_ns == mtime
    assert extractor(to_unit_range(digits.images[:4])).shape == (4, 128)


def test_classifier_needs_labels_for_other_datasets(mnist_train, tmp_path):
    unlabelled = ImageDataset.from_images("faces", mnist_train.images[:50])
    with pytest.raises(ExtractorError, match=r"needs labels.*'inception'"):
        get_extractor("classifier", dataset=unlabelled, cache_dir=tmp_path)


def test_holdout_is_a_seeded_split_stratified_by_class(mnist_train):
    digits = _sorted_by_label("my-digits", mnist_train, 2000)
    assert digits.labels is not None
    train, holdout = split_holdout(digits, seed=0)
    assert train.labels is not None and holdout.labels is not None
    assert len(train) + len(holdout) == 2000 and len(holdout) == pytest.approx(200, abs=10)
    per_class = torch.bincount(digits.labels, minlength=10)
    held = torch.bincount(holdout.labels, minlength=10)
    assert bool((held >= 1).all()), held.tolist()  # every class is measured ...
    assert bool((held == (per_class.double() * 0.1).floor().long()).all())  # ... in its share
    assert bool((torch.bincount(train.labels, minlength=10) == per_class - held).all())
    # No image in both parts: together they are the dataset (the labels agree too).
    together = torch.cat([train.images, holdout.images]).flatten(1)
    assert len(torch.unique(together, dim=0)) == len(torch.unique(digits.images.flatten(1), dim=0))
    again, _ = split_holdout(digits, seed=0)
    other, _ = split_holdout(digits, seed=1)
    assert torch.equal(again.images, train.images) and not torch.equal(other.images, train.images)


def test_one_class_is_refused_before_training(mnist_train, tmp_path):
    assert mnist_train.labels is not None
    ones = mnist_train.images[mnist_train.labels == 1]
    only_ones = ImageDataset.from_images("ones", ones, labels=torch.ones(len(ones)))
    with pytest.raises(ExtractorError, match=r"one class.*'inception'") as caught:
        get_extractor("classifier", dataset=only_ones, cache_dir=tmp_path)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "classifiers").exists()


def test_one_image_per_class_is_refused_before_training(mnist_train, tmp_path):
    assert mnist_train.labels is not None
    first_of_each = torch.stack([torch.nonzero(mnist_train.labels == c)[0, 0] for c in range(10)])
    tiny = ImageDataset.from_images(
        "tiny", mnist_train.images[first_of_each], labels=torch.arange(10)
    )
    with pytest.raises(ExtractorError, match=r"only 1 image.*at least 10 per class.*'inception'"):
        get_extractor("classifier", dataset=tiny, cache_dir=tmp_path)
    assert not (tmp_path / "classifiers").exists()


def test_classifier_below_the_accuracy_threshold_is_refused_and_not_cached(mnist_train, tmp_path):
    """Labels unrelated to the images: no classifier beats chance, so its features mean nothing."""
    coin = torch.randint(0, 2, (200,), generator=torch.Generator().manual_seed(0))
    noise = ImageDataset.from_images("coin-flips", mnist_train.images[:200], labels=coin)
    with pytest.raises(ExtractorError, match=r"labels only \d+\.\d% .*needs 80%.*'inception'"):
        get_extractor("classifier", dataset=noise, cache_dir=tmp_path)
    assert list((tmp_path / "classifiers").glob("*.pt")) == []


def test_unknown_extractor_lists_the_valid_names():
    assert EXTRACTORS.names() == ["classifier", "inception"]
    with pytest.raises(UnknownNameError, match=r"did you mean 'classifier'.*classifier, inception"):
        get_extractor("clasifier")


@pytest.mark.skipif(
    importlib.util.find_spec("pytorch_fid") is not None, reason="pytorch-fid is installed"
)
def test_inception_without_pytorch_fid_says_how_to_install_it():
    with pytest.raises(ExtractorError, match=r"pip install 'ganhpo\[inception\]'"):
        get_extractor("inception")


def test_broken_weight_file_is_an_extractor_error(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(ExtractorError, match="delete the file"):
        ClassifierExtractor.from_file(broken)


# --- refusals that name what works for this dataset ------------------------------------------

FAKE_PACKAGES = ("pytorch_fid", "torchvision")


@pytest.fixture
def clean_imports() -> Iterator[None]:
    """Forget, afterwards, whatever a test imported of pytorch-fid and torchvision."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in FAKE_PACKAGES:
            del sys.modules[name]


@pytest.fixture
def no_pytorch_fid(monkeypatch: pytest.MonkeyPatch, clean_imports: None) -> None:
    """pytorch-fid not importable, whether or not it is installed (None in sys.modules makes
    Python's import fail with ModuleNotFoundError, as for a package that is not there)."""
    for name in ("pytorch_fid", "pytorch_fid.inception"):  # also when imported before
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def broken_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_imports: None
) -> None:
    """A torchvision that fails on import as the CUDA build does next to a CPU torch, and a
    pytorch_fid whose inception module imports it (as the real one does)."""
    root = tmp_path / "site"
    (root / "torchvision").mkdir(parents=True)
    (root / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    (root / "pytorch_fid").mkdir()
    (root / "pytorch_fid" / "__init__.py").write_text("")
    (root / "pytorch_fid" / "inception.py").write_text("import torchvision\n")
    for name in FAKE_PACKAGES:  # the fakes, not an installed copy
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(root))


def one_line(error: pytest.ExceptionInfo[ExtractorError]) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_broken_torchvision_is_one_extractor_error_with_the_fix(broken_torchvision, mnist_train):
    with pytest.raises(ExtractorError) as caught:
        get_extractor("inception", dataset=mnist_train)
    message = one_line(caught)
    assert (
        f"torchvision does not match torch {torch.__version__} (operator torchvision::nms does "
        "not exist); install the torchvision built for this torch" in message
    )
    assert message.endswith(", or use extractor 'classifier'")  # MNIST: the classifier works
    assert isinstance(caught.value.__cause__, RuntimeError)  # the traceback is kept, chained


def test_broken_torchvision_is_refused_before_training(broken_torchvision):
    with pytest.raises(ExtractorError, match="install the torchvision built for this torch"):
        check_extractor("inception", dataset="mnist-subset")
    faces = ImageDataset.from_images("faces", torch.zeros((20, 3, 8, 8), dtype=torch.uint8))
    with pytest.raises(ExtractorError) as caught:
        get_extractor("classifier", dataset=faces)
    assert one_line(caught).endswith(
        "use extractor 'inception' (after installing the torchvision built for torch "
        f"{torch.__version__})"
    )


def test_missing_inception_on_unlabelled_photos_names_only_the_install(no_pytorch_fid):
    photos = ImageDataset.from_images("image-folder", torch.zeros((20, 3, 8, 8), dtype=torch.uint8))
    with pytest.raises(ExtractorError) as caught:
        get_extractor("inception", dataset=photos)
    message = one_line(caught)
    assert message.endswith("pytorch-fid is not installed; run: pip install 'ganhpo[inception]'")
    assert "classifier" not in message  # it cannot work without labels
    with pytest.raises(ExtractorError) as caught:
        get_extractor("classifier", dataset=photos)
    assert one_line(caught).endswith(
        "has none; use extractor 'inception' (pip install 'ganhpo[inception]')"
    )


def test_missing_inception_on_labelled_data_offers_the_classifier(no_pytorch_fid, mnist_train):
    with pytest.raises(ExtractorError, match=r"\[inception\]', or use extractor 'classifier'$"):
        get_extractor("inception", dataset=mnist_train)
    with pytest.raises(ExtractorError, match=r"\[inception\]', or use extractor 'classifier'$"):
        check_extractor("inception", dataset="fashion-mnist")


def write_npz(path: Path, *, labels: bool) -> Path:
    images = np.zeros((40, 8, 8), dtype=np.uint8)
    arrays = {"images": images, **({"labels": np.arange(40) % 2} if labels else {})}
    np.savez(path, **arrays)
    return path


def test_check_extractor_refuses_a_classifier_without_labels(no_pytorch_fid, tmp_path):
    # An image folder never has labels.
    (tmp_path / "faces").mkdir()
    with pytest.raises(ExtractorError) as caught:
        check_extractor("classifier", dataset="image-folder", path=tmp_path / "faces")
    assert one_line(caught) == (
        f"the classifier extractor needs labels to train on, and dataset 'image-folder' "
        f"({tmp_path / 'faces'}) has none; use extractor 'inception' "
        "(pip install 'ganhpo[inception]')"
    )
    # Not on this machine: the folder is named first (a mistyped path is the likelier mistake).
    with pytest.raises(DataError) as missing:
        check_extractor("classifier", dataset="image-folder", path=tmp_path / "elsewhere")
    assert one_line(missing).startswith(
        f"image folder {tmp_path / 'elsewhere'} does not exist: fix [dataset] path; also, "
        "the classifier extractor needs labels"
    )
    unlabelled = write_npz(tmp_path / "unlabelled.npz", labels=False)
    with pytest.raises(ExtractorError, match=r"or store one integer class label per image"):
        check_extractor("classifier", dataset="npz", path=unlabelled)
    just_images = tmp_path / "images.npy"
    np.save(just_images, np.zeros((40, 8, 8), dtype=np.uint8))
    with pytest.raises(ExtractorError, match="has none"):
        check_extractor("classifier", dataset="npz", path=just_images)


def test_check_extractor_passes_what_may_work(tmp_path):
    for dataset in ("mnist", "mnist-subset", "fashion-mnist"):
        check_extractor("classifier", dataset=dataset)
    check_extractor("classifier", dataset="npz", path=write_npz(tmp_path / "l.npz", labels=True))
    # Not on this machine, or not readable here: the workers may have it (and load_dataset
    # says what is wrong with it).
    check_extractor("classifier", dataset="npz", path=tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    check_extractor("classifier", dataset="npz", path=tmp_path / "junk.npz")
    with pytest.raises(UnknownNameError, match="choose one of: classifier, inception"):
        check_extractor("vgg", dataset="mnist")


class _InputRecorder(torch.nn.Module):
    """Stands in for pytorch-fid's InceptionV3 (not installable beside this CPU torch): returns
    [pool features] like it and keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.seen.append(x)
        return [x.mean(dim=(2, 3), keepdim=True).repeat(1, 683, 1, 1)[:, :2048]]


def test_inception_gets_gray_and_small_images_as_pytorch_fid_gives_them():
    """pytorch-fid reads every image as RGB (gray repeated to three channels) in [0, 1] and
    leaves the resizing to 299×299 to the network (resize_input=True): 8×8 gray images go in
    at 8×8, as three equal channels."""
    network = _InputRecorder()
    extractor = InceptionExtractor(network, digest="0" * 64)
    gray = torch.linspace(-1, 1, 2 * 8 * 8).view(2, 1, 8, 8)
    features = extractor(gray)
    (seen,) = network.seen
    assert seen.shape == (2, 3, 8, 8) and features.shape == (2, 2048)
    assert torch.equal(seen[:, 0], seen[:, 1]) and torch.equal(seen[:, 0], seen[:, 2])
    assert torch.allclose(seen[:, 0], (gray[:, 0] + 1) / 2)
    with pytest.raises(ExtractorError, match="takes 1 or 3 channels; got 2"):
        extractor(torch.zeros(1, 2, 8, 8))
