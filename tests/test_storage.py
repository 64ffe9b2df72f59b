"""ganhpo.storage against real servers: URL resolution, redaction, errors, the budget lock."""

from __future__ import annotations

import multiprocessing
import queue
import secrets
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from pg import PrivateServer, free_port
from sqlalchemy.engine import URL, make_url

from ganhpo.errors import ConfigError, StorageError
from ganhpo.storage import (
    DEFAULT_STORAGE,
    budget_lock,
    open_storage,
    redact,
    resolve_storage_url,
    scrub,
    set_study_attr,
    study_attr,
)

SECRET = "Sekrit-9x"  # a password that must never appear in a message

# -- resolve_storage_url -------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    return monkeypatch


def test_default_is_sqlite_in_working_directory(no_env: pytest.MonkeyPatch) -> None:
    assert resolve_storage_url() == DEFAULT_STORAGE == "sqlite:///ganhpo.db"


def test_precedence_argument_file_environment(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_env.setenv("GANHPO_STORAGE", "sqlite:///from-env.db")
    storage_file = tmp_path / "storage-url"
    storage_file.write_text("  postgresql://u@db-host:5432/from_file\n", encoding="utf-8")

    assert resolve_storage_url() == "sqlite:///from-env.db"
    assert resolve_storage_url(storage_file=storage_file) == "postgresql://u@db-host:5432/from_file"
    assert resolve_storage_url("sqlite:///from-arg.db") == "sqlite:///from-arg.db"


def test_argument_and_file_together_is_an_error(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    storage_file = tmp_path / "storage-url"
    storage_file.write_text("sqlite:///a.db", encoding="utf-8")
    with pytest.raises(ConfigError, match="not both"):
        resolve_storage_url("sqlite:///b.db", storage_file=storage_file)


def test_empty_or_missing_storage_file(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_storage_url(storage_file=empty)
    with pytest.raises(ConfigError, match="cannot be read"):
        resolve_storage_url(storage_file=tmp_path / "missing")


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        f"postgresql//ganhpo:{SECRET}@db-host/studies",  # missing ':'
        f"ganhpo:{SECRET}@db-host/studies",  # no scheme at all
        f"postgresql://ganhpo:{SECRET}@db-host:fivefour/studies",  # port not a number
    ],
)
def test_garbage_url_is_a_config_error_without_the_password(
    no_env: pytest.MonkeyPatch, url: str
) -> None:
    with pytest.raises(ConfigError, match="is not a database URL") as info:
        resolve_storage_url(url)
    assert SECRET not in str(info.value)
    no_env.setenv("GANHPO_STORAGE", url)
    with pytest.raises(ConfigError) as info:
        resolve_storage_url()
    assert SECRET not in str(info.value)


def test_binary_storage_file_is_a_config_error(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "storage-url"
    binary.write_bytes(b"\xff\xfe\x00" + SECRET.encode())
    with pytest.raises(ConfigError, match="is not a UTF-8 text file") as info:
        resolve_storage_url(storage_file=binary)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://ganhpo:{SECRET}@Pa55@db-host/studies",  # parsed as host 'Pa55@db-host'
        f"postgresql://ganhpo:{SECRET}@ss:1234/word@db-host/studies",  # as host 'ss', port 1234
        f"mysql://ganhpo@corp:{SECRET}@db-host/studies",  # a raw '@' in the user name
    ],
)
def test_unencoded_at_in_the_user_info_is_refused(no_env: pytest.MonkeyPatch, url: str) -> None:
    with pytest.raises(ConfigError, match="percent-encode") as info:
        resolve_storage_url(url)
    message = str(info.value)
    assert "@ -> %40" in message
    for secret in (SECRET, "Pa55", "1234/word"):
        assert secret not in message


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////data/runs@2024/ganhpo.db",  # '@' in a SQLite path is no user info
        "sqlite:///a@b/c:d@e.db",
        "postgresql://ganhpo:p%40ss%3Aw%2Frd@db-host:5432/studies",
        "postgresql://ganhpo%40corp@db-host/studies",
        "postgresql+psycopg2://db-host/studies",
    ],
)
def test_well_formed_urls_are_accepted(no_env: pytest.MonkeyPatch, url: str) -> None:
    assert resolve_storage_url(url) == url


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("postgres://ganhpo@db-host/studies", "write postgresql://"),
        ("foo://x/y", "database type 'foo'"),
        ("mssql://ganhpo@db-host/studies", "database type 'mssql'"),
        ("mysql://ganhpo@db-host/studies", "database type 'mysql'"),  # no tested budget lock
        ("postgresql+psycopg3://ganhpo@db-host/studies", "driver 'postgresql+psycopg3'"),
    ],
)
def test_unsupported_database_type_is_a_config_error(
    no_env: pytest.MonkeyPatch, url: str, hint: str
) -> None:
    with pytest.raises(ConfigError, match="postgresql or sqlite") as info:
        resolve_storage_url(url)
    assert hint in str(info.value)


