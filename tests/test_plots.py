"""``ganhpo.plots`` and ``ganhpo.report``: the data behind every figure (no plotly, no browser),
how Optuna's figures are restyled (plotly objects, no browser), the written report, and
``ganhpo plot``."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from PIL import Image
from procs import QUICK

from ganhpo import plots, report
from ganhpo.cli import main
from ganhpo.storage import open_storage

LR = FloatDistribution(5e-5, 5e-3, log=True)
SPACE = {
    "lr_g": LR,
    "lr_d": LR,
    "beta1": CategoricalDistribution((0.0, 0.5)),
    "loss": CategoricalDistribution(("ns", "hinge")),
}
R1 = FloatDistribution(0.01, 10.0, log=True)  # conditional, as r1_gamma is in the real specs


def make_study(tmp_path: Path, trials: list[dict[str, Any]], objective: str = "fid") -> Any:
    """A real SQLite study with the given trials: state, params, curve {step: value}, attrs,
    and files {name: bytes} uploaded to the artifact store ``tmp_path/artifacts`` as the
    worker does, while the trial runs."""
    storage = open_storage(f"sqlite:///{tmp_path / 'plots.db'}", create_schema=True)
    study = optuna.create_study(storage=storage, study_name="synthetic")
    study.set_user_attr("ganhpo:spec", {"study": {"objective": objective}})
    for spec in trials:
        space = dict(SPACE)
        if "r1_gamma" in spec["params"]:
            space["r1_gamma"] = R1
        study.enqueue_trial(spec["params"])
        trial = study.ask(space)
        for step, value in spec.get("curve", {}).items():
            trial.report(value, step)
        for key, value in spec.get("attrs", {}).items():
            trial.set_user_attr(key, value)
        for name, data in spec.get("files", {}).items():
            store = tmp_path / "artifacts"
            store.mkdir(exist_ok=True)
            (tmp_path / name).write_bytes(data)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=optuna.artifacts.FileSystemArtifactStore(store),
                file_path=str(tmp_path / name),
                study_or_trial=trial,
            )
            if name == spec.get("grid_attr"):  # the worker names its latest grid
                trial.set_user_attr("grid", artifact_id)
        state = spec.get("state", TrialState.COMPLETE)
        if state == TrialState.COMPLETE:
            study.tell(trial, spec["value"])
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)
    return study, storage


def png(color: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def p(lr_g: float, lr_d: float, beta1: float = 0.5, loss: str = "ns", **more: Any) -> dict:
    return {"lr_g": lr_g, "lr_d": lr_d, "beta1": beta1, "loss": loss, **more}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """Completed, pruned, failed and running trials, one with a conditional parameter.

    Shared by the tests of this module, which only read it.
    """
    return make_study(
        tmp_path_factory.mktemp("mixed"),
        [
            {"params": p(2e-4, 2e-4), "curve": {80: 900.0, 160: 700.0}, "value": 600.0,
             "attrs": {"fid": 600.0, "kid": 0.5, "status": "completed"}},
            {"params": p(1e-3, 1e-4, 0.0, "hinge"), "curve": {80: 1200.0},
             "state": TrialState.PRUNED, "attrs": {"status": "pruned at step 80"}},
            {"params": p(3e-3, 1e-3), "curve": {80: 500.0, 160: 300.0}, "value": 250.0,
             "attrs": {"fid": 250.0, "kid": 0.2, "status": "completed"},
             "files": {"grid_step_0000080.png": png(10), "grid_final.png": png(200),
                       "grid_step_0000160.png": png(50), "generator.pt": b"not a picture"}},
            {"params": p(1e-4, 3e-3, r1_gamma=1.0), "curve": {80: 800.0}, "value": 700.0,
             "files": {"grid_step_0000080.png": png(30), "grid_step_0000160.png": png(60)},
             "grid_attr": "grid_step_0000080.png"},
            {"params": p(5e-4, 5e-4), "state": TrialState.FAIL,
             "attrs": {"status": "failed: out of memory on the device"}},
            {"params": p(4e-4, 4e-4), "curve": {80: 1000.0}, "state": TrialState.RUNNING},
        ],
    )  # fmt: skip


# ------------------------------------------------------------------------------- data functions
def test_history_has_completed_trials_and_pruned_last_values(mixed: Any) -> None:
    study, _ = mixed
    info = plots._history_info(study)
    assert (info.label, info.direction) == ("FID", "minimize")
    assert info.completed == [0, 2, 3]
    assert (info.pruned_numbers, info.pruned_values) == ([1], [1200.0])
    assert info.drawable


def test_curves_mark_pruned_trials_and_leave_failed_ones_out(mixed: Any) -> None:
    study, _ = mixed
    info = plots._curves_info(study)
    by_number = {c.number: c for c in info.curves}
    assert sorted(by_number) == [0, 1, 2, 3, 5]  # the failed trial 4 is not drawn
    assert info.failed == [4]
    assert any("#4 (failed: out of memory on the device)" in n for n in info.notes)
    assert by_number[1].state == "PRUNED" and by_number[1].pruned_at == 80
    assert by_number[0].steps == [80, 160] and by_number[0].values == [900.0, 700.0]
    assert by_number[0].pruned_at is None
    assert by_number[5].state == "RUNNING"
    # No trial recorded its sampling std: no error bars and no note about them.
    assert all(s is None for c in info.curves for s in c.stds)
    assert not any("Error bars" in n for n in info.notes)


STD_TRIALS = [
    {"params": p(2e-4, 2e-4), "curve": {80: 900.0, 160: 700.0, 240: 650.0}, "value": 650.0,
     "attrs": {"fid_std": {"80": 3.2, "160": 1.9}}},  # none at 240
    {"params": p(1e-3, 1e-4), "curve": {80: 1200.0}, "state": TrialState.PRUNED,
     # unusable entries are skipped, not fatal
     "attrs": {"fid_std": {"80": 4.5, "x": 1.0, "160": -1.0, "240": "wide"}}},
    {"params": p(3e-3, 1e-3), "curve": {80: 500.0}, "value": 400.0},  # no attribute
]  # fmt: skip


def test_curves_carry_the_fid_sampling_std_where_recorded(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path, STD_TRIALS)
    info = plots._curves_info(study)
    stds = {c.number: c.stds for c in info.curves}
    assert stds == {0: [3.2, 1.9, None], 1: [4.5], 2: [None]}
    assert any(n.startswith("Error bars: ± one standard deviation of FID") for n in info.notes)


def test_fid_std_is_not_drawn_on_a_kid_study(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path, STD_TRIALS, objective="kid")
    info = plots._curves_info(study)
    assert info.label == "KID"
    assert all(s is None for c in info.curves for s in c.stds)


def test_curves_draw_one_line_per_chain_with_its_pbt_lineage(tmp_path: Path) -> None:
    """A PBT member's interval ends and it goes on from member 1's state: member 0's first
    trial is drawn as its successor, whose curve is member 1's up to step 80."""
    study, _ = make_study(
        tmp_path,
        [
            {"params": p(2e-4, 2e-4), "curve": {80: 900.0}, "state": TrialState.PRUNED},
            {"params": p(1e-3, 1e-3), "curve": {80: 400.0}, "state": TrialState.RUNNING},
        ],
    )
    first = study.trials[0]
    study.add_trial(
        optuna.create_trial(
            state=TrialState.COMPLETE,
            value=300.0,
            params=p(1.2e-3, 8e-4),
            distributions=first.distributions,
            intermediate_values={80: 400.0, 160: 300.0},
            user_attrs={"pbt": {"member": 0, "interval": 2, "parent": {"trial": 1, "step": 80}}},
            system_attrs={"retry_history": [0]},
        )
    )
    info = plots._curves_info(study)
    curves = {c.number: c for c in info.curves}
    assert sorted(curves) == [1, 2]  # trial 0 goes on as trial 2
    assert curves[2].lineage == "member 0; state of trial 1 at step 80"
    assert curves[2].values == [400.0, 300.0] and curves[1].lineage is None
    assert any(n.startswith("Population-based training: one line per member") for n in info.notes)
    figure = plots._draw_curves(study, info)
    hover = next(t.hovertemplate for t in figure.data if t.name == "#2 complete")
    assert "trial 2 (member 0; state of trial 1 at step 80)" in hover


