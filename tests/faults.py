"""Helpers of the fault-tolerance tests: a fast study, real workers, checks of the end state."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState
from procs import finish, ganhpo, spec_variant, start, wait_for

from ganhpo._failpoints import FAILPOINT_ENV
from ganhpo.artifacts import STORE_MARKER_ATTR
from ganhpo.chains import HANDOVER_ATTR, counted_trials
from ganhpo.chains import checkpoint_of as recorded_checkpoint
from ganhpo.storage import open_storage, study_attr

# quick.toml with checkpoints every 40 steps, fast heartbeats and no pruning (nor the guard), so
# that every trial runs to its end and a dead worker's trial is handed over within seconds; no
# KID and a smaller final evaluation (what these tests check is where trials go, not their
# quality).
FAST = {
    "final_samples = 1000": "final_samples = 500",
    'extractor = "classifier"': 'extractor = "classifier"\nkid = "off"',
    "max_trials = 6 ": "max_trials = 1 ",  # tests that need more trials say so
    "steps = 240": "steps = 240\ncheckpoint_every = 40",
    'name = "percentile"': 'name = "none"',
    "percentile = 33.0\n": "",
    "n_startup_trials = 2    # completed trials before anything is pruned\n": "",
    "n_warmup_steps = 0\n": "",
    'description = "': 'heartbeat_interval = 1\ngrace_period = 4\ndescription = "',
    # Nor does the guard stop collapsed or hopeless trials (tests/worker/test_guard.py tests
    # it). A test that names its own [strategy] replaces this same key.
    "[pruner]": "[strategy]\nguard = false\n\n[pruner]",
}


# Trials of a few seconds: what is tested is the database, not the GANs.
TINY = {
    "width = 16": "width = 8",
    "steps = 240": "steps = 20",
    "every = 80 ": "every = 10 ",
    "samples = 500": "samples = 100",
    "final_samples = 1000": "final_samples = 200",
    'extractor = "classifier"': 'extractor = "classifier"\nkid = "off"',
    'description = "': 'heartbeat_interval = 2\ngrace_period = 60\ndescription = "',
}


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="quick", storage=open_storage(url))


def checkpoint_of(url: str, number: int) -> dict | None:
    trials = load(url).get_trials(deepcopy=False)
    if len(trials) <= number:
        return None
    ckpt = recorded_checkpoint(trials[number])
    return ckpt if ckpt and ckpt["step"] >= 40 else None


def check_all_finished(url: str, budget: int) -> list[optuna.trial.FrozenTrial]:
    study = load(url)
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget == counted_trials(trials)
    # None run twice: each completed trial is its own configuration (a retry replaces its
    # failed predecessor, which is not complete).
    assert len({tuple(sorted(t.params.items())) for t in complete}) == budget
    for t in complete:
        assert t.user_attrs["steps"] == 240 and sorted(t.intermediate_values) == [80, 160, 240]
        assert t.user_attrs["generator"]
    return trials


def create_study(
    url: str, tmp_path: Path, env: dict[str, str], replacements: dict[str, str] | None = None
) -> None:
    """``ganhpo study create`` of the FAST study (with more replacements) at ``url``."""
    spec = spec_variant(tmp_path, {**FAST, **(replacements or {})})
    created = ganhpo("study", "create", str(spec), "--storage", url, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr


def first_worker_at_checkpoint(
    url: str,
    tmp_path: Path,
    env: dict[str, str],
    *,
    failpoint: str | None = None,
    replacements: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], dict]:
    """Create the FAST study, start worker a (with ``failpoint`` armed), wait for trial 0's
    first checkpoint."""
    create_study(url, tmp_path, env, replacements)
    a = start_worker(url, tmp_path, env, "a", failpoint=failpoint)
    ckpt = wait_for(lambda: checkpoint_of(url, 0), 300, "trial 0's first checkpoint")
    return a, ckpt  # type: ignore[return-value]


def start_worker(
    url: str, tmp_path: Path, env: dict[str, str], name: str, *, failpoint: str | None = None
) -> subprocess.Popen[str]:
    """``ganhpo worker --study quick`` in the background, logging to ``{name}.log``;
    ``failpoint`` arms ``$GANHPO_FAILPOINT`` (``NAME:ACTION``) in it."""
    log = tmp_path / f"{name}.log"
    if failpoint is not None:
        env = {**env, FAILPOINT_ENV: failpoint}
    return start("worker", "--study", "quick", "--storage", url, cwd=tmp_path, env=env, log=log)


def run_worker_to_the_end(url: str, tmp_path: Path, env: dict[str, str], name: str) -> str:
    """Run a worker until the study's budget is spent; it must exit 0. Returns its log."""
    code = finish(start_worker(url, tmp_path, env, name))
    log = (tmp_path / f"{name}.log").read_text()
    assert code == 0, log
    return log


def check_no_orphans(url: str, artifacts: Path) -> None:
    """Every file in the artifact store belongs to a trial (an uploaded grid or generator, or
    a recorded checkpoint) or to the study (its store's marker), and no checkpoint is left once
    every trial has ended."""
    study = load(url)
    trials = study.get_trials(deepcopy=False)
    owned = {study_attr(study, STORE_MARKER_ATTR)} | {
        k.removeprefix("artifacts:")
        for t in trials
        for k in t.system_attrs
        if k.startswith("artifacts:")
    }
    owned |= {str(c["id"]) for t in trials if (c := recorded_checkpoint(t))}
    files = {p.name for p in artifacts.iterdir()}
    assert files <= owned, f"orphans: {sorted(files - owned)}"
    assert not [f for f in files if f.startswith("checkpoint-")], sorted(files)


def handed_over(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that were failed for a hand-over (a lost, stopped or broken worker)."""
    return [t for t in trials if t.state == TrialState.FAIL and HANDOVER_ATTR in t.system_attrs]


def retry_of(trials: list[optuna.trial.FrozenTrial], number: int) -> optuna.trial.FrozenTrial:
    """The trial that took trial ``number`` over."""
    return next(t for t in trials if t.system_attrs.get("retry_history", [None])[-1] == number)


class ConnectionWatch(threading.Thread):
    """Samples the server's client connections (pg_stat_activity) every 0.2 s; keeps the peak."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = sqlalchemy.create_engine(
            sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg2"),
            poolclass=sqlalchemy.pool.StaticPool,  # its own one connection, held throughout
        )
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        query = sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        with self.engine.connect() as conn:
            while not self.done.wait(0.2):
                self.peak = max(self.peak, int(conn.execute(query).scalar_one()))
                conn.commit()


def kill_and_replace(
    url: str, tmp_path: Path, env: dict[str, str], workers: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL the worker (of ``workers``, logging to ``w{i}.log``) that runs trial 0, and
    start a replacement worker in its place."""
    victim = next(
        i for i in range(len(workers)) if "trial 0 started" in (tmp_path / f"w{i}.log").read_text()
    )
    os.kill(workers[victim].pid, signal.SIGKILL)
    assert finish(workers[victim]) == -signal.SIGKILL
    workers[victim] = start_worker(url, tmp_path, env, "replacement")
