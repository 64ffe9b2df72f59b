"""``ganhpo worker --workers N`` / ``--devices LIST``: several worker processes on one machine,
started by one command that passes SIGTERM on to each and exits with the worst status."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from faults import TINY, handed_over, load, retry_of
from optuna.trial import TrialState
from procs import finish, ganhpo, spec_variant, start, wait_for, worker_env

from ganhpo.chains import checkpoint_of, counted_trials
from ganhpo.commands.worker import worst_exit_code


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache")


def test_two_processes_share_a_study_and_both_hand_back_on_sigterm(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    # Trials long enough (400 steps) for both processes to be mid-trial at once.
    spec = spec_variant(
        tmp_path, {**TINY, "max_trials = 6 ": "max_trials = 3 ", "steps = 20": "steps = 400"}
    )
    done = ganhpo("study", "create", str(spec), "--storage", postgres_url, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    env = {**env, "GANHPO_STORAGE": postgres_url}  # as a user keeps it: off the command line
    log = tmp_path / "workers.log"
    parent = start("worker", "--study", "quick", "--workers", "2", cwd=tmp_path, env=env, log=log)

    def two_checkpointed() -> list[int]:
        trials = load(postgres_url).get_trials(deepcopy=False)
        running = [
            t.number
            for t in trials
            if t.state == TrialState.RUNNING and (checkpoint_of(t) or {}).get("step")
        ]
        return running if len(running) == 2 else []

    numbers = wait_for(two_checkpointed, 300, "two trials running with a checkpoint each")
    # Two worker processes (children of the command), each with its own trial.
    children = [
        int(p) for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
    ]
    assert len(children) == 2
    os.kill(parent.pid, signal.SIGTERM)
    assert finish(parent, timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert text.count("SIGTERM: checkpointing and handing the trial back") == 2, text
    trials = load(postgres_url).get_trials(deepcopy=False)
    assert sorted(t.number for t in handed_over(trials)) == sorted(numbers)  # type: ignore[arg-type]
    states = [(t.number, t.state.name, t.user_attrs.get("status")) for t in trials]
    assert counted_trials(trials) == 0, (states, text[-3000:])  # nothing spent
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for pid in children:  # none left behind
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )

    # Both go on elsewhere from their checkpoints; the budget is spent exactly.
    rest = start(
        "worker",
        "--study",
        "quick",
        "--workers",
        "2",
        cwd=tmp_path,
        env=env,
        log=tmp_path / "rest.log",
    )
    assert finish(rest) == 0, (tmp_path / "rest.log").read_text()
    trials = load(postgres_url).get_trials(deepcopy=False)
    assert counted_trials(trials) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for n in numbers:  # type: ignore[union-attr]
        assert retry_of(trials, n).user_attrs["resumed_at_step"] > 0


def test_the_worst_exit_status_is_the_command_s() -> None:
    assert worst_exit_code([0, 0]) == 0
    assert worst_exit_code([0, 1, 2]) == 2
    assert worst_exit_code([0, -signal.SIGKILL]) == 137  # killed: as a shell counts it
    assert worst_exit_code([130, 1]) == 130


def test_bad_device_lists_are_refused_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    done = ganhpo("worker", "--study", "quick", "--devices", "cpu,,cpu", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "has an empty entry" in done.stderr
    done = ganhpo(
        "worker", "--study", "quick", "--devices", "cpu", "--device", "cpu", cwd=tmp_path, env=env
    )
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith("ganhpo: error: give --device or --devices"), (
        line
    )
    done = ganhpo("worker", "--study", "quick", "--devices", "cpu,gpu:7", cwd=tmp_path, env=env)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "device 'gpu:7' is invalid" in line, line
