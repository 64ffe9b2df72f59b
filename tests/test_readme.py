"""The README and the docs/ pages it links stay true: their commands parse, CI runs exactly
the README's test command, the README stays short and names nothing outside the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ganhpo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


def code_lines(text: str = README) -> list[str]:
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def ganhpo_commands() -> list[list[str]]:
    commands = []
    texts = [README, *(page.read_text() for page in DOCS)]
    for line in (line for text in texts for line in code_lines(text)):
        line = line.split("#", 1)[0]
        for part in line.split("&&"):
            if part.strip().startswith("ganhpo "):
                commands.append(shlex.split(part.split(" > ", 1)[0])[1:])  # less a redirection
    # Inline commands in the prose, e.g. `ganhpo worker --study mnist-dcgan --device cuda:0`.
    inline = [c for text in texts for c in re.findall(r"`(ganhpo [^`]+)`", text)]
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


def default_locations() -> dict[str, str]:
    """What ganhpo writes in the working directory by default, as the code names it."""
    from sqlalchemy.engine import make_url

    from ganhpo.artifacts import DEFAULT_ARTIFACTS
    from ganhpo.storage import DEFAULT_STORAGE, sqlite_lock_path

    database = make_url(DEFAULT_STORAGE).database
    assert database is not None
    return {
        "study database": database,
        "its budget lock": str(sqlite_lock_path(database)),
        "artifact store": f"{DEFAULT_ARTIFACTS}/",
    }


def test_the_gitignore_names_what_ganhpo_writes_by_default() -> None:
    import fnmatch

    patterns = [
        line.strip().strip("/")
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The report lands where the README's example puts it: ganhpo plot quick --out report.
    written = [*default_locations().values(), "report/"]
    for path in written:
        name = path.rstrip("/")
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f".gitignore misses {path}"


def test_the_readme_is_short_and_links_every_page_of_the_docs() -> None:
    lines = README.splitlines()
    assert len(lines) < 200, len(lines)
    # The two commands come first: install and quickstart, then the tests.
    blocks = code_lines()
    assert "studies/quick.toml" in blocks[0]
    assert next(i for i, b in enumerate(blocks) if "pytest" in b) < 6
    for page in DOCS:
        assert f"](docs/{page.name})" in README, f"the README does not link {page.name}"
    for text in [README, *(page.read_text() for page in DOCS)]:
        assert "../shared" not in text and "/work/" not in text  # nothing outside the repo
    for page in DOCS:  # every relative link of a page leads to a file of the repository
        for target in re.findall(r"\]\((?!https?://)([^)#]+)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)


def test_the_readme_says_where_each_default_location_is() -> None:
    data = (ROOT / "docs" / "data.md").read_text()
    assert "](docs/data.md)" in README
    section = data.split("## Where ganhpo writes", 1)[1].split("\n#", 1)[0]
    for what, path in default_locations().items():
        assert f"`{path}`" in section, what
    for variable in ("GANHPO_STORAGE", "GANHPO_ARTIFACTS", "GANHPO_DATA_DIR", "GANHPO_CACHE_DIR"):
        assert f"`${variable}`" in section
    assert "ganhpo plot quick --out report" in README


def test_the_recipe_to_train_the_best_trial_again_reproduces_its_fid(
    quick_study: dict[str, str],
) -> None:
    """The README's line after the quickstart, run as written in the quickstart's folder:
    'ganhpo train' of the exported best configuration ends at the FID the study recorded."""
    import os
    import subprocess
    import sys

    import optuna
    from procs import worker_env

    recipe = next(line for line in code_lines() if "--as-config" in line and "train" in line)
    command = recipe.split("#", 1)[0].strip()
    env = worker_env(Path(quick_study["dir"]) / "cache")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", command], cwd=quick_study["dir"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    fid = float(re.match(r"FID (\S+)", done.stdout.strip().splitlines()[-1]).group(1))
    best = optuna.load_study(study_name="quick", storage=quick_study["storage"]).best_value
    assert fid == pytest.approx(best, abs=1e-4), (fid, best)
    assert (Path(quick_study["dir"]) / "runs" / "best" / "generator.pt").is_file()