def test_importances_need_two_completed_trials(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path, [{"params": p(2e-4, 2e-4), "value": 600.0}])
    info = plots._importance_info(study)
    assert info.params == [] and info.importances == []
    assert info.notes == ["Importances need at least 2 completed trials; this study has 1."]
    assert not info.drawable


def test_importances_rank_parameters(mixed: Any) -> None:
    study, _ = mixed
    info = plots._importance_info(study)
    assert set(info.params) >= {"lr_g", "lr_d", "beta1", "loss"}
    assert info.importances == sorted(info.importances, reverse=True)
    assert math.isclose(sum(info.importances), 1.0, abs_tol=1e-6)


def test_parallel_and_slices_note_conditional_parameters(mixed: Any) -> None:
    study, _ = mixed
    info = plots._parallel_info(study)
    assert info.numbers == [0, 2, 3]
    assert list(info.params) == ["lr_g", "lr_d", "beta1", "loss", "r1_gamma"]
    assert info.params["r1_gamma"] == [3] and info.params["lr_d"] == [0, 2, 3]
    assert info.conditional == ["r1_gamma"]
    assert any("r1_gamma" in n for n in info.notes)
    assert plots._slice_info(study).notes == []  # the slices show them where set


def test_contour_only_when_both_learning_rates_are_searched(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'c.db'}", create_schema=True)
    study = optuna.create_study(storage=storage)
    study.add_trial(
        optuna.trial.create_trial(value=1.0, params={"lr_g": 1e-3}, distributions={"lr_g": LR})
    )
    assert plots._contour_info(study) is None


