"""The README's commands stay true: they parse, and CI runs exactly its test command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ganhpo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_lines() -> list[str]:
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", README, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def ganhpo_commands() -> list[list[str]]:
    commands = []
    for line in code_lines():
        line = line.split("#", 1)[0]
        for part in line.split("&&"):
            if part.strip().startswith("ganhpo "):
                commands.append(shlex.split(part)[1:])
    # Inline commands in the prose, e.g. `ganhpo worker --study mnist-dcgan --device cuda:0`.
    inline = re.findall(r"`(ganhpo [^`]+)`", README)
    # (Bare names such as `ganhpo worker` in a sentence are references, not commands.)
    return commands + [shlex.split(c)[1:] for c in inline if "..." not in c and c.count(" ") >= 2]


def test_every_ganhpo_command_in_the_readme_parses() -> None:
    commands = ganhpo_commands()
    assert len(commands) >= 10
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert callable(args.func), argv


def test_the_quickstart_runs_the_quick_study_on_the_embedded_default() -> None:
    quickstart = next(line for line in code_lines() if "studies/quick.toml" in line)
    assert quickstart.startswith("pip install torch==2.13.0 && pip install -e .")
    assert "--storage" not in quickstart  # the SQLite default
    assert "ganhpo worker --study quick" in quickstart


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = next(line for line in code_lines() if "pytest" in line)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
