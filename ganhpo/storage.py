"""Study storage: URL resolution, password redaction, RDB connections, the budget lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import optuna
import sqlalchemy
import sqlalchemy.orm
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from ganhpo._failpoints import failpoint
from ganhpo._optuna import (
    TrialCache,
    backend_of,
    models,
    schema_head_version,
    session_registry,
    storage_of,
    study_id_of,
)
from ganhpo.errors import ConfigError, StorageError

__all__ = [
    "DEFAULT_STORAGE",
    "at_connection_limit",
    "budget_lock",
    "open_storage",
    "rdb_of",
    "redact",
    "resolve_storage_url",
    "scrub",
    "set_study_attr",
    "sqlite_lock_path",
    "study_attr",
]

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///ganhpo.db"  # a file in the working directory: no server needed
# Those budget_lock has a lock for, each tested (MySQL's GET_LOCK was dropped untested: no
# MySQL server to run the suite against; Optuna's RDBStorage would store a study there).
_SUPPORTED_BACKENDS = ("postgresql", "sqlite")
_BACKEND_LIST = "postgresql or sqlite"


def resolve_storage_url(url: str | None = None, *, storage_file: str | Path | None = None) -> str:
    """``--storage``, else ``--storage-file``, else ``$GANHPO_STORAGE``, else the SQLite default.

    The URL is checked before anything connects: it must parse, name a supported database
    and carry no raw ``@`` in its user name or password.
    """
    if url is not None and not url.strip():
        # "" is not "no URL": falling back to the default would write ./ganhpo.db unasked.
        raise ConfigError(
            "--storage is empty; give a database URL (e.g. postgresql://user@host:5432/db or "
            "sqlite:///ganhpo.db), or leave --storage out for $GANHPO_STORAGE or ./ganhpo.db"
        )
    if url and storage_file:
        raise ConfigError("give --storage or --storage-file, not both")
    if storage_file is not None:
        try:
            url = Path(storage_file).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(
                f"--storage-file {storage_file} is not a UTF-8 text file; put the storage URL "
                "in it as one line of text"
            ) from None
        except OSError as e:
            raise ConfigError(f"--storage-file {storage_file} cannot be read: {e}") from e
        if not url:
            raise ConfigError(f"--storage-file {storage_file} is empty; put the storage URL in it")
    url = url or os.environ.get("GANHPO_STORAGE") or DEFAULT_STORAGE
    _check_url(url)
    return url


def _check_url(url: str) -> None:
    """Raise :class:`ConfigError` unless ``url`` is a database URL ganhpo can use."""
    shown = redact(url)
    _, userinfo, _ = _split_userinfo(url)
    if userinfo is not None and url.partition("://")[2].count("@") > 1:
        # Only the '@' before the host may be raw: SQLAlchemy cuts a password at its first '@'
        # and takes the rest for the host, and an '@' in the query (?password=a@b) makes it
        # read the query as a password.
        raise ConfigError(
            f"storage URL {shown!r} has a raw '@' in its user name, password or query; "
            "percent-encode it (@ -> %40, : -> %3A, / -> %2F)"
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"storage URL {shown!r} is not a database URL; use e.g. "
            "postgresql://user@host:5432/db or sqlite:///ganhpo.db"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":  # SQLAlchemy 1.4 dropped this alias; Heroku-style URLs use it
        raise ConfigError(
            f"storage URL {shown!r} starts with postgres://, which SQLAlchemy does not know; "
            f"write postgresql:// (ganhpo supports {_BACKEND_LIST})"
        )
    if backend not in _SUPPORTED_BACKENDS:
        raise ConfigError(
            f"storage URL {shown!r} names database type {backend!r}; ganhpo supports "
            f"{_BACKEND_LIST} (e.g. postgresql://user@host:5432/db)"
        )
    try:
        parsed.get_dialect()  # imports SQLAlchemy's dialect module, not the driver itself
    except NoSuchModuleError:
        raise ConfigError(
            f"storage URL {shown!r} names driver {parsed.drivername!r}, which SQLAlchemy does "
            f"not know; use {_BACKEND_LIST} without a driver (e.g. postgresql://...)"
        ) from None


def _split_userinfo(url: str) -> tuple[str, str | None, str]:
    """``(scheme://, user info, @host...)`` split at the *last* '@' outside the secret query
    values, whatever the URL holds.

    The user info is None when there is none: no '@', or a path right after the scheme
    (a SQLite file, whose name may contain '@'). A URL without '://' (mistyped) is split all
    the same, so that its password is hidden too.
    """
    url = _mask_query_secrets(url)
    scheme, sep, rest = url.partition("://")
    prefix = scheme + sep if sep else ""
    rest = rest if sep else url
    userinfo, at, host = rest.rpartition("@")
    if not at or rest.startswith("/"):
        return url, None, ""
    return prefix, userinfo, at + host


def _raw_password(url: str) -> str | None:
    """The text between ``user:`` and the last '@' of ``url``, as typed (may be percent-encoded)."""
    _, userinfo, _ = _split_userinfo(url)
    if userinfo is None or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1]


# The query parameters that carry a secret: libpq's password and sslpassword (the key file's
# passphrase), MySQL drivers' password and passwd.
_SECRET_PARAMS = frozenset({"password", "sslpassword", "passwd"})
# A query parameter: its key, and its value up to the next parameter or the end. A value runs
# over '@', ':', '/', '#', even '?' (the URL may be mistyped: anything in it may be a
# password's), and the key may be percent-encoded (SQLAlchemy decodes keys too).
_QUERY_PARAM = re.compile(r"([?&])([^?&=]*)=(.*?)(?=[?&][^?&=]*=|$)", re.DOTALL)


def _is_secret_param(key: str) -> bool:
    return unquote_plus(key).strip().lower() in _SECRET_PARAMS


def _query_secrets(url: str) -> list[str]:
    """The values of the secret query parameters of ``url``, as typed."""
    return [m.group(3) for m in _QUERY_PARAM.finditer(url) if _is_secret_param(m.group(2))]


def _mask_query_secrets(url: str) -> str:
    """``url`` with the value of every secret query parameter replaced by ``***``."""

    def mask(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2)}=***" if _is_secret_param(m.group(2)) else m.group(0)

    return _QUERY_PARAM.sub(mask, url)


def redact(url: str) -> str:
    """The URL with every password replaced by ``***``.

    Text, not SQLAlchemy's parse: the secret query parameters (``password``, ``sslpassword``,
    ``passwd``) are hidden up to the next parameter, then everything between ``user:`` and the
    last '@' left, so that a password with a raw '@', ':', '/' or '?' is hidden whole however
    the URL would parse.
    """
    prefix, userinfo, host = _split_userinfo(url)  # query secrets already masked
    if userinfo is not None and ":" in userinfo:
        return f"{prefix}{userinfo.split(':', 1)[0]}:***{host}"
    return _mask_query_secrets(url)


def _secrets(url: str) -> set[str]:
    """Every password of ``url`` as typed and decoded, and every piece of it a driver may quote.

    A raw '@', ':' or '/' makes SQLAlchemy split a password into a host name, a port, a
    database name: each piece is a secret of its own.
    """
    found: set[str] = set()
    raw = _raw_password(url)
    if raw is not None:
        found |= {raw, unquote(raw)}
    with contextlib.suppress(ArgumentError, ValueError):
        parsed = make_url(url)
        found.add(parsed.password or "")  # SQLAlchemy's reading, decoded
        for key, value in parsed.query.items():
            if _is_secret_param(key):
                found |= {value} if isinstance(value, str) else set(value)
    for value in _query_secrets(url):
        found |= {value, unquote(value), unquote_plus(value)}
    pieces = {piece for secret in found for piece in re.split(r"[@:/?#&]", secret)}
    return {s for s in found | pieces if s}


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's message, a log line) with no password of ``url`` in it.

    ``url`` itself is replaced by :func:`redact`'s form; then the password and each of its
    pieces are replaced by ``***`` where they stand as whole words only, so that a short
    password does not mangle the message ("p" leaves "port" alone).
    """
    text = text.replace(url, redact(url))
    secrets = sorted(_secrets(url), key=len, reverse=True)  # the whole before its pieces
    if not secrets:
        return text
    alternatives = [
        (r"(?<!\w)" if re.match(r"\w", s) else "")
        + re.escape(s)
        + (r"(?!\w)" if re.match(r"\w", s[-1]) else "")
        for s in secrets
    ]
    return re.sub("|".join(alternatives), "***", text)


