"""``ganhpo study create SPEC --load-if-exists`` started by several processes at once on a new
database (a Slurm array's tasks, compose replicas): every one succeeds, one study exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from procs import QUICK, spec_variant, worker_env

from ganhpo.storage import open_storage
from ganhpo.study import load_study, study_spec

CREATORS = 4


def create_at_once(url: str, spec: Path, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    """``CREATORS`` processes of ``ganhpo study create SPEC --load-if-exists``, started together."""
    env = worker_env(tmp_path / "cache")
    argv = [sys.executable, "-m", "ganhpo", "study", "create", str(spec), "--load-if-exists"]
    procs = [
        subprocess.Popen(
            [*argv, "--storage", url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(CREATORS)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def assert_one_study(url: str) -> None:
    storage = open_storage(url)
    studies = storage.get_all_studies()
    assert [s.study_name for s in studies] == ["quick"]
    study = load_study("quick", storage)
    assert study_spec(study).name == "quick"
    # The baseline is enqueued once, by the process that created the study.
    assert len(study.get_trials(deepcopy=False)) == 1


@pytest.mark.parametrize("round_", range(3))
def test_creators_racing_on_a_new_database_all_succeed(
    any_db_url: str, tmp_path: Path, round_: int
) -> None:
    done = create_at_once(any_db_url, QUICK, tmp_path)
    for proc in done:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "quick\n" and "Traceback" not in proc.stderr
    assert_one_study(any_db_url)


def test_creators_of_different_specs_under_one_name_are_told_so(
    any_db_url: str, tmp_path: Path
) -> None:
    """The same name with another spec: the first one wins, the others say what differs."""
    other = spec_variant(tmp_path, {"steps = 240": "steps = 320"})
    first = create_at_once(any_db_url, QUICK, tmp_path)
    assert all(p.returncode == 0 for p in first), [p.stderr for p in first]
    done = create_at_once(any_db_url, other, tmp_path)
    for proc in done:
        assert proc.returncode != 0 and proc.stdout == ""
        (line,) = proc.stderr.splitlines()
        assert line.startswith(
            "ganhpo: error: study 'quick' exists with a different spec (train.steps: 240 there, "
            "320 here); create yours under another --name"
        )
    assert_one_study(any_db_url)
