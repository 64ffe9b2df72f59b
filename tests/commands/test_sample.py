"""``ganhpo sample``: images from a trial's (or a ``ganhpo train --out`` run's) final generator,
rebuilt from what was stored, that score exactly what the trial recorded."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from procs import QUICK, ganhpo, in_process, study_args, worker_env

import ganhpo as ganhpo_package
from ganhpo.data import load_dataset, save_images, shipped_mnist_subset_dir
from ganhpo.errors import CheckpointError
from ganhpo.train import DatasetConfig, EvalConfig, ModelConfig, TrainConfig, Trainer, TrainParams
from ganhpo.train.export import dump_generator, read_generator

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "docs" / "specs.md").read_text()  # the spec reference the README links


run = in_process


def completed(study: dict[str, str]) -> list[dict]:
    """The study's completed trials as 'ganhpo study trials --json' rows, best first."""
    import optuna

    from ganhpo.storage import open_storage

    trials = optuna.load_study(study_name=study["name"], storage=open_storage(study["storage"]))
    done = [t for t in trials.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return [{"number": t.number, "value": t.value} for t in sorted(done, key=lambda t: t.value)]


def score(capsys: pytest.CaptureFixture[str], path: Path, *reference: str) -> float:
    code, out, err = run(capsys, "score", str(path), *reference, "--no-kid", "--json", "-q")
    assert code == 0, err
    return float(json.loads(out)["fid"])


# --------------------------------------------------------------------------- a DCGAN study
def test_the_best_trials_samples_score_its_recorded_final_fid(
    capsys, tmp_path, quick_study
) -> None:
    """Its evaluation latents, its generator rebuilt, the images quantized as the evaluation
    quantized them: 'ganhpo score --study' of the output is the trial's final FID."""
    best = completed(quick_study)[0]
    npz, folder = tmp_path / "best.npz", tmp_path / "pngs"
    for out in (npz, folder):
        code, printed, err = run(
            capsys, "sample", "--study", "quick", "--best", "--out", str(out), "-q",
            *study_args(quick_study),
        )  # fmt: skip
        assert code == 0, err
        assert printed.strip() == str(out)
    images = np.load(npz)["images"]
    assert images.dtype == np.uint8 and images.shape == (1000, 28, 28, 1)  # final_samples
    pngs = load_dataset("image-folder", path=folder).images  # [N, 1, 28, 28] as written
    assert torch.equal(pngs, torch.from_numpy(images).permute(0, 3, 1, 2))
    for out in (npz, folder):
        fid = score(capsys, out, "--study", "quick", *study_args(quick_study))
        assert fid == pytest.approx(best["value"], rel=1e-6)
    # --final (the final evaluation's reference) is the same here: final_reference = "sample".
    fid = score(capsys, npz, "--study", "quick", "--final", *study_args(quick_study))
    assert fid == pytest.approx(best["value"], rel=1e-6)


def test_trial_seed_and_count_choose_the_images(capsys, tmp_path, quick_study) -> None:
    trials = completed(quick_study)
    other = trials[-1]["number"]
    outs = {}
    for name, extra in {
        "default": [],
        "seed": ["--seed", "5"],
        "trial": ["--trial", str(other)],
    }.items():
        out = tmp_path / f"{name}.npz"
        code, _, err = run(
            capsys, "sample", "--study", "quick", "--out", str(out), "-n", "300", "--json",
            *extra, *study_args(quick_study),
        )  # fmt: skip
        assert code == 0, err
        outs[name] = np.load(out)["images"]
    assert all(a.shape == (300, 28, 28, 1) for a in outs.values())
    assert not np.array_equal(outs["default"], outs["seed"])
    if other != trials[0]["number"]:
        assert not np.array_equal(outs["default"], outs["trial"])
        fid = score(capsys, tmp_path / "trial.npz", "--study", "quick", *study_args(quick_study))
        assert fid != pytest.approx(trials[0]["value"], rel=1e-3)


def test_grid_writes_one_sample_grid_png(capsys, tmp_path, quick_study) -> None:
    from PIL import Image

    out = tmp_path / "grid.png"
    code, _, err = run(
        capsys, "sample", "--study", "quick", "--grid", "--out", str(out), *study_args(quick_study)
    )
    assert code == 0, err
    grid = Image.open(out)
    assert grid.size == (8 * 30 + 2, 8 * 30 + 2)  # 64 images of 28 px, 2 px apart
    assert np.asarray(grid).std() > 10  # digits, not a blank page
    code, _, err = run(
        capsys, "sample", "--study", "quick", "--grid", "--out", str(tmp_path / "grid.npz"),
        *study_args(quick_study),
    )  # fmt: skip
    assert code == 2 and "give --out a .png file" in err


def one_line_error(code: int, out: str, err: str) -> str:
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganhpo: error: "), err
    return lines[0]


def test_mistakes_end_in_one_line_and_write_nothing(capsys, tmp_path, quick_study) -> None:
    import optuna

    from ganhpo.storage import open_storage

    trials = optuna.load_study(study_name="quick", storage=open_storage(quick_study["storage"]))
    unfinished = [t.number for t in trials.trials if t.state != optuna.trial.TrialState.COMPLETE]
    not_completed = unfinished[0] if unfinished else len(trials.trials) + 5
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = {
        "trial": (["--study", "quick", "--trial", str(not_completed)],
                  f"trial {not_completed} of study 'quick' is not a completed trial"),
        "study": (["--study", "nope"], "study 'nope' does not exist"),
        "step": (["--study", "quick", "--step", "80"],
                 "has no generator at step 80 in the artifact store any more"),
        "unwritable": (["--study", "quick", "--out", str(a_file / "x.npz")],
                       f"cannot write {a_file / 'x.npz'}: {a_file} is a file, not a folder"),
    }  # fmt: skip
    for name, (argv, message) in cases.items():
        out = tmp_path / f"{name}.npz"
        if "--out" not in argv:
            argv = [*argv, "--out", str(out)]
        line = one_line_error(*run(capsys, "sample", *argv, *study_args(quick_study)))
        assert message in line, (name, line)
        assert not out.exists()
    # The steps that are kept are named, and they work.
    line = one_line_error(
        *run(capsys, "sample", "--study", "quick", "--step", "80", "--out", str(tmp_path / "s"),
             *study_args(quick_study))
    )  # fmt: skip
    assert "steps kept: 240 (its final generator)" in line
    code, _, err = run(
        capsys, "sample", "--study", "quick", "--step", "240", "-n", "300",
        "--out", str(tmp_path / "s.npz"), *study_args(quick_study),
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "s.npz"]  # no temp files


def test_a_folder_is_written_whole_or_not_at_all(tmp_path, monkeypatch) -> None:
    from PIL import Image

    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    real_save = Image.Image.save
    calls = []

    def failing_save(self, fp, *args, **kwargs):  # the disk fills up at the 11th file
        calls.append(fp)
        if len(calls) > 10:
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_images(images, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin


# ----------------------------------------------------------------- a ResNet, from a run folder
RESNET_RUN = """
seed = 3
device = "cpu"
[dataset]
name = "mnist-subset"
[model]
arch = "resnet"
width = 8
latent_dim = 16
[train]
steps = 6
batch_size = 16
ema = true
ema_decay = 0.5
[eval]
every = 0
final_samples = 300
batch_size = 100
kid = "off"
"""


def test_a_resnet_run_folder_samples_its_fid_with_and_without_ema(capsys, tmp_path) -> None:
    config = tmp_path / "resnet.toml"
    config.write_text(RESNET_RUN)
    cache = str(tmp_path / "cache")
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "train", str(config), "--out", str(run_dir), "--cache-dir", cache, "--json", "-q"
    )
    assert code == 0, err
    trained = json.loads(out)["runs"][0]
    assert (run_dir / "generator.pt").is_file()
    generator = read_generator(run_dir / "generator.pt")
    assert generator.config.model.arch == "resnet" and generator.step == 6 and generator.ema
    assert generator.image_shape == (1, 28, 28)
    outs = {}
    for name, extra in {"default": [], "ema": ["--ema"], "no-ema": ["--no-ema"]}.items():
        outs[name] = tmp_path / f"{name}.npz"
        code, _, err = run(
            capsys, "sample", "--run", str(run_dir), "--out", str(outs[name]), "-q", *extra
        )
        assert code == 0, err
    arrays = {k: np.load(v)["images"] for k, v in outs.items()}
    assert np.array_equal(arrays["default"], arrays["ema"])
    assert not np.array_equal(arrays["default"], arrays["no-ema"])
    # What the run reported: the same latents (eval.seed 0), the same real sample.
    reference = ["--dataset", "mnist-subset", "--seed", "0", "--cache-dir", cache]
    assert score(capsys, outs["default"], *reference) == pytest.approx(trained["fid"], rel=1e-6)
    # The run's checkpoint holds the same step: --step picks it, and names what is kept.
    code, _, err = run(
        capsys, "sample", "--run", str(run_dir), "--step", "6", "--out",
        str(tmp_path / "step.npz"), "-q",
    )  # fmt: skip
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "step.npz")["images"], arrays["default"])
    line = one_line_error(
        *run(capsys, "sample", "--run", str(run_dir), "--step", "3", "--out", str(tmp_path / "x"))
    )
    assert "steps kept: 6 (generator.pt), 6 (checkpoint.pt)" in line
    # Without generator.pt (runs written before it), the checkpoint is the generator.
    (run_dir / "generator.pt").unlink()
    code, _, err = run(
        capsys, "sample", "--run", str(run_dir), "--out", str(tmp_path / "ckpt.npz"), "-q"
    )
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "ckpt.npz")["images"], arrays["default"])