def _explain(e: BaseException, url: str) -> tuple[str, bool]:
    """A one-line message for a failed connection, and whether retrying can help."""
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    first = scrub(text[0], url) if text else type(e).__name__
    low = first.lower()
    retryable = False
    if "password authentication failed" in low or "authentication" in low:
        fix = "check the user name and password in the storage URL"
    elif "does not exist" in low and "database" in low:
        fix = "create the database first (createdb NAME) or fix its name in the URL"
    elif "unable to open database file" in low:
        fix = "check that the directory of the SQLite file exists and is writable"
    elif at_connection_limit(e):
        fix = (
            "the server is at its max_connections; waiting for connections to free up (put "
            "PgBouncer in front of it for more workers, see docs/machines.md)"
        )
        retryable = True
    elif isinstance(e, OperationalError):
        # Refused, timed out, server shutting down: the server may come (back) up.
        fix = "is the database server running and reachable at that host and port?"
        retryable = True
    else:
        fix = "check the storage URL and that the server is up"
    return f"cannot use storage {redact(url)}: {first}; {fix}", retryable


def at_connection_limit(e: BaseException) -> bool:
    """Whether ``e`` is PostgreSQL refusing a connection because all its slots are taken
    ("too many clients already", "remaining connection slots are reserved ...")."""
    seen: BaseException | None = e
    while seen is not None:  # Optuna wraps what SQLAlchemy raised, which wraps the driver's
        low = str(getattr(seen, "orig", None) or seen).lower()
        if "too many clients" in low or "remaining connection slots are reserved" in low:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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


