"""A held-out share of the train split: never trained on, never in a search's FID; what a study
on a dataset without a test split is tested on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from procs import spec_variant

from ganhpo.data import (
    HOLDOUT_SPLIT,
    dataset_size,
    holdout_indices,
    image_hashes,
    load_dataset,
    shipped_mnist_subset_dir,
)
from ganhpo.errors import ConfigError
from ganhpo.storage import study_attr
from ganhpo.study import SPEC_ATTR


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    subset = load_dataset("mnist-subset", data_dir=shipped_mnist_subset_dir())
    path = tmp_path / "digits.npz"
    np.savez(path, images=subset.images[:, 0].numpy(), labels=subset.labels.numpy())
    return path


def test_train_and_holdout_split_the_images_between_them(npz: Path) -> None:
    whole = load_dataset("npz", path=npz)
    kept = load_dataset("npz", path=npz, holdout=0.1)
    held = load_dataset("npz", path=npz, split=HOLDOUT_SPLIT, holdout=0.1)
    assert (
        (len(kept), len(held))
        == (1800, 200)
        == (
            dataset_size("npz", path=npz, holdout=0.1),
            dataset_size("npz", path=npz, split=HOLDOUT_SPLIT, holdout=0.1),
        )
    )
    assert held.split == HOLDOUT_SPLIT
    # Disjoint, together all of them, each image with its own label.
    ours, theirs = set(image_hashes(kept.images)), set(image_hashes(held.images))
    assert not ours & theirs and ours | theirs == set(image_hashes(whole.images))
    index = holdout_indices(2000, 0.1)
    assert (held.images == whole.images[index]).all()
    assert (held.labels == whole.labels[index]).all()
    # A seeded sample, not the last images: the same on every call, from every class.
    assert (holdout_indices(2000, 0.1) == index).all() and index.max() > 1000
    assert len(set(held.labels.tolist())) == 10
    # A limit caps what the split keeps, after the held-out images are set aside.
    limited = load_dataset("npz", path=npz, holdout=0.1, limit=50)
    assert (limited.images == kept.images[:50]).all()


def test_a_holdout_is_of_the_train_split_only(npz: Path) -> None:
    with pytest.raises(ConfigError, match="needs a holdout share"):
        load_dataset("npz", path=npz, split=HOLDOUT_SPLIT)
    with pytest.raises(ConfigError, match="not of 'test'"):
        load_dataset("mnist-subset", split="test", holdout=0.1)
    with pytest.raises(ConfigError, match="from 0 to below 1"):
        holdout_indices(10, 1.0)


def test_a_study_on_a_dataset_without_a_test_split_sets_a_tenth_aside(
    npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created with 10 % held out (stored in its spec), its workers train on the rest, and
    'study test' scores on those 10 %; a dataset with a test split, or a spec that says
    holdout = 0, keeps all of its train split."""
    import optuna

    from ganhpo.cli import main
    from ganhpo.results import test_reference
    from ganhpo.study import study_spec
    from ganhpo.train import load_training_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    specs = {
        "npz": {'name = "mnist-subset"': f'name = "npz"\npath = "{npz}"'},
        "npz-none": {'name = "mnist-subset"': f'name = "npz"\npath = "{npz}"\nholdout = 0'},
        "subset": {},
    }
    for name, changes in specs.items():
        spec = spec_variant(tmp_path, {**changes, 'name = "quick"': f'name = "{name}"'},
                            name=f"{name}.toml")  # fmt: skip
        assert main(["study", "create", str(spec), "--storage", storage, "-q"]) == 0

    def study(name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=storage)

    assert study_attr(study("npz"), SPEC_ATTR)["dataset"]["holdout"] == 0.1  # stored
    ds = study_spec(study("npz")).base.dataset
    assert len(load_training_data(ds, None)) == 1800  # what its workers train and search on
    held, train = test_reference(study("npz"))
    assert (held.split, len(held), len(train)) == (HOLDOUT_SPLIT, 200, 1800)
    assert not set(image_hashes(held.images)) & set(image_hashes(train.images))

    assert study_spec(study("subset")).base.dataset.holdout is None  # it has a test split
    assert test_reference(study("subset"))[0].split == "test"
    assert study_spec(study("npz-none")).base.dataset.holdout == 0
    with pytest.raises(ConfigError, match="set none of its images aside"):
        test_reference(study("npz-none"))


def test_a_study_created_before_the_holdout_is_loaded_as_it_is(
    npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'study create --load-if-exists' of the same spec finds a study whose stored spec has no
    holdout (made before ganhpo set one) the same study, and leaves it as it was."""
    import optuna

    from ganhpo.cli import main
    from ganhpo.storage import set_study_attr

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    spec = spec_variant(tmp_path, {'name = "mnist-subset"': f'name = "npz"\npath = "{npz}"'})
    assert main(["study", "create", str(spec), "--storage", storage, "-q"]) == 0
    study = optuna.load_study(study_name="quick", storage=storage)
    old = study_attr(study, SPEC_ATTR)
    del old["dataset"]["holdout"]
    set_study_attr(study, SPEC_ATTR, old)  # as a study created before holdout existed
    argv = ["study", "create", str(spec), "--storage", storage, "--load-if-exists", "-q"]
    assert main(argv) == 0
    stored = study_attr(optuna.load_study(study_name="quick", storage=storage), SPEC_ATTR)
    assert "holdout" not in stored["dataset"]
