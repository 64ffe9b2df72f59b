"""Bad command-line input, run through the real ``ganhpo`` process: one line, an exit code,
no traceback, no password, nothing written."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, unquote_plus

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
    assert hint in line and "postgresql or sqlite" in line
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
    # The first says how long the retries go on, and what sets it.
    assert "for up to 3 s in all (--connect-timeout SECONDS sets how long)" in warnings[0]
    assert last.startswith("ganhpo: error: ") and "server running" in last
    for line in [*warnings, last]:
        # The driver's words come through whole: a one-letter password is no reason to
        # turn "port" into "***ort".
        assert f"port {port} failed" in line, line
        assert "postgresql://ganhpo:***@127.0.0.1" in line, line
    assert_no_fragment(proc.stdout + proc.stderr, password)


# Storage URLs that carry secrets in every place libpq (and MySQL's drivers) read one: the user
# info, the query (password, sslpassword, passwd), both; raw and percent-encoded '@', ':', '/',
# '%', '?', '#', '+'. Each with the secrets it carries, as typed.
SECRET_URLS = [
    ("postgresql://ganhpo:S3cr3tPa55w0rd@127.0.0.1:{port}/db", ["S3cr3tPa55w0rd"]),
    (
        "postgresql://ganhpo:S3cr3t%40Pa55%3Aw%2Frd%25x@127.0.0.1:{port}/db",
        ["S3cr3t%40Pa55%3Aw%2Frd%25x"],
    ),
    ("postgresql://ganhpo:S3cr3t@Pa55@127.0.0.1:{port}/db", ["S3cr3t@Pa55"]),
    ("postgresql://ganhpo:S3c:r3t/Pa55@127.0.0.1:{port}/db", ["S3c:r3t/Pa55"]),
    ("postgresql://ganhpo:S3c?r3t=Pa55@127.0.0.1:{port}/db", ["S3c?r3t=Pa55"]),
    ("postgresql://postgres@127.0.0.1:{port}/db?password=S3cr3t@Pa55:w/rd", ["S3cr3t@Pa55:w/rd"]),
    (
        "postgresql://postgres@127.0.0.1:{port}/db?password=S3cr3t%40Pa55%3Aw%2Frd",
        ["S3cr3t%40Pa55%3Aw%2Frd"],
    ),
    (
        "postgresql://postgres@127.0.0.1:{port}/db?sslmode=prefer&sslpassword=Ss1Pass:phrase/x&application_name=t",
        ["Ss1Pass:phrase/x"],
    ),
    ("postgresql://postgres@127.0.0.1:{port}/db?password=S3c#r3t?Pa55", ["S3c#r3t?Pa55"]),
    ("postgresql://postgres@127.0.0.1:{port}/db?password=S3cr3t+Pa55", ["S3cr3t+Pa55"]),
    ("postgresql://postgres@127.0.0.1:{port}/db?pass%77ord=Kyy5ecret", ["Kyy5ecret"]),
    (
        "postgresql://ganhpo:Us3rS3cret@127.0.0.1:{port}/db?password=Qu3ryS3cret&sslpassword=K3yphr4se",
        ["Us3rS3cret", "Qu3ryS3cret", "K3yphr4se"],
    ),
    (
        "postgresql://ganhpo:U@s3r@127.0.0.1:{port}/db?sslpassword=K3y@phr4se",
        ["U@s3r", "K3y@phr4se"],
    ),
    (
        "mysql://ganhpo:My5qlS3cret@127.0.0.1:{port}/db?passwd=0therS3cret",
        ["My5qlS3cret", "0therS3cret"],
    ),
    ("ganhpo:N0Sch3meS3cret@127.0.0.1:{port}/db", ["N0Sch3meS3cret"]),
]


def assert_no_substring(text: str, secrets: list[str]) -> None:
    """No piece of 4 characters or more of any secret, as typed or decoded, is in ``text``."""
    for typed in secrets:
        for secret in {typed, unquote(typed), unquote_plus(typed)}:
            for size in range(4, len(secret) + 1):
                for start in range(len(secret) - size + 1):
                    piece = secret[start : start + size]
                    assert piece not in text, (piece, text)


@pytest.mark.parametrize("route", ["--storage", "GANHPO_STORAGE", "--storage-file"])
@pytest.mark.parametrize(("template", "secrets"), SECRET_URLS)
def test_no_piece_of_a_secret_in_the_output_of_a_failing_command(
    template: str,
    secrets: list[str],
    route: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ganhpo.cli import main

    url = template.format(port=free_port())  # nothing listens there: the command fails
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    argv = ["study", "show", "x", "--connect-timeout", "0.6"]
    if route == "--storage":
        argv += ["--storage", url]
    elif route == "GANHPO_STORAGE":
        monkeypatch.setenv("GANHPO_STORAGE", url)
    else:
        (tmp_path / "storage-url").write_text(url + "\n")
        argv += ["--storage-file", str(tmp_path / "storage-url")]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0
    assert err.splitlines()[-1].startswith("ganhpo: error: "), err
    assert_no_substring(out + err, secrets)


def test_a_raw_at_in_a_query_password_is_refused_without_showing_it(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # SQLAlchemy reads "postgres@127.0.0.1" as the user and the query up to its '@' as the
    # password: the URL cannot work, and the message must not show the password's tail.
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/db?password=S3cr3t@Pa55:w/rd"
    line = error_line(cli("study", "show", "x", "--storage", url), 2)
    assert "percent-encode" in line and "?password=***" in line
    assert_no_substring(line, ["S3cr3t@Pa55:w/rd"])