# Tries of the schema's creation when another process creates it at the same instant: each
# loser finds more of it made, so a few suffice; more mean something else is wrong.
_SCHEMA_RACE_TRIES = 20


def _lost_schema_race(e: BaseException) -> bool:
    """Whether ``e`` says another process created a piece of the schema first (PostgreSQL: a
    duplicate type, table or index; SQLite: a table that already exists; a duplicate row)."""
    low = str(getattr(e, "orig", None) or e).lower()
    return isinstance(e, IntegrityError) or (
        isinstance(e, ProgrammingError | OperationalError)
        and ("already exists" in low or "duplicate" in low or "database is locked" in low)
    )


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
    tables. Several creates may (a job array's tasks, each creating the study with
    ``--load-if-exists``): one that finds another creating the same tables at that instant
    (a duplicate type or table, a duplicate version row) tries again, and then finds them made.
    A server that does not answer is retried for ``connect_timeout`` seconds.
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
        # No pool: a connection is opened for each transaction and closed after it, so an idle
        # worker (training, between database calls) holds none, and a server's max_connections
        # bounds the workers *talking* at one instant, not those that exist. A fresh connection
        # also survives server restarts and dropped sockets without a ping. Behind PgBouncer a
        # connect costs no server process at all.
        engine_kwargs["poolclass"] = sqlalchemy.pool.NullPool
        if backend == "postgresql":
            # One attempt must not outlast the whole timeout (libpq's minimum is 2 s).
            seconds = max(2, min(10, math.ceil(connect_timeout)))
            engine_kwargs["connect_args"] = {"connect_timeout": seconds}
    deadline = time.monotonic() + connect_timeout
    delay = 0.5
    retries = 0
    races = 0
    while True:
        try:
            storage = optuna.storages.RDBStorage(
                _with_driver(url),
                engine_kwargs=engine_kwargs,
                skip_table_creation=not create_schema,
                # Optuna's check holds one connection while it opens another: behind a small
                # PgBouncer pool, workers starting together would each hold one and wait for
                # a second forever. _check_schema asks one at a time.
                skip_compatibility_check=True,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_trial_callback,
            )
            _check_schema(storage)
            return storage
        except ImportError as e:
            raise StorageError(
                f"storage {redact(url)} needs a database driver that is not installed "
                f"({scrub(str(e.__cause__ or e), url)}); install it (psycopg2-binary for "
                "PostgreSQL)"
            ) from None
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            # Optuna 5 wraps what SQLAlchemy raised in StorageInternalError.
            cause = _sqlalchemy_cause(e) or e
            if _missing_table(cause):  # reachable, but no Optuna schema there
                raise StorageError(
                    f"storage {redact(url)} holds no study database; create a study there "
                    "with 'ganhpo study create SPEC --storage URL'"
                ) from None
            if create_schema and races < _SCHEMA_RACE_TRIES and _lost_schema_race(cause):
                races += 1
                logger.debug("another process is creating the study database; trying again")
                time.sleep(random.uniform(0.05, 0.3))
                continue
            message, retryable = _explain(cause, url)
            retryable = retryable and backend != "sqlite"  # a local file does not come up later
            if not retryable or time.monotonic() + delay > deadline:
                raise StorageError(message) from None
            pause = delay * random.uniform(0.5, 1.5)  # workers started together retry apart
            retries += 1
            if retries == 1:  # the first retry says how long the retries may take in all
                logger.warning(
                    "%s; retrying in %.1fs, for up to %g s in all (--connect-timeout SECONDS "
                    "sets how long)",
                    message,
                    pause,
                    connect_timeout,
                )
            else:
                left = max(0.0, deadline - time.monotonic())
                logger.warning("%s; retrying in %.1fs (%.0f s left)", message, pause, left)
            time.sleep(pause)
            delay = min(delay * 2, 10.0)
        except (RuntimeError, ValueError) as e:  # e.g. schema missing or of another version
            raise StorageError(
                f"storage {redact(url)} is not a usable study database: {scrub(str(e), url)}; "
                "create a study there with 'ganhpo study create SPEC --storage URL'"
            ) from None