def test_contour_needs_two_values_of_each_parameter(mixed: Any, tmp_path: Path) -> None:
    study, _ = mixed
    info = plots._contour_info(study)
    assert info is not None and info.drawable
    assert (info.x_name, info.y_name, info.numbers, info.distinct) == ("lr_g", "lr_d", [0, 2, 3],
                                                                       (3, 3))  # fmt: skip
    study, _ = make_study(tmp_path, [{"params": p(2e-4, 2e-4), "value": 600.0},
                                     {"params": p(2e-4, 1e-3), "value": 500.0}])  # fmt: skip
    info = plots._contour_info(study)
    assert info is not None and not info.drawable and info.distinct == (1, 2)
    assert "2 or more values of both lr_g and lr_d; there are 1 and 2" in info.notes[0]


def test_timeline_counts_states_and_explains_failures(mixed: Any) -> None:
    study, _ = mixed
    info = plots._timeline_info(study)
    assert info.states == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1}
    assert any("dead or stopped worker" in n for n in info.notes)


def test_index_ranks_the_best_completed_trials(mixed: Any) -> None:
    study, _ = mixed
    info = report._index_info(study, top=2)
    assert [r.number for r in info.best] == [2, 0]
    assert (info.best[0].fid, info.best[0].kid, info.best[0].status) == (250.0, 0.2, "completed")
    assert info.states == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1}
    assert report._index_info(study).best[-1].number == 3  # no fid attribute: the value


# ------------------------------------------- Optuna's figures, restyled (plotly, no browser)
def test_history_draws_optunas_best_so_far_and_the_pruned_trials(mixed: Any) -> None:
    study, _ = mixed
    fig = plots._draw_history(study, plots._history_info(study))
    traces = {t.name: t for t in fig.data}
    assert list(traces["FID (completed)"].x) == [0, 2, 3]
    best = dict(zip(traces["best so far"].x, traces["best so far"].y, strict=True))
    assert [best[n] for n in (0, 2, 3)] == [600.0, 250.0, 250.0]
    pruned = traces["pruned (last value)"]
    assert (list(pruned.x), list(pruned.y)) == ([1], [1200.0])
    assert pruned.marker.color == plots.PRUNED["color"]
    assert fig.layout.yaxis.title.text == "FID"


def test_history_of_a_maximized_study_keeps_the_largest(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'max.db'}", create_schema=True)
    study = optuna.create_study(storage=storage, direction="maximize")
    for v in (1.0, 3.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=v))
    info = plots._history_info(study)
    assert (info.label, info.direction) == ("value", "maximize")
    best = next(t for t in plots._draw_history(study, info).data if t.name == "best so far")
    assert list(best.y) == [1.0, 3.0, 3.0]


