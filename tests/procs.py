"""Real ``ganhpo`` processes for the tests: run one, start several, poll a study."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "studies" / "quick.toml"


def worker_env(cache_dir: Path) -> dict[str, str]:
    """One torch thread per process (several share 2 cores), a shared statistics cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANHPO_")}
    env["GANHPO_CACHE_DIR"] = str(cache_dir)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ganhpo(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ganhpo ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "ganhpo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def start(*args: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """Start ``python -m ganhpo ARGS`` with stdout and stderr going to ``log``."""
    out = open(log, "w")  # noqa: SIM115 - closed with the process by the caller's finish()
    return subprocess.Popen(
        [sys.executable, "-m", "ganhpo", *args],
        cwd=cwd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 900) -> int:
    """Wait for a process from :func:`start`; returns its exit code."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def spec_variant(tmp_path: Path, replacements: dict[str, str], name: str = "spec.toml") -> Path:
    """A copy of studies/quick.toml with some lines replaced."""
    text = QUICK.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text)
    return path


def in_process(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run ``ganhpo ARGV`` in this process (``ganhpo.cli.main``): (exit code, stdout, stderr),
    argparse's usage errors included."""
    from ganhpo.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def study_args(study: dict[str, str]) -> list[str]:
    """The storage and cache arguments that reach a finished study of conftest's fixtures."""
    return ["--storage", study["storage"], "--cache-dir", str(Path(study["dir"]) / "cache")]
