from __future__ import annotations

from pathlib import Path

import pytest

from ganhpo.errors import ConfigError, UnknownNameError
from ganhpo.spec import load_train_config, parse_train_config
from ganhpo.train import TrainConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_full_config_round_trip(tmp_path: Path) -> None:
    config = load_train_config(
        write(
            tmp_path,
            """
seed = 7
device = "cpu"
[dataset]
name = "mnist"
resolution = 32
[model]
width = 16
latent_dim = 32
spectral_norm = true
[train]
steps = 100
lr_g = 1e-4
lr_d = 4e-4
loss = "hinge"
penalty = "r1"
r1_gamma = 0.5
ema = true
[eval]
every = 50
samples = 500
""",
        )
    )
    assert isinstance(config, TrainConfig)
    assert config.seed == 7 and config.dataset.resolution == 32
    assert config.model.spectral_norm and config.train.lr_d == 4e-4
    assert config.train.penalty_weight == 0.5
    assert config.eval.final_samples == 10000  # default kept


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_train_config(write(tmp_path, "")) == TrainConfig()


def test_integer_accepted_for_float() -> None:
    assert parse_train_config({"train": {"gp_weight": 5}}).train.gp_weight == 5.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"lr_gg": 1e-3}}, r"unknown key 'train.lr_gg'.*did you mean 'lr_g'"),
        ({"trian": {}}, r"unknown key 'trian' in the top level; did you mean 'train'"),
        ({"train": {"steps": "10"}}, r"train.steps = '10' must be an integer"),
        ({"train": {"steps": 1.5}}, r"train.steps = 1.5 must be an integer"),
        ({"train": {"ema": 1}}, r"train.ema = 1 must be true or false"),
        ({"train": {"lr_g": 0.0}}, r"train.lr_g = 0.0 is invalid; use a value in \(0, 1\)"),
        ({"train": {"beta2": 1.0}}, r"train.beta2 = 1.0 is invalid"),
        (
            {"dataset": {"resolution": 30}},
            r"dataset.resolution = 30 is invalid; use a multiple of 4",
        ),
        ({"dataset": {"channels": 2}}, r"dataset.channels = 2 is invalid; use 1 or 3"),
        ({"device": "tpu"}, r"device = 'tpu' is invalid"),
        ({"model": "dcgan"}, r"model must be a table"),
        (
            {"dataset": {"name": "mnist-subset", "split": "test"}, "train": {"batch_size": 1024}},
            r"train.batch_size = 1024 is larger than the dataset \(mnist-subset, test split: "
            r"1000 images\); use a batch size of at most 1000",
        ),
        (
            {"dataset": {"limit": 32}},
            r"train.batch_size = 64 is larger than the dataset \(mnist, train split: 32 images\); "
            r"use a batch size of at most 32 or raise dataset.limit",
        ),
        ({"eval": {"samples": 10**12}}, r"eval.samples = 1000000000000 is invalid; use 2 to"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_train_config(data)


def test_unknown_loss_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown loss 'lsgan'; choose one of: hinge, ns"):
        parse_train_config({"train": {"loss": "lsgan"}})


def test_malformed_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_train_config(write(tmp_path, "[train\nsteps = 3"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.toml")


def test_ganhpo_train_refuses_a_batch_larger_than_the_data_before_loading(tmp_path: Path) -> None:
    from procs import ganhpo, worker_env

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):  # never opened: the check counts the files
        (images / f"{i}.png").write_bytes(b"not read")
    config = write(
        tmp_path,
        f'[dataset]\nname = "image-folder"\npath = "{images}"\n[train]\nbatch_size = 4\n',
    )
    done = ganhpo("train", str(config), "--out", "run", cwd=tmp_path, env=worker_env(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"ganhpo: error: {config}: train.batch_size = 4 is larger than the dataset "
        f"(image-folder, {images}, train split: 3 images); use a batch size of at most 3"
    )
    assert done.stdout == "" and not (tmp_path / "run").exists()


def test_the_spec_parser_imports_nothing_above_it() -> None:
    """The one parser of user input depends on nothing that uses it: importing it (and parsing
    a study spec with it) in a fresh interpreter loads neither the study driver nor the worker."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ganhpo.spec import load_study_spec\n"
        f"load_study_spec({str(Path(__file__).parents[1] / 'studies' / 'quick.toml')!r})\n"
        "print(sorted(m for m in sys.modules if m in ('ganhpo.study', 'ganhpo.worker', "
        "'ganhpo.commands', 'ganhpo.cli')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
