"""Study storage: URL resolution, password redaction, RDB connections, the budget lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError, SQLAlchemyError

from ganhpo.errors import ConfigError, StorageError

__all__ = [
    "DEFAULT_STORAGE",
    "budget_lock",
    "open_storage",
    "redact",
    "resolve_storage_url",
]

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///ganhpo.db"  # a file in the working directory: no server needed


def resolve_storage_url(url: str | None = None, *, storage_file: str | Path | None = None) -> str:
    """``--storage``, else ``--storage-file``, else ``$GANHPO_STORAGE``, else the SQLite default."""
    if url and storage_file:
        raise ConfigError("give --storage or --storage-file, not both")
    if storage_file is not None:
        try:
            url = Path(storage_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"--storage-file {storage_file} cannot be read: {e}") from e
        if not url:
            raise ConfigError(f"--storage-file {storage_file} is empty; put the storage URL in it")
    url = url or os.environ.get("GANHPO_STORAGE") or DEFAULT_STORAGE
    try:
        make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"storage URL {redact(url)!r} is not a database URL; use e.g. "
            "postgresql://user@host:5432/db or sqlite:///ganhpo.db"
        ) from None
    return url


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # Not parseable: hide everything between the user name and the last '@', whatever
        # the scheme looks like (it may be mistyped, e.g. 'postgresql//u:pw@h/db').
        head, sep, tail = url.rpartition("@")
        if not sep:
            return url
        scheme, sep, userinfo = head.partition("://")
        prefix = scheme + sep if sep else ""
        userinfo = userinfo if sep else head
        user = userinfo.split(":", 1)[0]
        return f"{prefix}{user}:***@{tail}" if ":" in userinfo else url
    return parsed.render_as_string(hide_password=True)


def _explain(e: BaseException, url: str) -> tuple[str, bool]:
    """A one-line message for a failed connection, and whether retrying can help."""
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    for secret in filter(None, [make_url(url).password]):
        first = first.replace(secret, "***")
    low = first.lower()
    retryable = False
    if "password authentication failed" in low or "authentication" in low:
        fix = "check the user name and password in the storage URL"
    elif "does not exist" in low and "database" in low:
        fix = "create the database first (createdb NAME) or fix its name in the URL"
    elif "unable to open database file" in low:
        fix = "check that the directory of the SQLite file exists and is writable"
    elif isinstance(e, OperationalError):
        # Refused, timed out, server shutting down: the server may come (back) up.
        fix = "is the database server running and reachable at that host and port?"
        retryable = True
    else:
        fix = "check the storage URL and that the server is up"
    return f"cannot use storage {redact(url)}: {first}; {fix}", retryable


def _with_driver(url: str) -> str:
    """Pin bare ``postgresql://`` to psycopg2, the driver ganhpo depends on.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which is not a dependency.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def _missing_table(e: BaseException) -> bool:
    """Whether ``e`` says a table does not exist (PostgreSQL, SQLite, MySQL wordings)."""
    low = str(getattr(e, "orig", None) or e).lower()
    return isinstance(e, ProgrammingError | OperationalError) and (
        ("relation" in low and "does not exist" in low)
        or "no such table" in low
        or ("table" in low and "doesn't exist" in low)
    )


def _sqlalchemy_cause(e: BaseException) -> BaseException | None:
    """The SQLAlchemy error behind an Optuna ``StorageInternalError``, if any."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, SQLAlchemyError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def open_storage(
    url: str,
    *,
    create_schema: bool = False,
    connect_timeout: float = 30.0,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage with health-checked connections.

    Only ``ganhpo study create`` passes ``create_schema``: workers never race to create the
    tables. A server that does not answer is retried for ``connect_timeout`` seconds.
    """
    engine_kwargs: dict[str, object] = {}
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        path = make_url(url).database
        if path and path != ":memory:" and not create_schema and not Path(path).exists():
            raise StorageError(
                f"the study database {path} does not exist; create a study first with "
                "'ganhpo study create SPEC' in this directory, or pass --storage"
            )
        # Many local worker processes share one file: wait for the write lock, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True  # survive server restarts and dropped sockets
        if backend == "postgresql":
            # One attempt must not outlast the whole timeout (libpq's minimum is 2 s).
            seconds = max(2, min(10, math.ceil(connect_timeout)))
            engine_kwargs["connect_args"] = {"connect_timeout": seconds}
    deadline = time.monotonic() + connect_timeout
    delay = 0.5
    while True:
        try:
            return optuna.storages.RDBStorage(
                _with_driver(url),
                engine_kwargs=engine_kwargs,
                skip_table_creation=not create_schema,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_trial_callback,
            )
        except ImportError as e:
            raise StorageError(
                f"storage {redact(url)} needs a database driver that is not installed "
                f"({e.__cause__ or e}); install it (psycopg2-binary for PostgreSQL)"
            ) from None
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            # Optuna 5 wraps what SQLAlchemy raised in StorageInternalError.
            cause = _sqlalchemy_cause(e) or e
            if _missing_table(cause):  # reachable, but no Optuna schema there
                raise StorageError(
                    f"storage {redact(url)} holds no study database; create a study there "
                    "with 'ganhpo study create SPEC --storage URL'"
                ) from None
            message, retryable = _explain(cause, url)
            retryable = retryable and backend != "sqlite"  # a local file does not come up later
            if not retryable or time.monotonic() + delay > deadline:
                raise StorageError(message) from None
            logger.warning("%s; retrying in %.0fs", message, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        except (RuntimeError, ValueError) as e:  # e.g. schema missing or of another version
            raise StorageError(
                f"storage {redact(url)} is not a usable study database: {e}; create a study "
                "there with 'ganhpo study create SPEC --storage URL'"
            ) from None


@contextlib.contextmanager
def budget_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """A lock shared by every worker of a study, held while one counts trials and starts one.

    PostgreSQL: a session advisory lock; SQLite: an exclusive lock on a file beside the
    database. That makes a total trial budget exact however many workers race for it.
    ``storage`` may also be a study's own storage (Optuna's cache around the RDB storage).
    Storages that other processes share without a lock here (Optuna's gRPC proxy, a journal)
    raise :class:`StorageError`: the budget would silently overshoot.
    """
    # optuna.load_study wraps an RDBStorage in a _CachedStorage that keeps it as _backend.
    rdb = getattr(storage, "_backend", storage)
    if isinstance(rdb, optuna.storages.InMemoryStorage):
        yield  # one process, nothing to share
        return
    if not isinstance(rdb, optuna.storages.RDBStorage):
        raise StorageError(
            f"cannot share a trial budget through a {type(storage).__name__}: workers need a "
            "direct database URL (postgresql://..., sqlite:///...) for the budget lock"
        )
    url = make_url(str(rdb.engine.url))
    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    backend = url.get_backend_name()
    if backend == "postgresql":
        with rdb.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    elif backend == "sqlite" and url.database and url.database != ":memory:":
        lock_path = Path(url.database).with_suffix(Path(url.database).suffix + ".lock")
        with open(lock_path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    elif backend == "mysql":
        with rdb.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": str(key)})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:k)"), {"k": str(key)})
    elif backend == "sqlite":
        yield  # an in-memory SQLite database lives in one process
    else:
        raise StorageError(
            f"no budget lock for {backend} databases; use PostgreSQL, MySQL or SQLite"
        )
