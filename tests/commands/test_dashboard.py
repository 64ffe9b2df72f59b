"""``ganhpo dashboard``: optuna-dashboard serving a real study, read back through its HTTP API."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from browser import errors, screenshot

from ganhpo.artifacts import STORE_MARKER_ATTR
from ganhpo.chains import CHECKPOINT_ATTR, CHECKPOINT_PENDING_ATTR, checkpoint_of
from ganhpo.cli import main
from ganhpo.study import SPEC_ATTR

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read()  # type: ignore[no-any-return]


@contextlib.contextmanager
def serving(cwd: str | Path, *args: str) -> Iterator[str]:
    """``python -m ganhpo dashboard ARGS`` in ``cwd``; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANHPO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganhpo", "dashboard", "--port", str(port), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""  # printed once it listens
        if not line:
            proc.wait(10)
            pytest.fail(f"ganhpo dashboard exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
        assert line.strip() == f"http://localhost:{port}/dashboard/"
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                get(f"{base}/api/meta")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module")
def dashboard(quick_study: dict[str, str]) -> Iterator[str]:
    """``ganhpo dashboard`` in the study's directory; yields its base URL.

    No --artifacts: the store comes from the study, as for a user who just types the command.
    """
    with serving(quick_study["dir"]) as base:
        yield base


def study_detail(base: str) -> tuple[int, dict[str, Any]]:
    studies = json.loads(get(f"{base}/api/studies"))["study_summaries"]
    (quick,) = [s for s in studies if s["study_name"] == "quick"]
    return quick["study_id"], json.loads(get(f"{base}/api/studies/{quick['study_id']}"))


def test_dashboard_serves_trials_and_their_curves(
    dashboard: str, quick_study: dict[str, str]
) -> None:
    _, detail = study_detail(dashboard)
    study = optuna.load_study(study_name="quick", storage=quick_study["storage"])
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == sorted(trials)
    for number, t in served.items():
        expected = trials[number]
        assert t["state"] == expected.state.name.capitalize()
        curve = {v["step"]: v["value"] for v in t["intermediate_values"]}
        assert curve == pytest.approx(expected.intermediate_values)
    assert detail["has_intermediate_values"]
    assert detail["best_trials"][0]["number"] == study.best_trial.number


def test_dashboard_names_the_objective(dashboard: str) -> None:
    """optuna-dashboard labels the values FID (Optuna's metric name), not "Objective 0"."""
    _, detail = study_detail(dashboard)
    assert detail["objective_names"] == ["FID"]


def test_dashboard_names_the_objective_of_a_study_created_before_ganhpo_did(
    quick_study: dict[str, str], tmp_path: Path
) -> None:
    shutil.copy(Path(quick_study["dir"]) / "ganhpo.db", tmp_path / "ganhpo.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "ganhpo.db")) as db, db:
        db.execute("DELETE FROM study_system_attributes WHERE key = 'study:metric_names'")
    with serving(tmp_path, "--artifacts", quick_study["artifacts"]) as base:
        _, detail = study_detail(base)
    assert detail["objective_names"] == ["FID"]


def test_dashboard_serves_the_trials_artifacts(dashboard: str, quick_study: dict[str, str]) -> None:
    study_id, detail = study_detail(dashboard)
    artifacts = [(t, a) for t in detail["trials"] for a in t["artifacts"]]
    assert artifacts, "the completed trials carry at least their generator"
    images = [(t, a) for t, a in artifacts if a["mimetype"] == "image/png"]
    trial, artifact = (images or [(t, a) for t, a in artifacts if a["filename"] == "generator.pt"])[
        0
    ]
    data = get(f"{dashboard}/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}")
    on_disk = (Path(quick_study["artifacts"]) / artifact["artifact_id"]).read_bytes()
    assert data == on_disk
    if images:  # a sample grid the worker uploaded
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        assert "G" in saved


def test_dashboard_serves_each_artifact_with_its_mime_type(dashboard: str) -> None:
    """Explicit types, not guessed from the name (a ".pt" file guesses as a SNES page table)."""
    study_id, detail = study_detail(dashboard)
    served: dict[str, set[str]] = {}
    for trial in detail["trials"]:
        for artifact in trial["artifacts"]:
            url = f"{dashboard}/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}"
            with urllib.request.urlopen(url, timeout=30) as response:
                content_type = response.headers["Content-Type"]
            assert content_type == artifact["mimetype"]
            served.setdefault(Path(artifact["filename"]).suffix, set()).add(content_type)
    assert served[".pt"] == {"application/octet-stream"}
    assert served[".png"] == {"image/png"}


def test_dashboard_without_the_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if absent
    assert main(["dashboard", "--storage", "sqlite:///nowhere.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ganhpo: error: ganhpo dashboard needs optuna-dashboard: pip install 'ganhpo[dashboard]'"
    ]


def test_dashboard_on_a_taken_port_is_one_line(
    quick_study: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["dashboard", "--storage", quick_study["storage"], "--port", str(port)]
        assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "pick another --port" in lines[0], err


def test_dashboard_without_a_database_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    assert main(["dashboard", "--port", str(free_port())]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0]
    assert not (tmp_path / "ganhpo-artifacts").exists()


def test_dashboard_serves_the_pareto_front_of_a_study_of_fid_and_size(
    pareto_study: dict[str, str],
) -> None:
    with serving(pareto_study["dir"]) as base:
        _, detail = study_detail(base)
    study = optuna.load_study(study_name="quick", storage=pareto_study["storage"])
    assert detail["objective_names"] == ["FID", "G parameters"]
    assert len(detail["directions"]) == 2
    served = sorted(t["number"] for t in detail["best_trials"])  # optuna-dashboard's front
    assert served == sorted(t.number for t in study.best_trials) and served
    by_number = {t["number"]: t for t in detail["trials"]}
    for t in study.best_trials:
        assert by_number[t.number]["values"] == pytest.approx(t.values)
    assert detail["has_intermediate_values"]  # the FID curves, though no trial is pruned


def test_dashboard_lists_and_serves_an_ensemble_of_the_study(
    dashboard: str, quick_study: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'ganhpo ensemble' records its mixture as an artifact of the study: the study's page
    lists it, and the dashboard serves its bytes."""
    out = tmp_path / "ens"
    cache = str(Path(quick_study["dir"]) / "cache")
    argv = ["ensemble", "quick", "--top", "2", "--out", str(out), "--samples", "500",
            "--fit-samples", "200", "--storage", quick_study["storage"], "--cache-dir", cache,
            "--json", "-q"]  # fmt: skip
    assert main(argv) == 0
    artifact = json.loads(capsys.readouterr().out)["artifact"]
    study_id, detail = study_detail(dashboard)
    listed = {a["artifact_id"]: a for a in detail["artifacts"]}
    assert listed[artifact]["filename"] == "ensemble-top2-fitted.pt"
    assert (
        get(f"{dashboard}/artifacts/{study_id}/{artifact}") == (out / "generator.pt").read_bytes()
    )


# What the machine keeps for itself, never shown to a person on the dashboard (user attributes
# are; ganhpo keeps these as system attributes): the checkpoint bookkeeping of a trial (whose
# files a finished trial no longer has), the study's stored spec and its store's marker.
BOOKKEEPING = {"checkpoint", "checkpoint_pending", CHECKPOINT_ATTR, CHECKPOINT_PENDING_ATTR}


def test_a_finished_trial_s_page_shows_its_results_and_no_bookkeeping(
    browser: Any, dashboard: str, quick_study: dict[str, str]
) -> None:
    """The dashboard's trial page of a finished trial, in headless Chromium: its results are
    there, the checkpoint it had while it ran is not; nor is the study's raw spec."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    study = optuna.load_study(study_name="quick", storage=quick_study["storage"])
    study_id, detail = study_detail(dashboard)
    assert not {a["key"] for a in detail["user_attrs"]} & {SPEC_ATTR, STORE_MARKER_ATTR}
    for served in detail["trials"]:
        assert not {a["key"] for a in served["user_attrs"]} & BOOKKEEPING, served["number"]
    # The trial that checkpointed (every trial of the quick study that trained past an
    # evaluation did): what the machine knew of it, the dashboard does not show.
    trained = [t for t in study.get_trials(deepcopy=False) if checkpoint_of(t) is not None]
    assert trained, "the quick study's trials record checkpoints while they run"
    number = min(t.number for t in trained if t.state.is_finished())

    def body(driver: Any) -> str:
        return str(driver.find_element(By.TAG_NAME, "body").text)

    browser.get(f"{dashboard}/dashboard/studies/{study_id}/trials?numbers={number}")
    WebDriverWait(browser, 30).until(lambda d: "User Attributes" in body(d) and "fid" in body(d))
    text = body(browser)
    screenshot(browser, "dashboard-finished-trial")
    assert "images_per_sec" in text and "host" in text, text  # what a person reads
    assert "checkpoint" not in text.lower(), text
    assert "ganhpo:spec" not in text
    assert not errors(browser)
    browser.get(f"{dashboard}/dashboard/studies/{study_id}")
    WebDriverWait(browser, 30).until(lambda d: "quick" in body(d))
    screenshot(browser, "dashboard-study")
    assert "ganhpo:spec" not in body(browser) and "store_marker" not in body(browser)
