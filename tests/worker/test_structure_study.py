"""The shipped structure-searching study (studies/mnist-structure.toml: networks, regularisers
and optimiser), scaled down to a few short trials, runs to completion on real MNIST with 2
workers on PostgreSQL."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from procs import ROOT, finish, ganhpo, start

from ganhpo.chains import seconds_spent
from ganhpo.storage import open_storage

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)

SPEC = ROOT / "studies" / "mnist-structure.toml"
SMALLER = {  # the same search, trials of 60 steps and narrow networks
    "max_trials = 60": "max_trials = 4",
    "max_device_hours = 2 ": "max_device_hours = 0.05 ",  # 180 s: the 4 trials end it first
    "steps = 4000": "steps = 60",
    "every = 500": "every = 30",
    "samples = 2000": "samples = 300",
    "final_samples = 10000": 'final_samples = 300\nkid = "off"',
    "width_g = { choices = [16, 32, 64] }": "width_g = { choices = [8, 16] }",
    "width_d = { choices = [16, 32, 64] }": "width_d = { choices = [8, 16] }",
    "width_g = 32\n": "width_g = 16\n",
    "width_d = 32\n": "width_d = 16\n",
    # Trials of the searched structures to their length, as before strategy grow became the
    # default of a compute budget (its growth is tested in tests/worker/test_grow*.py).
    "[[baselines]]": '[strategy]\nname = "optuna"\n\n[[baselines]]',
}


def test_the_structure_study_runs_to_completion(
    postgres_url: str, tmp_path: Path, env: dict[str, str], mnist_dir: Path
) -> None:
    env = {**env, "GANHPO_DATA_DIR": str(mnist_dir)}  # the full MNIST, found as a user's
    text = SPEC.read_text()
    for old, new in SMALLER.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    spec = tmp_path / "structure.toml"
    spec.write_text(text)
    created = ganhpo("study", "create", str(spec), "--storage", postgres_url, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    args = ["worker", "--study", "mnist-structure", "--storage", postgres_url]
    workers = [start(*args, cwd=tmp_path, env=env, log=tmp_path / f"w{i}.log") for i in range(2)]
    codes = [finish(w) for w in workers]
    assert codes == [0, 0], [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    study = optuna.load_study(study_name="mnist-structure", storage=open_storage(postgres_url))
    trials = study.get_trials(deepcopy=False)
    assert trials and all(t.state.is_finished() for t in trials)
    # Trained, not merely ended: no trial failed, and the baseline and at least one searched
    # structure completed with a finite FID (a FAILED trial is finished too).
    states = [t.state for t in trials]
    assert TrialState.FAIL not in states, [t.user_attrs.get("status") for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2 and trials[0] in complete, states
    assert all(t.value is not None and math.isfinite(t.value) for t in complete)
    assert 0 < seconds_spent(trials) <= 180
    baseline = trials[0]
    assert baseline.params["arch"] == "dcgan" and baseline.params["width_g"] == 16
    for t in trials:
        assert {"arch", "width_g", "width_d", "latent_dim", "depth", "lr_g", "rotation"} <= set(
            t.params
        )
        assert ("spectral_norm" in t.params) == (t.params["arch"] == "dcgan")  # conditional
        assert t.user_attrs["g_params"] > 0 and t.user_attrs["d_params"] > 0