def _check_schema(storage: optuna.storages.RDBStorage) -> None:
    """What Optuna's compatibility check asks (the schema's version against this Optuna's),
    with one connection at a time. A database without Optuna's schema raises what a missing
    table raises; another version a RuntimeError naming it."""
    from alembic.migration import MigrationContext

    with storage.engine.connect() as conn:
        # Optuna's tables, or the missing-table error open_storage explains.
        conn.execute(sqlalchemy.text("SELECT 1 FROM version_info LIMIT 1"))
        current = MigrationContext.configure(conn).get_current_revision()
    head = schema_head_version(storage)
    if current != head:
        raise RuntimeError(
            f"its schema is at version {current}, this Optuna ({optuna.__version__}) uses "
            f"{head}; upgrade it with 'optuna storage upgrade --storage URL' (or Optuna)"
        )


# Pauses between tries of the budget lock (PostgreSQL): short at first (the lock is held for
# the milliseconds of an ask), at most a second (a thousand waiters try a few times a second).
_LOCK_FIRST_PAUSE_S = 0.005
_LOCK_MAX_PAUSE_S = 1.0
# A budget-lock holder silent this long (frozen, not merely slow: what it does under the lock
# takes milliseconds) loses the lock, and what it did under it is undone, so that a frozen
# worker stalls the others this long at most.
_LOCK_IDLE_LIMIT_S = 20


