"""Strategy ``grow`` with real workers on PostgreSQL: the search spends its share of the compute
budget, the best completed trial goes on from its final state for the rest, a worker killed
mid-growth is replaced and the grown trial resumes from its checkpoint, the budget stays exact,
nothing is left behind, and ``study best --as-config`` + ``ganhpo train`` give the grown trial's
FID again.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from faults import check_no_orphans, create_study, load, start_worker
from optuna.trial import TrialState
from procs import finish, ganhpo, wait_for

from ganhpo.chains import GROW_ATTR, checkpoint_of, counted_trials, retry_history, steps_spent

pytestmark = pytest.mark.slow  # started first (tests/conftest.py)

MAX_STEPS = 960  # the search: 480 steps (two trials of 240); growth: 480 more for the best
GROW = {
    "max_trials = 6 ": f"max_steps = {MAX_STEPS} ",
    # The guard off, as in every FAST study (tests/worker/test_guard.py tests it).
    "[pruner]": '[strategy]\nname = "grow"\nsearch_fraction = 0.5\nguard = false\n\n[pruner]',
}


def _grown_checkpoint(url: str) -> dict | None:
    """The grown trial's checkpoint once it is beyond its parent's final state."""
    for t in load(url).get_trials(deepcopy=False):
        if GROW_ATTR in t.system_attrs and t.state == TrialState.RUNNING:
            ckpt = checkpoint_of(t)
            if ckpt and ckpt["step"] >= 320:
                return {"number": t.number, **ckpt}
    return None


def test_the_best_trial_grows_through_a_kill_and_is_reproduced(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(postgres_url, tmp_path, env, GROW)
    workers = {name: start_worker(postgres_url, tmp_path, env, name) for name in ("a", "b")}
    grown = wait_for(lambda: _grown_checkpoint(postgres_url), 600, "a checkpoint mid-growth")
    assert isinstance(grown, dict)
    # Kill the worker that grows the trial: the other one (waiting for the study's last trial)
    # takes it over after the grace period and resumes it from that checkpoint.
    victim = next(
        name
        for name in workers
        if f"trial {grown['number']} started" in (tmp_path / f"{name}.log").read_text()
    )
    os.kill(workers[victim].pid, signal.SIGKILL)
    assert finish(workers[victim]) == -signal.SIGKILL
    survivor = next(name for name in workers if name != victim)
    assert finish(workers[survivor]) == 0, (tmp_path / f"{survivor}.log").read_text()

    trials = load(postgres_url).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    search = [t for t in trials if not retry_history(t)]
    assert [t.user_attrs["steps"] for t in search] == [240, 240]
    parent = min(search, key=lambda t: t.value)  # the best search trial grew
    grown_trial = next(t for t in trials if GROW_ATTR in t.system_attrs)
    assert grown_trial.system_attrs[GROW_ATTR] == {"from": parent.number, "steps": 240,
                                                  "length": 720}  # fmt: skip
    final = next(t for t in trials if t.state == TrialState.COMPLETE and t.number not in
                 (s.number for s in search))  # fmt: skip
    # The grown trial was handed over and its retry resumed mid-growth, at the checkpoint.
    assert retry_history(final) == [parent.number, grown_trial.number]
    resumed = final.user_attrs["resumed_at_step"]
    assert resumed >= grown["step"] >= 320
    # What the lost worker had reserved beyond its checkpoint stays spent: the retry ends
    # that much short of 720, with its final evaluation where the budget ran out.
    lost = grown_trial.user_attrs["steps_reserved"] - (resumed - 240)
    assert 0 < lost <= 80
    length = final.user_attrs["steps"]
    assert length == final.user_attrs["length"] == 720 - lost
    assert final.user_attrs["status"] == "completed"
    assert sorted(final.intermediate_values) == [
        s for s in (80, 160, 240, 320, 400, 480, 560, 640) if s < length
    ] + ([length] if length % 80 == 0 and length < 720 else [])
    # One chain for the two trials and their growth; the budget exact.
    assert counted_trials(trials) == 2
    spent = steps_spent(trials)
    assert spent == MAX_STEPS, spent
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")

    shown = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert "strategy   grow (" in shown.stdout
    split = (
        r"split      search 50% of the budget \(480 steps; spent 480 steps\), "
        r"growth the rest \(spent 480 steps\)"
    )
    assert re.search(split, shown.stdout), shown.stdout
    went_on = f"trial {parent.number} goes on as trial {grown_trial.number}: from step 240 to 720"
    assert went_on in shown.stdout
    listed = ganhpo("study", "trials", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert f"grown as trial {grown_trial.number}" in listed.stdout

    # The grown trial's configuration, trained from scratch to its length: the same FID.
    config = ganhpo(
        "study", "best", "quick", "--trial", str(final.number), "--as-config",
        "--storage", postgres_url, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert config.returncode == 0, config.stderr
    assert f"steps = {length}" in config.stdout
    (tmp_path / "best.toml").write_text(config.stdout)
    trained = ganhpo("train", "best.toml", cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr
    assert f"FID {final.value:.4f}" in trained.stdout, (trained.stdout, final.value)
    print(
        f"grown trial {final.number}: resumed at step {resumed}, {lost} steps lost with the "
        f"killed worker, ended at {length} with FID {final.value:.4f} (its parent at 240: "
        f"{parent.value:.4f}), reproduced by ganhpo train"
    )