# -- redact --------------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [SECRET, "p@ss:w/rd", "a%b c?d#e"])
def test_redact_hides_the_password(password: str) -> None:
    url = URL.create("postgresql", "ganhpo", password, "db-host", 5432, "studies").render_as_string(
        hide_password=False
    )
    assert redact(url) == "postgresql://ganhpo:***@db-host:5432/studies"
    encoded = url.split(":", 2)[2].split("@")[0]  # the percent-encoded form in the URL
    assert password not in redact(url)
    assert encoded not in redact(url)


def test_redact_keeps_urls_without_password() -> None:
    for url in [
        "postgresql://ganhpo@db-host:5432/studies",
        "postgresql://ganhpo%40corp@db-host:5432/studies",
        "postgresql+psycopg2://db-host/studies",
        "sqlite:///ganhpo.db",
        "sqlite:////abs/path/ganhpo.db",
        "sqlite:////data/runs@2024/ganhpo.db",
        "sqlite:///a:b@c.db",
    ]:
        assert redact(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ganhpo:S3cr3t@Pa55@db-host:5432/studies",
        "postgresql://ganhpo:p@ss:1234/word@db-host:5432/studies",
        "postgresql://ganhpo:a:b/c@d?e@db-host:5432/studies",
    ],
)
def test_redact_hides_everything_up_to_the_last_at(url: str) -> None:
    # However SQLAlchemy parses it ('Pa55@db-host' as the host, 'ss' as the host and
    # 'word@db-host' in the database name), no piece of the password is shown.
    assert redact(url) == "postgresql://ganhpo:***@db-host:5432/studies"


def test_redact_hides_a_password_in_the_query() -> None:
    url = f"postgresql://ganhpo@db-host/studies?sslmode=require&password={SECRET}&x=1"
    assert redact(url) == "postgresql://ganhpo@db-host/studies?sslmode=require&password=***&x=1"


# -- scrub ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "text", "expected"),
    [
        (  # a one-letter password: whole tokens only, "port" stays "port"
            "postgresql://u:p@127.0.0.1:5432/db",
            'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
            'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
        ),
        (
            "postgresql://u:S3cr3t@Pa55@db-host/db",
            'could not translate host name "Pa55@db-host" to address',
            'could not translate host name "***@db-host" to address',
        ),
        (
            "postgresql://u:p@ss:1234/word@db-host/db",
            'could not translate host name "ss" to address; database "word@db-host/db"',
            'could not translate host name "***" to address; database "***@db-host/db"',
        ),
        (  # encoded in the URL, decoded by the driver: both forms go
            "postgresql://u:S3cr3t%40Pa55@db-host/db",
            "password S3cr3t@Pa55, S3cr3t%40Pa55, S3cr3t or Pa55 rejected",
            "password ***, ***, *** or *** rejected",
        ),
        (  # the URL itself, anywhere in the text, is shown redacted
            f"postgresql://u:{SECRET}@db-host/db",
            f"cannot open postgresql://u:{SECRET}@db-host/db now",
            "cannot open postgresql://u:***@db-host/db now",
        ),
        (  # no password: nothing to hide
            "postgresql://u@db-host/db",
            'role "u" does not exist on db-host',
            'role "u" does not exist on db-host',
        ),
        (
            "sqlite:////data/runs@2024/ganhpo.db",
            "unable to open database file /data/runs@2024/ganhpo.db",
            "unable to open database file /data/runs@2024/ganhpo.db",
        ),
        (
            f"postgresql://u@db-host/db?password={SECRET}",
            f"password {SECRET} rejected",
            "password *** rejected",
        ),
    ],
)
def test_scrub_removes_password_tokens_and_nothing_else(url: str, text: str, expected: str) -> None:
    assert scrub(text, url) == expected


