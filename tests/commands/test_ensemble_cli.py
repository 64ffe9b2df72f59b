"""``ganhpo ensemble NAME``: a real finished study's best generators mixed, scored on the test
split beside each member (the numbers 'ganhpo study test' gives them), written as one generator
that 'ganhpo sample' samples, and recorded in the study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from procs import in_process, study_args

from ganhpo.artifacts import read_artifact
from ganhpo.results import open_store
from ganhpo.storage import open_storage
from ganhpo.study import ENSEMBLE_ATTR_PREFIX
from ganhpo.train.export import read_generator

run = in_process


def load(study: dict[str, str]) -> optuna.Study:
    return optuna.load_study(study_name="quick", storage=open_storage(study["storage"]))


def test_an_ensemble_is_scored_written_sampled_and_recorded(capsys, tmp_path, quick_study):
    out = tmp_path / "ens"
    code, text, err = run(
        capsys, "ensemble", "quick", "--top", "3", "--out", str(out), "--samples", "1000",
        "--fit-samples", "500", "--json", "-q", *study_args(quick_study),
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(text)
    best3 = sorted(
        (t for t in load(quick_study).trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: (t.value, t.number),
    )[:3]
    assert [m["number"] for m in result["members"]] == [t.number for t in best3]
    assert [m["search_fid"] for m in result["members"]] == [t.value for t in best3]
    assert (result["reference"], result["samples"], result["seed"]) == (
        "mnist-subset/test",
        1000,
        1,
    )
    assert result["fit_seed"] == 2 and result["written"] == "fitted"
    fitted, uniform = result["mixtures"]["fitted"], result["mixtures"]["uniform"]
    assert uniform["weights"] == pytest.approx([1 / len(best3)] * len(best3))
    assert sum(fitted["weights"]) == pytest.approx(1) and min(fitted["weights"]) >= 0
    assert [m["weight"] for m in result["members"]] == fitted["weights"]
    # The fit's own objective: never worse than the uniform mixture on the validation sample.
    assert fitted["validation_fid"] <= uniform["validation_fid"] + 1e-9
    for score in [*result["members"], fitted, uniform]:
        assert math.isfinite(score["test_fid"]) and 0 < score["test_fid_std"] < score["test_fid"]
    best = min(m["test_fid"] for m in result["members"])
    assert result["beats_best_member"]["fitted"] == (fitted["test_fid"] < best)

    # Each member's test FID is the one 'ganhpo study test' gives it (same latents, reference).
    code, text, err = run(
        capsys, "study", "test", "quick", "--top", "3", "--samples", "1000", "--json", "-q",
        *study_args(quick_study),
    )  # fmt: skip
    assert code == 0, err
    tested = {r["number"]: r["test_fid"] for r in json.loads(text)["trials"]}
    for m in result["members"]:
        assert m["test_fid"] == pytest.approx(tested[m["number"]], rel=1e-9)

    # DIR: the ensemble as one generator file, and what was measured.
    assert json.loads((out / "ensemble.json").read_text()) == result
    ensemble = read_generator(out / "generator.pt")
    assert ensemble.is_ensemble and len(ensemble.members) == len(best3)
    assert list(ensemble.mixture) == pytest.approx(fitted["weights"])
    assert ensemble.info["trials"] == [t.number for t in best3]

    # Recorded in the study: its artifact (the same bytes; listed where the dashboard lists a
    # study's artifacts) and its summary.
    study = load(quick_study)
    artifact = result["artifact"]
    record = study.user_attrs[ENSEMBLE_ATTR_PREFIX + artifact]
    assert record["test_fid"] == fitted["test_fid"] and record["trials"] == ensemble.info["trials"]
    metas = optuna.artifacts.get_all_artifact_meta(
        study, storage=open_storage(quick_study["storage"])
    )
    filename = f"ensemble-top{len(best3)}-fitted.pt"
    assert [m.filename for m in metas if m.artifact_id == artifact] == [filename]
    store = open_store(study)
    assert read_artifact(store, artifact) == (out / "generator.pt").read_bytes()
    code, text, err = run(capsys, "study", "show", "quick", "--storage", quick_study["storage"])
    assert code == 0, err
    line = next(x for x in text.splitlines() if artifact in x)
    assert line.startswith("ensemble   trials " + ", ".join(str(t.number) for t in best3))
    assert f"test FID {fitted['test_fid']:.4f} ± " in line

    # The report's index: the test FID column ('ganhpo study test' ran) and the ensemble.
    report = tmp_path / "report"
    code, _, err = run(
        capsys, "plot", "quick", "--out", str(report), "--storage", quick_study["storage"], "-q"
    )
    assert code == 0, err
    index = (report / "index.html").read_text()
    assert "<th>test FID</th>" in index
    assert f"{tested[best3[0].number]:.4g} ± " in index
    ensembles = index[index.index("<table id='ensembles'>") :]
    row = next(r for r in ensembles.split("<tr>") if artifact in r)
    assert ", ".join(str(t.number) for t in best3) in row and f"{fitted['test_fid']:.4g}" in row

    # 'ganhpo sample --run DIR' samples it like any generator; its test latents' images score
    # the test FID it reported against the test split.
    images = tmp_path / "mixed.npz"
    code, _, err = run(
        capsys, "sample", "--run", str(out), "-n", "1000", "--seed", "1", "--out", str(images),
        "-q",
    )  # fmt: skip
    assert code == 0, err
    code, text, err = run(
        capsys, "score", str(images), "--dataset", "mnist-subset", "--split", "test",
        "--no-kid", "--json", "-q", "--cache-dir", str(Path(quick_study["dir"]) / "cache"),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(text)["fid"] == pytest.approx(fitted["test_fid"], rel=1e-6)


def test_mistakes_end_in_one_line_and_write_nothing(capsys, tmp_path, quick_study) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("mine")
    before = dict(load(quick_study).user_attrs)
    cases = [
        (["--top", "1", "--out", str(tmp_path / "a")], "an ensemble needs 2 members or more"),
        (["--out", str(full)], "is a folder that is not empty"),
        (["--out", str(tmp_path / "e.npz")], "is a file name; give a new or empty folder"),
        (["--seed", "-1", "--out", str(tmp_path / "b")], "uses the evaluation seed 0"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, "ensemble", "quick", *argv, *study_args(quick_study))
        lines = err.strip().splitlines()
        assert code != 0 and out == "" and len(lines) == 1, err
        assert lines[0].startswith("ganhpo: error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert [p.name for p in full.iterdir()] == ["x"]
    assert dict(load(quick_study).user_attrs) == before


def test_a_diverged_member_is_named_in_one_line(capsys, tmp_path, quick_study) -> None:
    """A member whose generator makes NaN pixels (its weights overwritten with NaN in a copy
    of the study's store) stops the ensemble with one line naming the trial, nothing written."""
    import shutil

    import torch

    store = tmp_path / "store"
    shutil.copytree(quick_study["artifacts"], store)
    second = sorted(
        (t for t in load(quick_study).trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: (t.value, t.number),
    )[1]
    path = store / second.user_attrs["generator"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["G"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                  for k, v in state["G"].items()}  # fmt: skip
    torch.save(state, path)
    out = tmp_path / "ens"
    code, text, err = run(
        capsys, "ensemble", "quick", "--top", "2", "--out", str(out), "--samples", "500",
        "--fit-samples", "200", "--artifacts", str(store), "-q", *study_args(quick_study),
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert code != 0 and text == "" and len(lines) == 1, err
    assert f"the generator of trial {second.number} makes NaN or infinite pixels" in lines[0]
    assert not out.exists() or not any(out.iterdir())