# --------------------------------------------------------------- the Python API, old files
def tiny_trainer(**train: object) -> Trainer:
    config = TrainConfig(
        dataset=DatasetConfig(name="mnist-subset"),
        model=ModelConfig(width=8, latent_dim=16),
        train=TrainParams(steps=3, batch_size=16, **train),  # type: ignore[arg-type]
        eval=EvalConfig(every=0, samples=50, final_samples=50),
        device="cpu",
    )
    data = load_dataset("mnist-subset", data_dir=shipped_mnist_subset_dir(), limit=64)
    trainer = Trainer(config, data=data)
    for _ in range(3):
        trainer.train_step()
    return trainer


def outputs(generator: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    generator.eval()
    with torch.no_grad():
        return generator(z)


def test_load_generator_rebuilds_both_generators_and_reads_old_files(tmp_path) -> None:
    trainer = tiny_trainer(ema=True, ema_decay=0.5)
    z = torch.randn(5, 16)
    data = dump_generator(trainer)
    path = tmp_path / "generator.pt"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        loaded = ganhpo_package.load_generator(source)
        assert not loaded.training
        assert torch.equal(outputs(loaded, z), outputs(trainer.generator, z))
    trained = ganhpo_package.load_generator(path, ema=False)
    assert torch.equal(outputs(trained, z), outputs(trainer.G, z))
    # The format before this one: {"config": dataclasses.asdict(config), "G": evaluated G}.
    buffer = io.BytesIO()
    torch.save(
        {"config": dataclasses.asdict(trainer.config), "G": trainer.generator.state_dict()}, buffer
    )
    old = buffer.getvalue()
    assert torch.equal(outputs(ganhpo_package.load_generator(old), z), outputs(trainer.G_ema, z))
    with pytest.raises(CheckpointError, match="holds only the EMA generator"):
        ganhpo_package.load_generator(old, ema=False)
    with pytest.raises(CheckpointError, match="not a ganhpo generator"):
        ganhpo_package.load_generator(b"garbage")
    plain = tiny_trainer()  # no EMA: the trained generator is the one
    assert torch.equal(
        outputs(ganhpo_package.load_generator(dump_generator(plain), ema=False), z),
        outputs(plain.G, z),
    )
    with pytest.raises(CheckpointError, match="holds no EMA generator"):
        ganhpo_package.load_generator(dump_generator(plain), ema=True)


# ------------------------------------------------------------- a user's network, in a study
def readme_block(after: str, language: str) -> str:
    start_at = README.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start_at)
    assert match is not None, after
    return match.group(1)


