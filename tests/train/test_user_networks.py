"""A user's own networks: ``[model] arch = "package.module:function"``, from a module that is
not part of ganhpo (the README's example, written to a temporary directory)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from procs import QUICK, finish, ganhpo, start, worker_env

from ganhpo.cli import main
from ganhpo.data import load_dataset, shipped_mnist_subset_dir
from ganhpo.errors import ModelError, ModelImportError
from ganhpo.spec import load_study_spec
from ganhpo.train import ModelConfig, Trainer, check_networks

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "docs" / "specs.md").read_text()  # the spec reference the README links


def readme_block(after: str, language: str) -> str:
    """The first ```language block after the text ``after`` in the README."""
    start_at = README.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start_at)
    assert match is not None, after
    return match.group(1)


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The README's mygan.py, importable as ``mygan`` (and nothing of ganhpo's)."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "mygan.py").write_text(readme_block("**Your own networks.**", "python"))
    (package / "broken.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(package))
    for name in ("mygan", "broken"):
        sys.modules.pop(name, None)
    return package


BROKEN = """
from torch import nn


def raises(image_shape, latent_dim):
    raise RuntimeError("out of ideas")


def wrong_size(image_shape, latent_dim):
    g = nn.Sequential(nn.Linear(latent_dim, 3 * 32 * 32), nn.Unflatten(1, (3, 32, 32)))
    return g, nn.Sequential(nn.Flatten(), nn.LazyLinear(1))


def many_logits(image_shape, latent_dim):
    c, h, w = image_shape
    g = nn.Sequential(nn.Linear(latent_dim, c * h * w), nn.Unflatten(1, image_shape))
    return g, nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 10))


def one_network(image_shape, latent_dim):
    return nn.Linear(latent_dim, 1)
"""


def spec_for(tmp_path: Path, model: str, search: str = "") -> Path:
    """quick.toml with another [model] (and more [search])."""
    text = QUICK.read_text()
    model_table = text[text.index("[model]") : text.index("[train]")]
    text = text.replace(model_table, f"[model]\n{model}\n\n")
    if search:
        text = text.replace("[search]\n", f"[search]\n{search}\n")
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


README_MODEL = readme_block("with, in the spec:", "toml").split("[search]")[0].split("\n", 1)[1]
README_SEARCH = readme_block("with, in the spec:", "toml").split("[search]\n")[1]


def test_the_readme_example_trains_and_resumes_bit_exactly(user_package: Path) -> None:
    config = load_study_spec(spec_for(user_package, README_MODEL)).base
    assert config.model.custom and dict(config.model.options) == {"hidden": 128}
    data = load_dataset("mnist-subset", data_dir=shipped_mnist_subset_dir())
    config = config.replace_params(steps=20, hidden=64)
    trainer = Trainer(config, data=data)
    assert trainer.G[0].out_features == 64  # the searched key reached the builder
    for _ in range(10):
        trainer.train_step()
    state = trainer.checkpoint_bytes()
    for _ in range(10):
        trainer.train_step()
    from ganhpo.train import parse_checkpoint

    resumed = Trainer(config, data=data)
    resumed.load_state_dict(parse_checkpoint(state, source="test"))
    for _ in range(10):
        resumed.train_step()
    for a, b in zip(trainer.G.parameters(), resumed.G.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_a_study_searches_the_users_own_key_with_two_workers(
    user_package: Path, tmp_path: Path, postgres_url: str
) -> None:
    spec = spec_for(tmp_path, README_MODEL, README_SEARCH)
    env = {**worker_env(tmp_path / "cache"), "PYTHONPATH": str(user_package)}
    created = ganhpo("study", "create", str(spec), "--storage", postgres_url, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    args = ["worker", "--study", "quick", "--storage", postgres_url, "--max-total-trials", "4"]
    workers = [start(*args, cwd=tmp_path, env=env, log=tmp_path / f"w{i}.log") for i in range(2)]
    assert [finish(w) for w in workers] == [0, 0], [
        (tmp_path / f"w{i}.log").read_text() for i in range(2)
    ]
    import optuna

    from ganhpo.storage import open_storage

    trials = optuna.load_study(study_name="quick", storage=open_storage(postgres_url)).trials
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    hidden = {t.params["hidden"] for t in trials}
    assert hidden <= {64, 128, 256} and len(hidden) >= 2
    for t in trials:  # the parameter counts follow the searched width of the hidden layer
        h = t.params["hidden"]
        assert t.user_attrs["g_params"] == 32 * h + h + h * 784 + 784
        assert t.user_attrs["d_params"] == 784 * h + h + h + 1
    # A machine without the package: the worker stops before taking a trial.
    bare = worker_env(tmp_path / "cache")
    lost = ganhpo("worker", "--study", "quick", "--storage", postgres_url, cwd=tmp_path, env=bare)
    assert lost.returncode != 0
    assert "cannot import mygan" in lost.stderr and "install the package" in lost.stderr


@pytest.mark.parametrize(
    ("model", "search", "message"),
    [
        ('arch = "nowhere.nets:build"', "", "cannot import nowhere.nets (ModuleNotFoundError"),
        ('arch = "mygan:biuld"', "", "mygan has no function 'biuld'; did you mean 'build'?"),
        ('arch = "my gan:build"', "", 'is not an import path; write "package.module:function"'),
        (
            'arch = "mygan.build"',
            "",
            "is not an architecture (dcgan, resnet); a function of your own is",
        ),
        ('arch = "broken:raises"', "", "raised RuntimeError: out of ideas when called"),
        (
            'arch = "broken:wrong_size"',
            "",
            "the generator returns (2, 3, 32, 32) for 2 latents; the data needs images "
            "(2, 1, 28, 28)",
        ),
        (
            'arch = "broken:many_logits"',
            "",
            "the discriminator returns (2, 10) for 2 images; it must return one logit per image",
        ),
        ('arch = "broken:one_network"', "", "returned Linear; it must return (generator,"),
        (
            'arch = "mygan:build"\nlatent_dim = 32\nhidden = 128',
            "hidden = { choices = [64, -1] }",
            "raised RuntimeError",
        ),
        (
            'arch = "dcgan"\nhidden = 3',
            "",
            "unknown key 'model.hidden' in [model]; valid keys: arch, width, latent_dim, "
            "spectral_norm, width_g, width_d, depth; keys of your own need your own networks",
        ),
    ],
)
def test_each_mistake_is_one_line_before_anything_is_written(
    capsys: pytest.CaptureFixture[str],
    user_package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    search: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    code, out, err = run(capsys, "study", "create", str(spec_for(tmp_path, model, search)))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("ganhpo: error: ") and message in lines[0], err
    assert not (tmp_path / "ganhpo.db").exists()


def test_check_networks_passes_registered_architectures_and_imports_builders(
    user_package: Path,
) -> None:
    check_networks(load_study_spec(QUICK).base)  # dcgan: nothing to import
    config = load_study_spec(spec_for(user_package, README_MODEL)).base
    check_networks(config, [{"hidden": 64}, {"hidden": 256}])
    with pytest.raises(ModelImportError):
        ModelConfig(arch="nowhere:build")  # the path is fine ...
        check_networks(config.replace_params(arch="nowhere:build"))  # ... the import is not
    with pytest.raises(ModelError, match="has no function"):
        check_networks(config.replace_params(arch="mygan:nothing"))


def test_regularisers_that_need_more_of_a_users_d_say_so(user_package: Path) -> None:
    from ganhpo.errors import ConfigError

    config = load_study_spec(spec_for(user_package, README_MODEL)).base
    data = load_dataset("mnist-subset", data_dir=shipped_mnist_subset_dir())
    with pytest.raises(ConfigError, match=r"train.rotation needs a discriminator with ganhpo's"):
        Trainer(config.replace_params(rotation=True), data=data)
    with pytest.raises(ConfigError, match=r"need a discriminator with features\(images\)"):
        Trainer(config.replace_params(feature_matching=True), data=data)
