"""Real ``ganhpo worker`` processes sharing one study: PostgreSQL and the SQLite default."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from procs import QUICK, finish, ganhpo, start, worker_env

from ganhpo.storage import open_storage

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache")


def run_workers(n: int, args: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    procs = [start("worker", *args, cwd=cwd, env=env, log=cwd / f"w{i}.log") for i in range(n)]
    return [(finish(p), (cwd / f"w{i}.log").read_text()) for i, p in enumerate(procs)]


def check_finished_study(
    storage: str, name: str, budget: int, *, pruned: bool = True
) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the budget ended cleanly with its records; ``pruned``: some trial was
    pruned (left to the caller: with 3 workers, which parameters TPE proposes depends on when
    each trial reports, and 7 trials can all land in the best third)."""
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == budget, [t.state for t in trials]
    assert sorted(t.number for t in trials) == list(range(budget))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [
        (t.number, t.state, t.user_attrs.get("status")) for t in trials
    ]
    for t in trials:
        assert t.intermediate_values, t.number  # FID stored at every evaluation
        assert set(t.intermediate_values) <= {80, 160, 240}
        assert all(v > 0 for v in t.intermediate_values.values())
        # Each evaluation's sampling std, recorded before its report (the pruner may read it).
        stds = t.user_attrs["fid_std"]
        assert set(stds) == {str(step) for step in t.intermediate_values}, t.number
        assert all(0 < std < 0.2 * t.intermediate_values[int(s)] for s, std in stds.items())
        status = t.user_attrs["status"]
        if t.state == TrialState.COMPLETE:
            assert status == "completed"
            assert t.value == t.intermediate_values[240] and t.user_attrs["steps"] == 240
            assert t.user_attrs["fid"] == t.value and t.user_attrs["kid"] > -1
        else:
            step = max(t.intermediate_values)
            assert status == f"pruned at step {step}"
            assert t.user_attrs["steps"] == step
            assert "kid" not in t.user_attrs  # [eval] kid = "final": only the final has KID
        assert t.user_attrs["grid"]  # the latest sample grid, an artifact of the trial
        for key in ("seed", "device", "host", "wall_time", "images_per_sec"):
            assert key in t.user_attrs, (t.number, key)
    # No trial ran twice: every trial has its own seed and its own parameters.
    assert len({t.user_attrs["seed"] for t in trials}) == budget
    assert len({tuple(sorted(t.params.items())) for t in trials}) == budget
    if pruned:
        assert any(t.state == TrialState.PRUNED for t in trials)
    assert trials[0].params == {"lr_g": 5e-4, "lr_d": 5e-4, "beta1": 0.5, "loss": "ns"}
    return trials


def test_three_workers_on_postgresql(postgres_url: str, tmp_path: Path, env: dict) -> None:
    created = ganhpo(
        "study", "create", str(QUICK), "--storage", postgres_url, cwd=tmp_path, env=env
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "quick"
    budget = 7
    results = run_workers(
        3,
        ["--study", "quick", "--storage", postgres_url, "--max-total-trials", str(budget)],
        cwd=tmp_path,
        env=env,
    )
    for code, out in results:
        assert code == 0, out
        assert f"the study's budget of {budget} trials is spent" in out
    check_finished_study(postgres_url, "quick", budget, pruned=False)
    # Every worker took part.
    assert all("started" in out for _, out in results)


def test_two_workers_on_the_sqlite_default(tmp_path: Path, env: dict) -> None:
    created = ganhpo("study", "create", str(QUICK), cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "ganhpo.db").is_file()
    results = run_workers(2, ["--study", "quick"], cwd=tmp_path, env=env)
    for code, out in results:
        assert code == 0, out
    trials = check_finished_study(f"sqlite:///{tmp_path / 'ganhpo.db'}", "quick", 6)  # max_trials
    # Every evaluation's sample grid is a PNG artifact of its trial (optuna-dashboard shows it).
    storage = open_storage(f"sqlite:///{tmp_path / 'ganhpo.db'}")
    for t in trials:
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=storage)
        pngs = [m for m in metas if m.mimetype == "image/png"]
        assert len(pngs) == len(t.intermediate_values)
        png = (tmp_path / "ganhpo-artifacts" / t.user_attrs["grid"]).read_bytes()
        assert png.startswith(b"\x89PNG")

    shown = ganhpo("study", "show", "quick", "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr

    info = json.loads(shown.stdout)
    assert "ETA" in (tmp_path / "w0.log").read_text()
    assert info["n_trials"] == 6 and info["best"]["value"] > 0
    rows = ganhpo("study", "trials", "quick", "--csv", cwd=tmp_path, env=env)
    assert rows.returncode == 0 and len(rows.stdout.strip().splitlines()) == 7
    # The best trial, exported as a config that `ganhpo train` accepts and reproduces.
    best = ganhpo("study", "best", "quick", "--as-config", cwd=tmp_path, env=env)
    assert best.returncode == 0, best.stderr
    (tmp_path / "best.toml").write_text(best.stdout)
    from ganhpo.spec import load_train_config
    from ganhpo.study import load_study, study_spec, trial_config

    study = load_study("quick", storage)
    assert load_train_config(tmp_path / "best.toml") == trial_config(
        study_spec(study), study.best_trial
    )
    retrain = ganhpo("train", "best.toml", "--steps", "20", "--json", cwd=tmp_path, env=env)
    assert retrain.returncode == 0, retrain.stderr
    assert json.loads(retrain.stdout)["runs"][0]["step"] == 20
    # A second worker finds the budget spent and exits at once, successfully.
    again = ganhpo("worker", "--study", "quick", cwd=tmp_path, env=env)
    assert again.returncode == 0 and "budget of 6 trials is spent" in again.stderr