# -- open_storage --------------------------------------------------------------------------------


def test_open_postgres_creates_schema_and_hosts_studies(postgres_url: str) -> None:
    storage = open_storage(postgres_url, create_schema=True)
    # No pool: an idle worker holds no connection, and each transaction gets a fresh one
    # (which also survives server restarts).
    assert isinstance(storage.engine.pool, sqlalchemy.pool.NullPool)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)

    again = open_storage(postgres_url)  # workers: no schema creation
    assert len(optuna.load_study(study_name="s", storage=again).trials) == 2


def test_storage_survives_a_server_restart(private_postgres: PrivateServer) -> None:
    url = private_postgres.create_database(f"ganhpo_restart_{secrets.token_hex(4)}")
    storage = open_storage(url, create_schema=True)
    study = optuna.create_study(storage=storage, study_name="s")
    study.ask()
    private_postgres.restart()  # every pooled connection is now dead
    study.ask()
    assert len(study.trials) == 2


def test_unreachable_server_fails_fast_with_a_hint() -> None:
    url = f"postgresql://ganhpo:{SECRET}@127.0.0.1:{free_port()}/studies"
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_storage(url, connect_timeout=1)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert redact(url) in message
    assert "server running" in message
    assert SECRET not in message


def test_retry_warnings_never_show_a_password_fragment(caplog: pytest.LogCaptureFixture) -> None:
    # open_storage called directly (not through resolve_storage_url, which refuses this URL):
    # the driver reports the host as "Pa55@127.0.0.1" in every retry warning.
    url = f"postgresql://ganhpo:{SECRET}@Pa55@127.0.0.1:{free_port()}/studies"
    with caplog.at_level("WARNING", logger="ganhpo"), pytest.raises(StorageError) as info:
        open_storage(url, connect_timeout=1.5)
    shown = [r.getMessage() for r in caplog.records] + [str(info.value)]
    assert len(shown) > 1  # the retry path ran
    for message in shown:
        assert SECRET not in message and "Pa55" not in message, message


def test_wrong_password_fails_at_once(private_postgres: PrivateServer) -> None:
    wrong = "Wr0ng:p@ss"
    url = private_postgres.url(password=wrong)
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_storage(url, connect_timeout=30)  # no retrying: a password does not get better
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert "check the user name and password" in message
    for secret in (wrong, "Wr0ng", private_postgres.password):
        assert secret not in message


def test_missing_database_says_to_create_it(postgres_admin_url: str) -> None:
    url = make_url(postgres_admin_url).set(database="ganhpo_no_such_db")
    with pytest.raises(StorageError, match=r"does not exist.*create the database") as info:
        open_storage(url.render_as_string(hide_password=False), connect_timeout=30)
    assert "ganhpo_no_such_db" in str(info.value)


def test_empty_database_says_to_create_a_study(postgres_url: str) -> None:
    with pytest.raises(StorageError, match="ganhpo study create"):
        open_storage(postgres_url)


