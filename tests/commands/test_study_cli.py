"""``ganhpo study ...``: bad input gets one line, a non-zero exit and nothing written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from ganhpo.cli import main
from ganhpo.storage import open_storage

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "studies" / "quick.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ganhpo: error: ")
    return lines[0]


def spec_with(tmp_path: Path, old: str, new: str) -> Path:
    text = QUICK.read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[study]", "[study", "is not valid TOML"),
        ("lr_g = {", "lr_gg = {", "unknown search parameter 'lr_gg'; did you mean 'lr_g'?"),
        ("seed = 0", "sed = 0", "unknown key 'sed' in [study]; did you mean 'seed'?"),
        ("low = 5e-5, high = 5e-3", "low = 5e-3, high = 5e-5", "is greater than high"),
        ("low = 5e-5, high = 5e-3", "low = 0.0, high = 5e-3", "a log range needs low > 0"),
        ('name = "tpe"', 'name = "tpee"', "unknown sampler 'tpee' (did you mean 'tpe'?)"),
        ('name = "percentile"', 'name = "mediun"', "unknown pruner 'mediun'"),
        ('name = "mnist-subset"', 'name = "cifar"', "unknown dataset 'cifar'"),
    ],
)
def test_bad_spec_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    new: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    code, out, err = run(capsys, "study", "create", str(spec_with(tmp_path, old, new)))
    assert code == 2
    assert message in one_line_error(err)
    assert out == ""
    assert not (tmp_path / "ganhpo.db").exists()  # nothing written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db"
    code, _, err = run(
        capsys, "study", "create", str(QUICK), "--storage", url, "--connect-timeout", "1"
    )
    line = one_line_error(err.splitlines()[-1] + "\n")  # retries log warnings first
    assert code == 1 and "server running" in line
    assert "hunter2" not in err


def test_wrong_password(capsys: pytest.CaptureFixture[str], private_postgres) -> None:
    url = private_postgres.url("postgres", password="not-the-password")
    code, _, err = run(capsys, "study", "create", str(QUICK), "--storage", url)
    line = one_line_error(err)
    assert code == 1 and "check the user name and password" in line
    assert "not-the-password" not in err


def test_create_show_list_trials_delete(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    code, out, _ = run(capsys, "study", "create", str(QUICK), "--storage", postgres_url)
    assert (code, out) == (0, "quick\n")
    # Creating it again is refused and leaves the study as it was ...
    code, _, err = run(capsys, "study", "create", str(QUICK), "--storage", postgres_url)
    assert code == 1 and "already exists" in one_line_error(err) and "--load-if-exists" in err
    # ... unless asked to load it.
    code, out, _ = run(
        capsys, "study", "create", str(QUICK), "--storage", postgres_url, "--load-if-exists"
    )
    assert (code, out) == (0, "quick\n")
    # The baseline was enqueued exactly once.
    study = optuna.load_study(study_name="quick", storage=open_storage(postgres_url))
    assert [t.state.name for t in study.get_trials()] == ["WAITING"]
    assert study.user_attrs["ganhpo:spec"]["study"]["name"] == "quick"
    # Another name, same spec.
    code, out, _ = run(
        capsys, "study", "create", str(QUICK), "--storage", postgres_url, "--name", "q2"
    )
    assert (code, out) == (0, "q2\n")

    code, out, _ = run(capsys, "study", "list", "--storage", postgres_url, "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["q2", "quick"]
    code, out, _ = run(capsys, "study", "show", "quick", "--storage", postgres_url, "--json")
    info = json.loads(out)
    assert code == 0 and info["states"] == {"WAITING": 1} and info["best"] is None
    assert info["sampler"] == "tpe(n_startup_trials=3)" and info["max_trials"] == 6
    code, out, _ = run(capsys, "study", "show", "quick", "--storage", postgres_url)
    assert code == 0 and out.splitlines()[1:] == [
        "sampler    tpe(n_startup_trials=3)",
        "pruner     percentile(n_startup_trials=2, n_warmup_steps=0, percentile=33.0)",
        "trials     1 of 6: waiting 1",
        "best       none yet",
    ]
    code, out, _ = run(capsys, "study", "trials", "quick", "--storage", postgres_url, "--csv")
    assert code == 0 and out.splitlines()[0].startswith("number,state,value")

    code, _, err = run(capsys, "study", "show", "quik", "--storage", postgres_url)
    line = one_line_error(err)
    assert code == 1 and "study 'quik' does not exist (did you mean 'quick'?)" in line

    code, out, _ = run(capsys, "study", "delete", "q2", "--storage", postgres_url, "--yes")
    assert (code, out) == (0, "deleted q2\n")
    assert [s.study_name for s in optuna.get_all_study_summaries(open_storage(postgres_url))] == [
        "quick"
    ]


def test_worker_on_a_missing_study(capsys: pytest.CaptureFixture[str], postgres_url: str) -> None:
    run(capsys, "study", "create", str(QUICK), "--storage", postgres_url)
    code, _, err = run(capsys, "worker", "--study", "nope", "--storage", postgres_url)
    assert code == 1 and "study 'nope' does not exist" in one_line_error(err)


def test_worker_without_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    code, _, err = run(capsys, "worker", "--study", "quick")
    assert code == 1 and "ganhpo study create" in one_line_error(err)
    assert not (tmp_path / "ganhpo.db").exists()


def test_password_never_printed_by_the_real_command(private_postgres) -> None:
    url = private_postgres.url("postgres", password="s3cret-Pa55")
    proc = subprocess.run(
        [sys.executable, "-m", "ganhpo", "study", "create", str(QUICK), "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "s3cret-Pa55" not in proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1