def test_curves_draw_pruned_gray_dashed_and_the_std_as_error_bars(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path, STD_TRIALS)
    fig = plots._draw_curves(study, plots._curves_info(study))
    traces = {t.name: t for t in fig.data if t.name}
    assert set(traces) == {"#0 complete", "#1 pruned", "#2 complete"}
    assert list(traces["#0 complete"].error_y.array) == [3.2, 1.9, None]
    assert traces["#2 complete"].error_y.array is None  # no attribute: nothing extra
    pruned = traces["#1 pruned"]
    assert (pruned.line.color, pruned.line.dash) == (plots.PRUNED["color"], "dash")
    assert list(pruned.error_y.array) == [4.5]
    assert fig.layout.yaxis.title.text == "FID" and fig.layout.showlegend


def test_parallel_lines_all_show_on_a_white_page(mixed: Any) -> None:
    """Optuna colours the worst trial white; every line is darkened to show."""
    study, _ = mixed
    figure = plots._draw_parallel(study, plots._parallel_info(study))
    colors = [t.line.color for t in figure.data if t.mode == "lines"]
    assert colors
    for color in colors:
        channels = [float(v) for v in color[4:-1].split(",")]
        assert max(channels) <= 0.72 * 255 + 1, color


def test_importances_are_drawn_from_the_computed_ones(mixed: Any) -> None:
    study, _ = mixed
    info = plots._importance_info(study)
    (bars,) = plots._draw_importances(study, info).data
    drawn = dict(zip(bars.y, bars.x, strict=True))
    assert drawn == pytest.approx(dict(zip(info.params, info.importances, strict=True)))


def test_timeline_draws_pruned_trials_gray(mixed: Any) -> None:
    study, _ = mixed
    fig = plots._draw_timeline(study, plots._timeline_info(study))
    colors = {t.name: t.marker.color for t in fig.data}
    assert colors["pruned"] == plots.PRUNED["color"]
    assert set(colors) == {"complete", "pruned", "fail", "running"}


# ----------------------------------------------------------------------------- written report
def test_report_shows_each_best_trials_latest_grid(mixed: Any, tmp_path: Path) -> None:
    study, storage = mixed
    store = Path(storage.engine.url.database).parent / "artifacts"
    index = report.write_report(study, tmp_path / "report", storage=storage, artifacts=str(store))
    text = index.read_text()
    grids = tmp_path / "report" / "grids"
    assert "src='grids/trial-00002.png'" in text
    assert (grids / "trial-00002.png").read_bytes() == png(200)  # the final one
    assert (grids / "trial-00003.png").read_bytes() == png(30)  # the one its attribute names
    assert text.count("no sample grid") == 1  # trial 0
    for page in plots.PAGES:
        if page.filename == "pareto.html":  # one objective: no trade-off, no page
            assert not (tmp_path / "report" / page.filename).exists()
            assert f"href='{page.filename}'" not in text
            continue
        assert 'id="plot"' in (tmp_path / "report" / page.filename).read_text(), page.filename
        assert f"href='{page.filename}'" in text


