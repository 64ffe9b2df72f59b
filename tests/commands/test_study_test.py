"""``ganhpo study test NAME``: the best trials' generators re-scored on the test split, with
fresh latents, on a real finished study."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from procs import in_process, spec_variant, study_args

from ganhpo.data import image_hashes, load_dataset, shipped_mnist_subset_dir
from ganhpo.metrics import real_sample_indices
from ganhpo.storage import open_storage

run = in_process


def trials_of(study: dict[str, str]) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="quick", storage=open_storage(study["storage"])).trials


def test_the_reference_is_the_test_split_never_the_searchs(capsys, quick_study) -> None:
    code, out, err = run(
        capsys, "study", "test", "quick", "--top", "3", "--samples", "1000", "--json", "-q",
        *study_args(quick_study),
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    ref = result["reference"]
    assert (ref["dataset"], ref["split"], ref["num_images"]) == ("mnist-subset", "test", 1000)
    assert ref["indices"] == list(range(1000))  # all of the split: it holds fewer than asked
    assert result["seed"] == 1 and result["samples"] == 1000  # evaluation seed 0, plus one
    # Not one image of the search's reference (1000 of the train split, seed 0) is among them.
    subset = shipped_mnist_subset_dir()
    train = load_dataset("mnist-subset", data_dir=subset)
    test = load_dataset("mnist-subset", split="test", data_dir=subset)
    search = train.images[real_sample_indices(len(train), 1000, 0)]
    used = test.images[np.asarray(ref["indices"])]
    assert not set(image_hashes(used)) & set(image_hashes(search))
    # The K best by search FID, ranked by it and by their test FID.
    done = sorted(
        (t for t in trials_of(quick_study) if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: (t.value, t.number),
    )
    rows = result["trials"]
    assert [r["number"] for r in sorted(rows, key=lambda r: r["search_rank"])] == [
        t.number for t in done[:3]
    ]
    ranks = list(range(1, len(done[:3]) + 1))  # the quick study may complete only 2 trials
    assert [r["search_rank"] for r in sorted(rows, key=lambda r: r["search_rank"])] == ranks
    assert [r["test_rank"] for r in rows] == ranks  # listed best test FID first
    assert [r["test_fid"] for r in rows] == sorted(r["test_fid"] for r in rows)
    for r, t in zip(sorted(rows, key=lambda r: r["search_rank"]), done, strict=False):
        assert r["search_fid"] == t.value
        assert math.isfinite(r["test_fid"]) and 0 < r["test_fid_std"] < r["test_fid"]
    # Recorded on each tested trial (a finished one), and on no other.
    recorded = {t.number: t.user_attrs for t in trials_of(quick_study)}
    for r in rows:
        attrs = recorded[r["number"]]
        assert attrs["test_fid"] == r["test_fid"] and attrs["test_fid_std"] == r["test_fid_std"]
        assert attrs["test_samples"] == 1000 and attrs["test_seed"] == 1
        assert attrs["test_reference"] == "mnist-subset/test"
    tested_numbers = {r["number"] for r in rows}
    assert all("test_fid" not in a for n, a in recorded.items() if n not in tested_numbers)

    # The table: one row per trial, in search order, with both ranks.
    code, out, err = run(
        capsys, "study", "test", "quick", "--top", "2", "--samples", "1000", "-q",
        *study_args(quick_study),
    )  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("test reference: mnist-subset/test (1000 of its 1000 images)")
    assert lines[1].split() == ["trial", "search", "rank", "search", "FID", "test", "rank", "test",
                                "FID"]  # fmt: skip
    table = [line.split() for line in lines[2:]]
    assert [int(c[0]) for c in table] == [t.number for t in done[:2]]
    assert [int(c[1]) for c in table] == [1, 2]
    assert sorted(int(c[3]) for c in table) == [1, 2]
    by_number = {r["number"]: r for r in rows}
    for c in table:  # the same numbers as the first run: same latents, same reference
        assert float(c[4]) == pytest.approx(by_number[int(c[0])]["test_fid"], abs=1e-4)
        assert c[5] == "±"

    # study show: the best trial's test FID; study trials: the column.
    code, out, err = run(capsys, "study", "show", "quick", "--storage", quick_study["storage"])
    assert code == 0, err
    best = by_number[done[0].number]
    assert f"test       FID {best['test_fid']:.4f} ± " in out
    assert "on mnist-subset/test (1000 samples, seed 1)" in out
    code, out, err = run(capsys, "study", "trials", "quick", "--storage", quick_study["storage"])
    assert code == 0, err
    header, *body = out.strip().splitlines()
    column = header.split("\t").index("test_fid")
    cells = {int(line.split("\t")[0]): line.split("\t")[column] for line in body}
    assert float(cells[best["number"]]) == pytest.approx(best["test_fid"], rel=1e-3)


def one_line_error(code: int, out: str, err: str) -> str:
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganhpo: error: "), err
    return lines[0]


def test_the_search_seed_is_refused(capsys, quick_study) -> None:
    line = one_line_error(
        *run(capsys, "study", "test", "quick", "--seed", "0", *study_args(quick_study))
    )
    assert "--seed 0 is the evaluation seed of study 'quick'" in line


def test_a_dataset_without_a_test_split_says_what_to_do(capsys, tmp_path, monkeypatch) -> None:
    subset = load_dataset("mnist-subset", data_dir=shipped_mnist_subset_dir())
    np.savez(tmp_path / "mine.npz", images=subset.images[:, 0].numpy(), labels=subset.labels)
    # Created with none of its images held out (a study created before ganhpo held 10 % out
    # is the same; tests/data/test_holdout.py has the default).
    npz = f'name = "npz"\npath = "{tmp_path / "mine.npz"}"\nholdout = 0'
    spec = spec_variant(tmp_path, {'name = "mnist-subset"': npz})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    assert run(capsys, "study", "create", str(spec))[0] == 0
    line = one_line_error(*run(capsys, "study", "test", "quick"))
    assert "dataset 'npz' of study 'quick' has no test split, and the study set none" in line
    assert "ganhpo score OUT --against HELD_OUT" in line
