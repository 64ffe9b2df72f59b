"""A broken environment stops the worker with one line; it does not spend the study's budget.

A deleted artifact store, an extractor that cannot be built, a dataset that is gone, or the
same error in two trials in a row: every trial would fail the same way, so the worker hands its
trial back and exits 1 instead of failing the budget away trial by trial.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from faults import check_all_finished, checkpoint_of, create_study, load, retry_of, start_worker
from optuna.trial import TrialState
from procs import finish, ganhpo, wait_for

from ganhpo.chains import counted_trials


def started(url: str) -> list[int]:
    """The trials a worker took (the baseline waits in the queue from the start)."""
    return [t.number for t in load(url).get_trials() if t.state != TrialState.WAITING]


def last_line(log: Path) -> str:
    return log.read_text().strip().splitlines()[-1]


def test_artifact_store_deleted_mid_trial(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(postgres_url, tmp_path, env, {"max_trials = 6 ": "max_trials = 2 "})
    a = start_worker(postgres_url, tmp_path, env, "a")
    wait_for(lambda: checkpoint_of(postgres_url, 0), 300, "trial 0's first checkpoint")
    shutil.rmtree(tmp_path / "ganhpo-artifacts")
    assert finish(a, timeout=120) == 1
    line = last_line(tmp_path / "a.log")
    assert line.startswith("ganhpo: error: trial 0 failed: FileNotFoundError"), line
    assert "fix that and restart the worker" in line and "no budget spent" in line
    assert "Traceback" not in (tmp_path / "a.log").read_text()
    trials = load(postgres_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert counted_trials(trials) == 0  # nothing spent

    # A worker now refuses the missing store rather than make an empty one of its own.
    refused = start_worker(postgres_url, tmp_path, env, "refused")
    assert finish(refused, timeout=120) == 2
    line = last_line(tmp_path / "refused.log")
    assert f"{tmp_path / 'ganhpo-artifacts'} does not exist on this machine" in line, line
    assert not (tmp_path / "ganhpo-artifacts").exists()
    # Fixed (a new store made the study's): the study goes on and spends its budget exactly.
    store = str(tmp_path / "ganhpo-artifacts")
    argv = ["study", "set-store", "quick", "--artifacts", store, "--storage", postgres_url]
    assert ganhpo(*argv, cwd=tmp_path, env=env).stdout.strip() == store
    b = start_worker(postgres_url, tmp_path, env, "b")
    assert finish(b) == 0, (tmp_path / "b.log").read_text()
    trials = check_all_finished(postgres_url, 2)
    assert retry_of(trials, 0).state == TrialState.COMPLETE


def test_the_same_error_twice_in_a_row_stops_the_worker(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    create_study(postgres_url, tmp_path, env, {"max_trials = 6 ": "max_trials = 2 "})
    # Every trial raises the same error (a broken driver, say) before training starts.
    a = start_worker(
        postgres_url, tmp_path, env, "a", failpoint="trial:training:raise=device lost 42"
    )
    assert finish(a, timeout=300) == 1
    line = last_line(tmp_path / "a.log")
    assert line.startswith(
        "ganhpo: error: trial 1 failed: RuntimeError: device lost 42 like trial 0"
    ), line
    trials = load(postgres_url).get_trials()
    assert counted_trials(trials) == 0, [(t.number, t.state) for t in trials]
    assert sorted(t.state.name for t in trials) == ["FAIL", "FAIL", "WAITING", "WAITING"]

    b = start_worker(postgres_url, tmp_path, env, "b")
    assert finish(b) == 0, (tmp_path / "b.log").read_text()
    check_all_finished(postgres_url, 2)


def python_path(env: dict[str, str], first: Path) -> dict[str, str]:
    """``env`` with ``first`` ahead of everything else on the module search path."""
    rest = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": f"{first}{':' + rest if rest else ''}"}


def test_unusable_extractor_stops_the_worker_before_any_trial(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    # study create checks that pytorch-fid imports: the study is created where it does (a
    # stand-in whose inception module imports), the worker runs where torchvision is the
    # build for another torch, which raises on import (as the CUDA one next to a CPU torch).
    here, there = tmp_path / "create-site", tmp_path / "worker-site"
    for site, inception in ((here, ""), (there, "import torchvision\n")):
        (site / "pytorch_fid").mkdir(parents=True)
        (site / "pytorch_fid" / "__init__.py").write_text("")
        (site / "pytorch_fid" / "inception.py").write_text(inception)
    (there / "torchvision").mkdir()
    (there / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    create_study(
        postgres_url,
        tmp_path,
        python_path(env, here),
        {'extractor = "classifier"': 'extractor = "inception"'},
    )
    a = start_worker(postgres_url, tmp_path, python_path(env, there), "a")
    assert finish(a, timeout=120) != 0
    log = (tmp_path / "a.log").read_text()
    line = log.strip().splitlines()[-1]
    assert line.startswith("ganhpo: error: "), log
    assert "torchvision does not match torch" in line, line
    assert "install the torchvision built for this torch" in line, line
    assert "Traceback" not in log
    assert not started(postgres_url)  # no trial taken, none spent


def test_dataset_gone_stops_the_worker_before_any_trial(
    postgres_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    images = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(
        images,
        x=rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8),
        labels=np.arange(200) % 10,  # the classifier extractor needs labels (checked at create)
    )
    create_study(
        postgres_url,
        tmp_path,
        env,
        {'name = "mnist-subset"': f'name = "npz"\npath = "{images}"'},
    )
    images.unlink()  # the workers' machine lacks the file
    a = start_worker(postgres_url, tmp_path, env, "a")
    assert finish(a, timeout=120) == 1
    line = last_line(tmp_path / "a.log")
    assert line.startswith("ganhpo: error: ") and "images.npz" in line, line
    assert not started(postgres_url)
