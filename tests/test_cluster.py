"""The cluster launch files in scripts/cluster: a real Slurm job array, and the Kubernetes Job.

The Slurm test starts a one-node cluster of its own on this machine (Debian's ``slurm-wlm`` and
``munge``: munged, slurmctld and slurmd on private ports and sockets, ``.ci/run`` installs
them), submits ``scripts/cluster/slurm-array.sbatch`` as a 2-task array on a real PostgreSQL
study, cancels one task mid-trial with ``scancel --signal=TERM`` and checks that the other
task resumes the handed-back trial and finishes the budget exactly.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from faults import check_no_orphans, create_study, load, retry_of
from optuna.trial import FrozenTrial, TrialState
from pg import free_port
from procs import wait_for
from procs import worker_env as _worker_env

from ganhpo.artifacts import resolve_artifacts
from ganhpo.chains import checkpoint_of, counted_trials
from ganhpo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "scripts" / "cluster" / "slurm-array.sbatch"
K8S_JOB = ROOT / "scripts" / "cluster" / "k8s-job.yaml"


class SlurmCluster:
    """munged, slurmctld and slurmd of a one-node cluster in a temporary directory."""

    def __init__(self) -> None:
        for program in ("munged", "slurmctld", "slurmd", "sbatch"):
            if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
                raise RuntimeError(
                    f"{program} is missing: apt-get install -y slurm-wlm munge (.ci/run does)"
                )
        self.root = Path(tempfile.mkdtemp(prefix="ganhpo-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _path(self, name: str) -> str:
        return str(self.root / name)

    def __enter__(self) -> SlurmCluster:
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        subprocess.run(
            ["munged", f"--socket={self._path('munge.sock')}", f"--key-file={key}",
             f"--pid-file={self._path('munged.pid')}", f"--log-file={self._path('munged.log')}",
             f"--seed-file={self._path('munge.seed')}", "--force"],
            check=True,
        )  # fmt: skip
        host = socket.gethostname()
        settings = {
            "ClusterName": "ganhpotest",
            "SlurmctldHost": f"{host}(127.0.0.1)",
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "AuthInfo": f"socket={self._path('munge.sock')}",
            "CredType": "cred/munge",
            "StateSaveLocation": self._path("state"),
            "SlurmdSpoolDir": self._path("spool"),
            "SlurmctldPidFile": self._path("slurmctld.pid"),
            "SlurmdPidFile": self._path("slurmd.pid"),
            "SlurmctldLogFile": self._path("slurmctld.log"),
            "SlurmdLogFile": self._path("slurmd.log"),
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "SlurmdParameters": "config_overrides",  # 8 CPUs declared on a 2-core machine
            "ReturnToService": 2,
            "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "GresTypes": "gpu",
        }
        lines = [f"{k}={v}" for k, v in settings.items()]
        lines += [
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=8000 State=UNKNOWN",
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        try:
            subprocess.run(["slurmctld", "-c"], env=self.env, check=True)
            subprocess.run(["slurmd"], env=self.env, check=True)
            wait_for(lambda: "idle" in self.run("sinfo", "-h", "-o", "%t"), 60, "an idle node")
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            args, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
        for name in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            pid = self.root / name
            if pid.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid.read_text().split()[0]), 15)
        time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def slurm() -> Iterator[SlurmCluster]:
    with SlurmCluster() as cluster:
        yield cluster


@pytest.mark.slow
def test_a_slurm_array_spends_the_budget_and_survives_a_cancelled_task(
    slurm: SlurmCluster, postgres_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = _worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache")
    # 4 trials of 480 steps: long enough for a cancel to land mid-trial.
    create_study(
        postgres_url,
        tmp_path,
        env,
        {
            "max_trials = 6 ": "max_trials = 4 ",
            "steps = 240": "steps = 480",
            "every = 80 ": "every = 160 ",
        },
    )
    job_env = {
        **env,
        "GANHPO_STORAGE": postgres_url,
        "GANHPO_DEVICE": "cpu",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    # The script's own directives ask for a GPU and 4 CPUs; this machine has neither to spare.
    out = slurm.run(
        "sbatch", "--parsable", "--gres=none", "--cpus-per-task=1", "--array=0-1",
        f"--chdir={tmp_path}", f"--output={tmp_path}/task-%a.log", str(SBATCH), "quick",
        env=job_env,
    )  # fmt: skip
    job = out.strip().split(";")[0]

    def a_checkpointed_trial() -> FrozenTrial | None:
        for t in load(postgres_url).get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING and (checkpoint_of(t) or {}).get("step"):
                return t
        return None

    running = wait_for(a_checkpointed_trial, 600, "a running trial with a checkpoint")
    number = running.number  # type: ignore[attr-defined]
    # Which task runs it: its log says "trial N started".
    logs = {i: (tmp_path / f"task-{i}.log") for i in (0, 1)}
    task = next(i for i, p in logs.items() if f"trial {number} started" in p.read_text())
    slurm.run("scancel", "--signal=TERM", f"{job}_{task}")
    wait_for(lambda: not slurm.run("squeue", "-h", "-j", job).strip(), 900, "the array to end")

    text = {i: p.read_text() for i, p in logs.items()}
    assert f"trial {number} interrupted at step" in text[task], text[task]
    trials = check_all_finished_steps(postgres_url)
    retry = retry_of(trials, number)
    assert retry.user_attrs["resumed_at_step"] > 0
    assert f"trial {retry.number} resumes trial {number}" in text[1 - task], text[1 - task]
    check_no_orphans(postgres_url, tmp_path / "ganhpo-artifacts")


def check_all_finished_steps(url: str) -> list[FrozenTrial]:
    """Every trial ended, the budget of 4 counted exactly, each completed at 480 steps."""
    trials = load(url).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 == counted_trials(trials)
    assert all(t.user_attrs["steps"] == 480 for t in complete)
    return trials


def test_the_kubernetes_job_runs_a_worker_that_hands_back_in_time() -> None:
    job = yaml.safe_load(K8S_JOB.read_text())
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["parallelism"] >= 1 and spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    # SIGTERM to the hand-back takes seconds (README "What survives what": within 10 s);
    # the grace period leaves far more before Kubernetes sends SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= 60
    (container,) = pod["containers"]
    command = container["command"]
    # ganhpo doctor first (a pod that cannot work says why and stops), then exec the worker
    # (which then gets the pod's SIGTERM itself).
    assert command[:2] == ["sh", "-c"]
    doctor, worker = (shlex.split(part) for part in command[2].split(" && "))
    assert doctor[0] == "ganhpo" and worker[:2] == ["exec", "ganhpo"]
    checks = build_parser().parse_args(doctor[1:])
    args = build_parser().parse_args(worker[2:])
    assert (checks.command, args.command) == ("doctor", "worker") and args.study
    assert (checks.study, checks.device) == (args.study, args.device)
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["GANHPO_STORAGE"]["valueFrom"]  # the password stays a secret
    # The study's S3 store, its keys from a Secret too: checkpoints outlive the pod.
    assert resolve_artifacts(env["GANHPO_ARTIFACTS"]["value"]).startswith("s3://")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert "secretKeyRef" in env[key]["valueFrom"], key