@pytest.mark.slow
def test_a_users_own_network_is_rebuilt_from_the_study(tmp_path) -> None:
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "mygan.py").write_text(readme_block("**Your own networks.**", "python"))
    model = readme_block("with, in the spec:", "toml").split("[search]")[0].split("\n", 1)[1]
    text = QUICK.read_text()
    text = text.replace(text[text.index("[model]") : text.index("[train]")], f"[model]\n{model}\n")
    for old, new in {"max_trials = 6 ": "max_trials = 1 ", "steps = 240": "steps = 40",
                     "every = 80 ": "every = 20 "}.items():  # fmt: skip
        text = text.replace(old, new, 1)
    spec = tmp_path / "mine.toml"
    spec.write_text(text)
    env = worker_env(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package), env.get("PYTHONPATH")) if p)
    for argv in (["study", "create", str(spec)], ["worker", "--study", "quick", "-q"]):
        done = ganhpo(*argv, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    done = ganhpo("sample", "--study", "quick", "--out", "mine.npz", "-q", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    scored = ganhpo("score", "mine.npz", "--study", "quick", "--no-kid", "--json", "-q",
                    cwd=tmp_path, env=env)  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    trials = ganhpo("study", "trials", "quick", "--json", cwd=tmp_path, env=env)
    (trial,) = json.loads(trials.stdout)
    assert json.loads(scored.stdout)["fid"] == pytest.approx(trial["value"], rel=1e-6)
    # Where the user's package is not installed: one line saying so.
    bare = worker_env(tmp_path / "cache")
    lost = ganhpo("sample", "--study", "quick", "--out", "lost.npz", cwd=tmp_path, env=bare)
    assert lost.returncode != 0 and not (tmp_path / "lost.npz").exists()
    assert lost.stderr.strip().splitlines()[-1].startswith("ganhpo: error: ")
    assert "cannot import mygan" in lost.stderr