def test_report_without_an_artifact_store_has_no_grids(
    mixed: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study, storage = mixed
    index = report.write_report(
        study, tmp_path / "r", storage=storage, artifacts=str(tmp_path / "gone")
    )
    assert "<img" not in index.read_text()
    assert "not found" in caplog.text and "--artifacts DIR" in caplog.text
    assert not (tmp_path / "gone").exists()  # a report never creates a store


def test_report_of_an_empty_study_writes_notes_not_plots(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path, [])
    index = report.write_report(study, tmp_path / "r")
    assert "No trial has completed yet" in index.read_text()
    for page, note in (("history", "No trial has completed yet"),
                       ("timeline", "The study has no trials yet")):  # fmt: skip
        text = (tmp_path / "r" / f"{page}.html").read_text()
        assert note in text and 'id="plot"' not in text
    assert not (tmp_path / "r" / "contour.html").exists()  # nothing searched


# ------------------------------------------------------------------------------- ganhpo plot
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plot_a_real_study(
    quick_study: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "report"
    code, out, err = run(capsys, "plot", "quick", "--out", str(out_dir), "--storage",
                         quick_study["storage"])  # fmt: skip
    assert code == 0, err
    assert out == f"{out_dir / 'index.html'}\n"  # the result on stdout, progress on stderr
    assert "wrote" in err
    names = {f.name for f in out_dir.iterdir()}
    single = {pg.filename for pg in plots.PAGES} - {"pareto.html"}  # one objective: no front
    assert names >= {"index.html", "plotly.min.js", *single} and "pareto.html" not in names
    for page in out_dir.glob("*.html"):
        text = page.read_text()
        # Offline: no script or stylesheet from the network, plotly.js from the folder.
        assert not re.search(r"""(src|href)=["']https?://""", text), page.name
        if page.name != "index.html":
            assert '<script src="plotly.min.js"' in text
            assert 'id="plot"' in text, page.name  # every figure of a real study is drawn

    study = optuna.load_study(study_name="quick", storage=quick_study["storage"])
    trials = study.get_trials(deepcopy=False)
    curves = plots._curves_info(study)
    pruned = [c for c in curves.curves if c.state == "PRUNED"]
    for c in pruned:  # the prune step is the one the worker recorded: the pruner's or the
        # guard's (a hopeless trial the guard stopped is PRUNED too, as the sampled trials
        # decide: "stopped: no hope at step 80: ...")
        status = trials[c.number].user_attrs["status"]
        assert status == f"pruned at step {c.pruned_at}" or (
            status.startswith("stopped: ") and f" at step {c.pruned_at}:" in status
        ), (status, c.pruned_at)
    info = plots._importance_info(study)
    assert set(info.params) == {"lr_g", "lr_d", "beta1", "loss"}
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    assert info.notes[-1].startswith(f"Only {n_complete} completed trials")
    index = report._index_info(study)
    assert index.best[0].value == study.best_value and index.best[0].kid is not None


def test_plot_missing_study_is_one_line(
    quick_study: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "plot", "quik", "--out", str(tmp_path / "r"), "--storage",
                       quick_study["storage"])  # fmt: skip
    assert code == 1
    assert err.strip().splitlines() == [
        "ganhpo: error: study 'quik' does not exist (did you mean 'quick'?); studies here: "
        "quick; create it with 'ganhpo study create SPEC'"
    ]


def test_plot_missing_database_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "plot", "quick", "--out", "r")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_plot_unwritable_out_is_one_line(
    quick_study: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "report"
    code, _, err = run(capsys, "plot", "quick", "--out", str(out), "--storage",
                       quick_study["storage"])  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganhpo: error: ")
    assert str(out) in lines[0] or str(blocker) in lines[0]


@pytest.mark.parametrize("running", [0, 1])
def test_plot_before_any_trial_completed_says_what_to_do(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    running: int,
) -> None:
    """Not '--artifacts DIR': no grid is missing, no trial has finished to have one."""
    monkeypatch.chdir(tmp_path)  # no ./ganhpo-artifacts
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert run(capsys, "study", "create", str(QUICK), "--storage", url)[0] == 0
    if running:  # a worker has started a trial and is still training it
        storage = open_storage(url)
        optuna.load_study(study_name="quick", storage=storage).ask()
        storage.engine.dispose()
    code, out, err = run(capsys, "plot", "quick", "--out", "r", "--storage", url)
    assert code == 0 and out == "r/index.html\n"
    assert "--artifacts" not in err and "not found" not in err
    (warning,) = [line for line in err.splitlines() if not line.startswith("wrote ")]
    assert warning.startswith("no trial of 'quick' has completed yet")
    fix = (
        "wait for the 1 running trial(s)"
        if running
        else "run a worker ('ganhpo worker --study quick', with the same storage)"
    )
    assert f": {fix} until a trial completes, then run 'ganhpo plot' again" in warning


def test_pareto_page_only_for_a_study_that_weighs_a_cost(mixed: Any) -> None:
    from test_study import VALUES, study_of

    assert plots._pareto_info(mixed[0]) is None  # one objective: the page does not apply
    study = study_of(VALUES)
    info = plots._pareto_info(study)
    assert info is not None and info.drawable
    assert info.labels == ["FID", "G parameters"] and info.front == [4, 2, 1]
    assert "3 of 6 completed trials are on the front" in info.notes[0]
    # The single-objective figures plot the FID of such a study.
    history = plots._history_info(study)
    assert history.label == "FID" and history.completed == list(range(6))
    fig = plots._draw_pareto(study, info)
    assert fig.layout.xaxis.title.text == "FID" and fig.layout.yaxis.title.text == "G parameters"
    assert plots._draw_history(study, history).data  # Optuna drew it with the FID as target
