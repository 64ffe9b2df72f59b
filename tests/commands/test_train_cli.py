"""``ganhpo train``: the FID on stdout, progress on stderr, bad input in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganhpo.cli import main

TINY = """
seed = 1
device = "cpu"
[dataset]
name = "mnist-subset"
[model]
width = 8
latent_dim = 16
[train]
steps = 30
batch_size = 16
[eval]
every = 15
samples = 200
final_samples = 300
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_prints_the_fid_and_writes_grids_and_a_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(TINY)
    code, out, err = run(capsys, "train", str(config), "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert out.startswith("FID ") and out.count("\n") == 1  # the result, alone on stdout
    assert "step 15/30" in err and "ETA" in err and "final" in err  # progress on stderr
    assert (tmp_path / "run" / "samples" / "final.png").is_file()
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    # Resuming the finished run with a longer budget continues from step 30.
    code, out, err = run(
        capsys, "train", str(config), "--resume", str(tmp_path / "run" / "checkpoint.pt"),
        "--steps", "45", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert "resumed from" in err and json.loads(out)["runs"][0]["step"] == 45


def test_train_with_several_seeds_prints_mean_and_std(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(TINY.replace("steps = 30", "steps = 10").replace("every = 15", "every = 0"))
    code, out, _ = run(capsys, "train", str(config), "--seeds", "0,1", "--json")
    result = json.loads(out)
    assert code == 0 and [r["seed"] for r in result["runs"]] == [0, 1]
    assert result["fid_std"] > 0 and result["fid_mean"] > 0


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (
            '[train]\nloss = "lsgan"\n',
            2,
            "unknown loss 'lsgan'; choose one of: hinge, ns, wasserstein",
        ),
        ("[dataset]\nresolution = 30\n", 2, "dataset.resolution = 30 is invalid"),
        (
            '[eval]\nextractor = "vgg"\n',
            2,
            "unknown feature extractor 'vgg'; choose one of: classifier, inception",
        ),
        ("[train\n", 2, "is not valid TOML"),
        ('[dataset]\nname = "mnist"\n', 1, "GANHPO_DATA_DIR"),
    ],
)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    code: int,
    message: str,
) -> None:
    monkeypatch.setenv("GANHPO_DATA_DIR", str(tmp_path / "empty"))
    config = tmp_path / "bad.toml"
    config.write_text(text)
    got, out, err = run(capsys, "train", str(config))
    assert got == code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganhpo: error: ") and message in lines[0]


def test_an_extractor_that_cannot_work_fails_before_the_first_step(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlabelled photos and the classifier extractor: refused before training, not after it."""
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(faces / f"{i:02d}.png")
    config = tmp_path / "c.toml"
    config.write_text(
        TINY.replace('name = "mnist-subset"', f'name = "image-folder"\npath = "{faces}"')
        .replace("[model]", "resolution = 16\n[model]")
        .replace("batch_size = 16", "batch_size = 8\ncheckpoint_every = 1")
    )
    for name in ("pytorch_fid", "pytorch_fid.inception"):  # not importable, installed or not
        monkeypatch.setitem(sys.modules, name, None)
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", str(config), "--out", str(out_dir))
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "ganhpo: error: the classifier extractor needs labels to train on, and dataset "
        "'image-folder' has none; use extractor 'inception' (pip install 'ganhpo[inception]')"
    ]
    # No step was trained: the first would have written a checkpoint (checkpoint_every = 1).
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
