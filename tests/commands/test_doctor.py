"""``ganhpo doctor``: real studies on a real PostgreSQL server (password auth), PgBouncer, real
stores, real datasets; one FAIL line and exit code 1 for each broken thing."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faults import TINY
from pg import PgBouncer, PrivateServer, free_port
from procs import ganhpo, spec_variant, worker_env
from sqlalchemy.engine import make_url

from ganhpo.data import load_dataset

ITEMS = ["storage", "study", "server", "pgbouncer", "versions", "store", "store", "device",
         "dataset", "statistics"]  # fmt: skip


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache")


@pytest.fixture
def db(private_postgres: PrivateServer) -> Iterator[str]:
    """A fresh database on the tests' password-protected server; its URL (with the password)."""
    yield private_postgres.create_database(f"doctor_{secrets.token_hex(4)}")


def create(
    tmp_path: Path, env: dict[str, str], url: str, store: Path, extra: dict[str, str] | None = None
) -> None:
    spec = spec_variant(
        tmp_path, {**TINY, **(extra or {})}, name=f"spec-{secrets.token_hex(3)}.toml"
    )
    argv = ["study", "create", str(spec), "--storage", url, "--artifacts", str(store)]
    done = ganhpo(*argv, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr


def doctor(
    tmp_path: Path, env: dict[str, str], url: str, *args: str, study: str = "quick"
) -> tuple[int, list[str], str]:
    """Run ``ganhpo doctor`` with the URL in $GANHPO_STORAGE (as a user keeps it)."""
    done = ganhpo(
        "doctor", "--study", study, *args, cwd=tmp_path, env={**env, "GANHPO_STORAGE": url}
    )
    return done.returncode, done.stdout.strip().splitlines(), done.stderr


def failed(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


def test_a_healthy_study_passes_every_check(
    tmp_path: Path, env: dict[str, str], db: str, private_postgres: PrivateServer
) -> None:
    create(tmp_path, env, db, tmp_path / "store")
    code, lines, err = doctor(tmp_path, env, db)
    assert code == 0, (lines, err)
    assert [line.split()[1] for line in lines] == ITEMS
    assert all(line.startswith("ok    ") for line in lines), lines
    text = "\n".join(lines) + err
    assert private_postgres.password not in text and "***" in lines[0]  # redacted
    assert "max_connections 100" in lines[2] and "none: the workers talk to PostgreSQL" in lines[3]
    assert "writable" in lines[5] and "the study's own" in lines[6]


def test_pgbouncer_in_front_is_seen(
    tmp_path: Path, env: dict[str, str], db: str, private_postgres: PrivateServer
) -> None:
    name = make_url(db).database
    with PgBouncer(private_postgres, [name], pool_size=2) as bouncer:
        url = bouncer.url(name)
        create(tmp_path, env, url, tmp_path / "store")
        code, lines, err = doctor(tmp_path, env, url)
    assert code == 0, (lines, err)
    (line,) = [line for line in lines if line.split()[1] == "pgbouncer"]
    assert "in front of the server: PgBouncer" in line, line


def test_a_wrong_password_fails_the_storage_check(
    tmp_path: Path, env: dict[str, str], db: str, private_postgres: PrivateServer
) -> None:
    create(tmp_path, env, db, tmp_path / "store")
    wrong = make_url(db).set(password="not-the-password").render_as_string(hide_password=False)
    code, lines, _ = doctor(tmp_path, env, wrong)
    assert code == 1
    (line,) = lines  # nothing else can be checked
    assert line.startswith("FAIL  storage") and "password authentication failed" in line, line
    assert "not-the-password" not in line and "check the user name and password" in line


def test_an_unreachable_server_fails_within_seconds(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"postgresql://ganhpo:secret@127.0.0.1:{free_port()}/ganhpo"
    started = time.monotonic()
    code, lines, _ = doctor(tmp_path, env, url)
    assert code == 1 and time.monotonic() - started < 30
    (line,) = lines
    assert line.startswith("FAIL  storage") and "is the database server running" in line, line
    assert "secret" not in line


def test_a_missing_store_fails_and_is_not_created(
    tmp_path: Path, env: dict[str, str], db: str
) -> None:
    store = tmp_path / "shared" / "store"
    create(tmp_path, env, db, store)
    shutil.rmtree(tmp_path / "shared")
    code, lines, _ = doctor(tmp_path, env, db)
    assert code == 1
    (line,) = failed(lines)
    assert line.startswith(
        f"FAIL  store      artifact store {store} does not exist on this machine"
    )
    assert not (tmp_path / "shared").exists()


def test_another_study_s_store_fails(tmp_path: Path, env: dict[str, str], db: str) -> None:
    create(tmp_path, env, db, tmp_path / "ours")
    create(tmp_path, env, db, tmp_path / "theirs", {'name = "quick"': 'name = "other"'})
    code, lines, _ = doctor(tmp_path, env, db, "--artifacts", str(tmp_path / "theirs"))
    assert code == 1
    (line,) = failed(lines)
    assert (
        f"the artifact store {tmp_path / 'theirs'} is not the one study 'quick' was created with"
        in line
    ), line
    # The other study's own check passes.
    code, lines, _ = doctor(tmp_path, env, db, study="other")
    assert code == 0, lines


def test_a_missing_dataset_fails(tmp_path: Path, env: dict[str, str], db: str) -> None:
    data = load_dataset("mnist-subset")
    npz = tmp_path / "digits.npz"
    np.savez(npz, images=data.images.numpy(), labels=data.labels.numpy())
    create(
        tmp_path,
        env,
        db,
        tmp_path / "store",
        {'name = "mnist-subset"': f'name = "npz"\npath = "{npz}"'},
    )
    npz.unlink()  # not on this machine
    code, lines, _ = doctor(tmp_path, env, db)
    assert code == 1
    (line,) = failed(lines)
    assert line.startswith("FAIL  dataset") and str(npz) in line, line
    assert lines[-1] == line  # nothing after it can be checked