def rdb_of(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    """The RDB storage itself behind a study's storage (``optuna.load_study`` wraps it in a
    cache that keeps it as ``_backend``)."""
    rdb = backend_of(storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        raise StorageError(
            f"{type(storage).__name__} is not a database storage; ganhpo workers need a "
            "database URL (postgresql://..., sqlite:///...)"
        )
    return rdb


def take_trial_id(study: optuna.Study, *, create: bool = True) -> int | None:
    """Start a trial of ``study``: the first waiting one (lowest number) set RUNNING, else a
    new one (None with ``create=False``); returns its id. Call it under :func:`budget_lock`,
    then build the trial with ``optuna.Trial(study, trial_id)`` outside the lock.

    What ``Study.ask`` does, lighter: ``ask`` finds the waiting trials by reading every
    unfinished trial of the study (their parameters, attributes and curves; with hundreds of
    workers, hundreds of running trials) and then lets the sampler sample, all while the caller
    holds the lock that serializes every worker's start. Here one indexed query finds the
    waiting ids, and the sampler runs after the lock is released, workers in parallel.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    trial = models.TrialModel
    with connection(rdb_of(storage_of(study))) as conn:
        waiting = (
            conn.execute(
                sqlalchemy.select(trial.trial_id)
                .where(trial.study_id == study_id_of(study), trial.state == TrialState.WAITING)
                .order_by(trial.number)
            )
            .scalars()
            .all()
        )
    for trial_id in waiting:
        try:  # False, or finished, when a process outside ganhpo's lock took it first
            if storage_of(study).set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return int(trial_id)
        except UpdateFinishedTrialError:
            continue
    return storage_of(study).create_new_trial(study_id_of(study)) if create else None


def study_attr(study: optuna.Study, key: str) -> Any:
    """A study attribute ganhpo keeps for itself (the stored spec, the store's marker): a
    system attribute, which the dashboard does not show a person (it shows user attributes).
    Studies of earlier versions kept it as a user attribute: read there too. None if unset."""
    system = storage_of(study).get_study_system_attrs(study_id_of(study))
    return system[key] if key in system else study.user_attrs.get(key)


def set_study_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Set a study attribute ganhpo keeps for itself (:func:`study_attr`)."""
    storage_of(study).set_study_system_attr(study_id_of(study), key, value)


def set_user_attrs(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    attrs: dict[str, object],
    *,
    finished: bool = False,
) -> None:
    """Set several user attributes of a running trial in one transaction, in Optuna's schema
    and as Optuna writes one (its API takes a transaction, and a connection, for each): the
    trial is locked, a finished one raises ``UpdateFinishedTrialError``. With ``finished``, a
    finished trial's too (results measured after it ended, as ``ganhpo study test``'s), which
    Optuna's API refuses to write."""
    from optuna.exceptions import UpdateFinishedTrialError

    rdb = rdb_of(storage)
    attr = models.TrialUserAttributeModel
    with connection(rdb, write=True) as conn:
        state = conn.execute(
            sqlalchemy.select(models.TrialModel.state)
            .where(models.TrialModel.trial_id == trial_id)
            .with_for_update()
        ).scalar_one()
        if TrialState(state).is_finished() and not finished:
            raise UpdateFinishedTrialError(
                f"trial id {trial_id} has already finished ({TrialState(state).name}) and can "
                "not be updated"
            )
        existing = dict(
            conn.execute(
                sqlalchemy.select(attr.key, attr.trial_user_attribute_id).where(
                    attr.trial_id == trial_id, attr.key.in_(list(attrs))
                )
            ).all()
        )
        for key, value in attrs.items():
            value_json = json.dumps(value)
            if key in existing:
                conn.execute(
                    sqlalchemy.update(attr)
                    .where(attr.trial_user_attribute_id == existing[key])
                    .values(value_json=value_json)
                )
            else:
                conn.execute(
                    sqlalchemy.insert(attr).values(
                        trial_id=trial_id, key=key, value_json=value_json
                    )
                )


def record_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> TrialState:
    """Record a running trial's heartbeat in Optuna's table (what ``record_heartbeat`` writes,
    the database's clock) and return the trial's state, in one transaction: a worker beats all
    the time it trains, and Optuna's call and a look at the state were two connections. A trial
    no longer running (taken over by another worker) gets no beat."""

    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    with connection(rdb_of(storage), write=True) as conn:
        state = TrialState(
            conn.execute(
                sqlalchemy.select(trial.state).where(trial.trial_id == trial_id)
            ).scalar_one()
        )
        if state == TrialState.RUNNING:
            now = sqlalchemy.func.current_timestamp()
            updated = conn.execute(
                sqlalchemy.update(beat).where(beat.trial_id == trial_id).values(heartbeat=now)
            )
            if updated.rowcount == 0:  # its first beat
                conn.execute(sqlalchemy.insert(beat).values(trial_id=trial_id, heartbeat=now))
    return state


def cache_trial(study: optuna.Study, trial_id: int) -> None:
    """Read one trial of ``study`` into the trial cache around its storage, if it has one
    (:meth:`TrialCache.cache_trial`)."""
    storage = storage_of(study)
    if isinstance(storage, TrialCache):
        storage.cache_trial(study_id_of(study), trial_id)
    else:  # Optuna's own cache: what Study.ask does, a sync of the whole cache
        storage.get_all_trials(study_id_of(study), deepcopy=False, states=())


def sqlite_lock_path(database: str | Path) -> Path:
    """The file beside a SQLite database that :func:`budget_lock` locks (``ganhpo.db.lock``)."""
    path = Path(database)
    return path.with_suffix(path.suffix + ".lock")


# The budget lock this thread holds on PostgreSQL: (engine, key, connection).
_held = threading.local()


@contextlib.contextmanager
def connection(
    rdb: optuna.storages.RDBStorage, *, write: bool = False
) -> Iterator[sqlalchemy.Connection]:
    """A connection for ganhpo's own queries on ``rdb``'s database. Where this thread holds the
    study's budget lock (PostgreSQL), the lock's: what is read under the lock sees what was
    written under it, and what is written commits, or is undone, with the lock (``write``: in a
    savepoint of its own, undone alone where it raises). Elsewhere a connection of its own,
    ``write`` in a transaction of its own."""
    held = getattr(_held, "lock", None)
    if held is not None and held[0] is rdb.engine:
        conn = held[2]
        if write:
            with conn.begin_nested():
                yield conn
        else:
            yield conn
        return
    if write:
        with rdb.engine.begin() as conn:
            yield conn
    else:
        with rdb.engine.connect() as conn:
            yield conn


def _postgresql_lock(
    storage: optuna.storages.BaseStorage, rdb: optuna.storages.RDBStorage, key: int
) -> Iterator[None]:
    """budget_lock on PostgreSQL: a transaction-level advisory lock, and everything done under
    it in the lock's transaction (see :func:`budget_lock`)."""
    pause = _LOCK_FIRST_PAUSE_S
    while True:
        with rdb.engine.connect() as conn:
            tx = conn.begin()
            # A holder that freezes (SIGSTOP, a suspended VM) would stall every worker: the
            # server ends its session after this long idle, and the lock and all that was done
            # under it with it.
            conn.execute(
                sqlalchemy.text(
                    f"SET LOCAL idle_in_transaction_session_timeout = '{_LOCK_IDLE_LIMIT_S}s'"
                )
            )
            taken = conn.execute(
                sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}
            ).scalar_one()
            if not taken:
                tx.rollback()
            else:
                start = time.monotonic()
                with _in_lock_transaction(rdb, key, conn):
                    try:
                        yield
                        failpoint("lock:committing")
                        tx.commit()
                    except BaseException as e:
                        _undone_under_lock(storage, e, time.monotonic() - start)
                        raise
                return
        time.sleep(pause * random.uniform(0.5, 1.5))  # desynchronise the waiters
        pause = min(pause * 2, _LOCK_MAX_PAUSE_S)


@contextlib.contextmanager
def _in_lock_transaction(
    rdb: optuna.storages.RDBStorage, key: int, conn: sqlalchemy.Connection
) -> Iterator[None]:
    """Run Optuna's storage calls of this thread, and ganhpo's own queries
    (:func:`connection`), in the lock's transaction: Optuna's session is bound to the lock's
    connection, each of its transactions a savepoint (its commit and rollback stay its own)."""
    registry = session_registry(rdb)
    previous = registry() if registry.has() else None
    session = sqlalchemy.orm.Session(bind=conn, join_transaction_mode="create_savepoint")
    registry.set(session)
    _held.lock = (rdb.engine, key, conn)
    try:
        yield
    finally:
        _held.lock = None
        session.close()
        if previous is not None:
            registry.set(previous)
        else:
            registry.clear()


def _undone_under_lock(storage: optuna.storages.BaseStorage, e: BaseException, held: float) -> None:
    """What was done under the budget lock was undone (the block raised, or the commit failed):
    the trial cache forgets what it learnt there, and a holder that lost the lock because it
    was silent too long (frozen, suspended) says so."""
    if isinstance(storage, TrialCache):
        storage.forget()
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, DBAPIError):
        cause = cause.__cause__ or cause.__context__
    if held >= _LOCK_IDLE_LIMIT_S and cause is not None:
        logger.warning(
            "this worker was frozen or suspended (or the database stalled) for %.0f s while it "
            "held the study's budget lock; the database released the lock after %d s and undid "
            "what the worker had done under it, which it does again",
            held,
            _LOCK_IDLE_LIMIT_S,
        )


@contextlib.contextmanager
def budget_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """A lock shared by every worker of a study, held while one counts trials and starts one.

    PostgreSQL: a transaction-level advisory lock, held by a transaction kept open on a
    connection of its own until the block ends (so it also holds through PgBouncer in
    transaction mode, which keeps a transaction on one server connection, where a session lock
    could be released on another). It is *tried*, not waited for: a worker that does not get
    it ends its transaction and tries again after a short random pause, so that waiters hold
    no server connection (behind a pool of a few server connections, waiters blocked in the
    server would hold them all while the holder waits for one to do its work: a deadlock).
    SQLite: an exclusive lock on a file beside the database.
    That makes a total trial budget exact however many workers race for it.
    ``storage`` may also be a study's own storage (Optuna's cache around the RDB storage).
    Storages that other processes share without a lock here (Optuna's gRPC proxy, a journal)
    raise :class:`StorageError`: the budget would silently overshoot.
    """
    rdb = backend_of(storage)
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
        held = getattr(_held, "lock", None)
        if held is not None and held[0] is rdb.engine and held[1] == key:
            yield  # this thread holds it already (its transaction goes on)
            return
        yield from _postgresql_lock(storage, rdb, key)
    elif backend == "sqlite" and url.database and url.database != ":memory:":
        with open(sqlite_lock_path(url.database), "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    elif backend == "sqlite":
        yield  # an in-memory SQLite database lives in one process
    else:
        raise StorageError(f"no budget lock for {backend} databases; use PostgreSQL or SQLite")