def test_missing_sqlite_file_says_to_create_a_study(tmp_path: Path) -> None:
    path = tmp_path / "ganhpo.db"
    with pytest.raises(StorageError, match="ganhpo study create"):
        open_storage(f"sqlite:///{path}")
    assert not path.exists()  # not created as a side effect


# -- budget_lock ---------------------------------------------------------------------------------

BUDGET = 12
N_PROCESSES = 4


def _spend_budget(url: str, name: str, start: Any, results: Any) -> None:
    """Start trials until the study has BUDGET, each count-and-ask under the budget lock."""
    try:
        storage = open_storage(url)
        study = optuna.load_study(study_name=name, storage=storage)
        start.wait(timeout=60)  # all processes race from the same moment
        asked = 0
        while True:
            with budget_lock(storage, name):
                if len(study.get_trials(deepcopy=False)) >= BUDGET:
                    break
                study.ask()
                asked += 1
        results.put(asked)
    except BaseException:
        results.put(traceback.format_exc())
        raise


def _race_for_budget(url: str) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(N_PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_spend_budget, args=(url, "race", start, results))
        for _ in range(N_PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        counts = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return counts


@pytest.fixture(params=["postgresql", "sqlite"])
def race_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ganhpo.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_budget_is_exact_with_racing_processes(race_url: str) -> None:
    storage = open_storage(race_url, create_schema=True)
    optuna.create_study(storage=storage, study_name="race")

    counts = _race_for_budget(race_url)

    assert all(isinstance(c, int) for c in counts), counts  # else a child's traceback
    assert sum(counts) == BUDGET
    assert len(optuna.load_study(study_name="race", storage=storage).trials) == BUDGET


def _lock_two(url: str, results: Any) -> None:
    try:
        storage = open_storage(url)
        with budget_lock(storage, "other"):
            results.put("other")
        with budget_lock(storage, "held"):
            results.put("held")
    except BaseException:
        results.put(traceback.format_exc())
        raise


def test_budget_lock_is_per_study_name(postgres_url: str) -> None:
    storage = open_storage(postgres_url, create_schema=True)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with budget_lock(storage, "held"):
        child = ctx.Process(target=_lock_two, args=(postgres_url, results))
        child.start()
        try:
            assert results.get(timeout=60) == "other"  # another name: not blocked
            with pytest.raises(queue.Empty):
                results.get(timeout=1.0)  # the same name: blocked while we hold it
        except BaseException:
            child.kill()
            raise
    assert results.get(timeout=30) == "held"
    child.join(timeout=30)
    assert child.exitcode == 0


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_budget_lock_takes_a_studys_own_storage(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # What the worker passes: study._storage, Optuna's cache around the RDB storage.
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'ganhpo.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    study = optuna.create_study(storage=open_storage(url, create_schema=True), study_name="s")
    with budget_lock(study._storage, "s"):
        study.ask()
    assert len(study.trials) == 1


def test_budget_lock_refuses_a_storage_other_processes_share_without_a_lock(
    tmp_path: Path,
) -> None:
    # A journal file (like Optuna's gRPC proxy) is shared by processes, but budget_lock has no
    # lock for it: it must say so, not let the workers overshoot the budget.
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    )
    message = "cannot share a trial budget through a JournalStorage"
    with pytest.raises(StorageError, match=message), budget_lock(journal, "s"):
        pass
    with budget_lock(optuna.storages.InMemoryStorage(), "s"):  # one process: no lock needed
        pass


# -- ganhpo.study.load_study ---------------------------------------------------------------------


def test_load_study_on_an_empty_database_says_to_create_one(postgres_url: str) -> None:
    from ganhpo.study import load_study  # imports torch: keep it out of spawned children

    with pytest.raises(StorageError, match="ganhpo study create"):
        load_study("dcgan-mnist", open_storage(postgres_url))


def test_load_study_without_studies_says_to_create_one(postgres_url: str) -> None:
    from ganhpo.study import load_study  # imports torch: keep it out of spawned children

    storage = open_storage(postgres_url, create_schema=True)
    with pytest.raises(StorageError, match=r"no studies here.*ganhpo study create"):
        load_study("dcgan-mnist", storage)


def test_load_study_after_the_schema_was_dropped_says_to_create_one(postgres_url: str) -> None:
    from ganhpo.study import load_study  # imports torch: keep it out of spawned children

    storage = open_storage(postgres_url, create_schema=True)
    engine = sqlalchemy.create_engine(storage.engine.url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    with pytest.raises(StorageError, match="ganhpo study create"):
        load_study("dcgan-mnist", storage)


def test_load_study_missing_name_lists_studies_and_suggests(postgres_url: str) -> None:
    from ganhpo.study import load_study  # imports torch: keep it out of spawned children

    storage = open_storage(postgres_url, create_schema=True)
    for name in ["dcgan-mnist", "wgan-gp-fashion"]:
        optuna.create_study(storage=storage, study_name=name)
    with pytest.raises(StorageError) as info:
        load_study("dcgan-mnst", storage)
    message = str(info.value)
    assert "did you mean 'dcgan-mnist'" in message
    assert "dcgan-mnist, wgan-gp-fashion" in message


def test_a_full_server_is_recognised_through_optunas_wrapping() -> None:
    """PostgreSQL's refusals when every slot is taken, as a worker meets them: the driver's
    error inside SQLAlchemy's inside Optuna's."""
    from ganhpo.storage import at_connection_limit

    for text in (
        "FATAL:  sorry, too many clients already",
        "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
    ):
        driver = RuntimeError(f'connection to server at "127.0.0.1", port 5432 failed: {text}')
        try:
            try:
                raise sqlalchemy.exc.OperationalError("SELECT 1", {}, driver)
            except sqlalchemy.exc.OperationalError as e:
                raise optuna.exceptions.StorageInternalError("commit failed") from e
        except optuna.exceptions.StorageInternalError as wrapped:
            assert at_connection_limit(wrapped)
    assert not at_connection_limit(
        sqlalchemy.exc.OperationalError("SELECT 1", {}, RuntimeError("connection refused"))
    )


def test_a_database_without_optunas_schema_or_of_another_version_is_one_line(
    postgres_url: str,
) -> None:
    with pytest.raises(StorageError, match=r"holds no study database; create a study there"):
        open_storage(postgres_url)
    open_storage(postgres_url, create_schema=True).engine.dispose()
    engine = sqlalchemy.create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg2://")
    )
    with engine.begin() as conn:  # as if an older Optuna had made it
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v3.0.0.a'"))
    engine.dispose()
    with pytest.raises(
        StorageError,
        match=r"is not a usable study database: its schema is at version v3.0.0.a, this Optuna "
        r"\(.+\) uses .+; upgrade it with 'optuna storage upgrade --storage URL'",
    ):
        open_storage(postgres_url)


def test_a_study_attribute_ganhpo_keeps_is_hidden_from_the_dashboard_and_read_where_it_was(
    tmp_path: Path,
) -> None:
    """ganhpo's own study attributes (the stored spec, the store's marker) are system
    attributes, which optuna-dashboard does not show; a study of an earlier version, which kept
    them as user attributes, is read as it is."""
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", create_schema=True)
    study = optuna.create_study(study_name="s", storage=storage)
    set_study_attr(study, "ganhpo:spec", {"study": {"name": "s"}})
    assert study_attr(study, "ganhpo:spec") == {"study": {"name": "s"}}
    assert "ganhpo:spec" not in study.user_attrs  # what the dashboard's study page lists
    old = optuna.create_study(study_name="old", storage=storage)
    old.set_user_attr("ganhpo:spec", {"study": {"name": "old"}})  # as earlier versions did
    assert study_attr(old, "ganhpo:spec") == {"study": {"name": "old"}}
    assert study_attr(old, "ganhpo:store_marker") is None
