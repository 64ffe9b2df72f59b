"""Bad command-line input, run through the real ``ganhpo`` process: one line, an exit code,
no traceback, no password, nothing written."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest
from pg import free_port
from procs import QUICK, ganhpo, worker_env


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``ganhpo ARGS`` in an empty directory, without any GANHPO_* variable."""
    work = tmp_path / "work"
    work.mkdir()
    env = worker_env(tmp_path / "cache")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return ganhpo(*args, cwd=work, env=env)

    return run


def error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line of a failed command (stderr holds nothing else); fails otherwise."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganhpo: error: "), proc.stderr
    return lines[0]


def usage_error(proc: subprocess.CompletedProcess[str], option: str) -> str:
    """The one error line of a value argparse refused: exit 2, the option named."""
    line = error_line(proc, 2)
    assert f"argument {option}:" in line and "--help" in line, line
    return line


def closed_port_url(password: str) -> str:
    """A PostgreSQL URL with ``password`` (as typed) on a port where nothing listens."""
    return f"postgresql://ganhpo:{password}@127.0.0.1:{free_port()}/studies"


# -- --device ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "device"),
    [
        (["worker", "--study", "x"], "tpu"),
        (["worker", "--study", "x"], "cuda:x"),
        (["train"], "cuda:x"),  # 'tpu' was caught by TrainConfig, 'cuda:x' was not
        (["train"], "tpu"),
    ],
)
def test_bad_device_is_one_line_before_anything_runs(
    cli: Callable[..., subprocess.CompletedProcess[str]], argv: list[str], device: str
) -> None:
    line = error_line(cli(*argv, "--device", device), 2)
    assert f"device {device!r} is invalid" in line and "cuda:N" in line


# -- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_connect_timeout_must_be_a_finite_number(
    cli: Callable[..., subprocess.CompletedProcess[str]], value: str
) -> None:
    # A PostgreSQL URL: the timeout reached math.ceil() in open_storage (nan, inf crashed).
    url = f"postgresql://ganhpo@127.0.0.1:{free_port()}/studies"
    proc = cli("study", "list", "--storage", url, f"--connect-timeout={value}")
    usage_error(proc, "--connect-timeout")


@pytest.mark.parametrize("option", ["--timeout", "--db-retry-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_positive_float_options_refuse_nan_and_inf(
    cli: Callable[..., subprocess.CompletedProcess[str]], option: str, value: str
) -> None:
    line = usage_error(cli("worker", "--study", "x", option, value), option)
    assert "finite" in line


# -- the storage URL -----------------------------------------------------------------------------


def test_binary_storage_file_is_one_line(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    path = tmp_path / "storage-url"
    path.write_bytes(b"\xff\xfe\x00postgresql://u:pw@host/db\x00")
    line = error_line(cli("study", "list", "--storage-file", str(path)), 2)
    assert str(path) in line and "UTF-8" in line


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("foo://x/y", "'foo'"),
        ("postgres://ganhpo@127.0.0.1/studies", "postgresql://"),
        ("mssql://ganhpo@127.0.0.1/studies", "'mssql'"),
        ("postgresql+psycopg3://ganhpo@127.0.0.1/studies", "'postgresql+psycopg3'"),
    ],
)
def test_unsupported_database_type_is_a_usage_error_and_writes_nothing(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, url: str, hint: str
) -> None:
    proc = cli("study", "create", str(QUICK), "--storage", url)
    line = error_line(proc, 2)
    assert hint in line and "postgresql, sqlite or mysql" in line
    assert proc.stdout == ""
    assert list((tmp_path / "work").iterdir()) == []  # no database, no artifact store


# -- passwords never shown -----------------------------------------------------------------------


def assert_no_fragment(text: str, password: str) -> None:
    """Neither ``password`` (as typed or decoded) nor any piece of it between URL delimiters
    appears in ``text`` as a word of its own."""
    for secret in {password, unquote(password)}:
        assert len(secret) < 4 or secret not in text  # "p" is in any text: a word below
        for fragment in {secret, *filter(None, re.split(r"[@:/]", secret))}:
            # As words: "password" holds "word", and that shows nothing of "p@ss:1234/word".
            assert not re.search(rf"(?<!\w){re.escape(fragment)}(?!\w)", text), (fragment, text)


@pytest.mark.parametrize("password", ["S3cr3t@Pa55", "p@ss:1234/word"])
def test_unencoded_at_in_the_password_is_refused_without_showing_it(
    cli: Callable[..., subprocess.CompletedProcess[str]], password: str
) -> None:
    proc = cli("study", "list", "--storage", closed_port_url(password), "--connect-timeout", "3")
    line = error_line(proc, 2)  # refused before any connection: no retry warnings
    assert "percent-encode" in line and "%40" in line
    assert_no_fragment(proc.stdout + proc.stderr, password)


def test_unencoded_at_in_a_storage_file_is_refused_without_showing_it(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    path = tmp_path / "storage-url"
    path.write_text(closed_port_url("S3cr3t@Pa55") + "\n")
    proc = cli("worker", "--study", "x", "--storage-file", str(path))
    assert "percent-encode" in error_line(proc, 2)
    assert_no_fragment(proc.stdout + proc.stderr, "S3cr3t@Pa55")


@pytest.mark.parametrize("password", ["p", "S3cr3t%40Pa55"])
def test_retry_warnings_hide_the_password_and_keep_the_message(
    cli: Callable[..., subprocess.CompletedProcess[str]], password: str
) -> None:
    url = closed_port_url(password)
    port = url.rsplit(":", 1)[1].split("/")[0]
    proc = cli("study", "list", "--storage", url, "--connect-timeout", "3")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    *warnings, last = proc.stderr.splitlines()
    assert warnings and all("retrying in" in w for w in warnings)  # the retry path ran
    assert last.startswith("ganhpo: error: ") and "server running" in last
    for line in [*warnings, last]:
        # The driver's words come through whole: a one-letter password is no reason to
        # turn "port" into "***ort".
        assert f"port {port} failed" in line, line
        assert "postgresql://ganhpo:***@127.0.0.1" in line, line
    assert_no_fragment(proc.stdout + proc.stderr, password)
