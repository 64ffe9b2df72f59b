"""``ganhpo doctor --study NAME``: can this machine run the study's workers? One line a check.

Run it on each machine before its workers: it checks in seconds what a worker needs, in the
order a worker needs it, and prints ``ok`` or ``FAIL`` with what was found or what to fix:

- the study database reachable (its URL shown without the password) and the study in it;
- on PostgreSQL, the server's ``max_connections`` and whether PgBouncer is in front: the
  server sees the connection arrive at another port or address than the URL's (a pooler in
  between), and PgBouncer's admin console (database ``pgbouncer`` at the URL's host and port)
  answers ``SHOW VERSION``, or refuses this user with PgBouncer's own "not allowed", where
  PostgreSQL would say that no database ``pgbouncer`` exists;
- ganhpo's and Optuna's versions equal to those that created the study;
- the study's artifact store there (never created here), writable (a probe object written, read
  back and removed) and the study's own (the marker ``study create`` wrote into it);
- the device usable, the dataset loaded, the feature extractor and the real-data statistics
  built (computed once and cached, as the first worker would), the user's networks importable:
  the worker's own code does each (:class:`ganhpo.worker.Worker`).

Exit code 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ganhpo.commands._common import add_data_args, add_storage_args, print_json
from ganhpo.errors import GanhpoError

__all__ = ["Check", "register"]

# Seconds a check of the database waits for a server that does not answer: a doctor answers
# in seconds (workers wait longer: --connect-timeout).
DOCTOR_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    ok: bool
    item: str  # what was checked: storage, study, server, pgbouncer, versions, store, ...
    detail: str  # what was found, or what is wrong and how to fix it

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':4}  {self.item:10} {self.detail}"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``doctor`` command."""
    p = sub.add_parser(
        "doctor",
        help="check that this machine can run a study's workers",
        description="Check, in seconds, what a worker of the study needs on this machine: the "
        "database and the study, the server's max_connections and PgBouncer, ganhpo's and "
        "Optuna's versions, the artifact store (there, writable, the study's own), the device, "
        "the dataset and the real-data statistics. One line per check, ok or FAIL; exit code "
        "1 if any fails.",
    )
    p.add_argument(
        "--study", required=True, metavar="NAME", help="the study name (ganhpo study list)"
    )
    add_storage_args(p)
    p.add_argument("--device", help="the device the workers will use (default: the spec's)")
    add_data_args(p)
    p.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the store the workers will use (default: the study's)",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run, connect_timeout=DOCTOR_CONNECT_TIMEOUT)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo doctor``: print each check as it is done."""
    checks = []
    for check in diagnose(args):
        checks.append(check)
        if not args.json:
            print(check.line(), flush=True)
    if args.json:
        print_json([vars(c) for c in checks])
    return 0 if all(c.ok for c in checks) else 1


def diagnose(args: argparse.Namespace) -> Iterator[Check]:
    """The checks, in order; one that later checks depend on ends the report when it fails."""
    from ganhpo.storage import open_storage, redact, resolve_storage_url
    from ganhpo.study import load_study, study_spec

    url = resolve_storage_url(args.storage, storage_file=args.storage_file)
    shown = redact(url)
    try:
        storage = open_storage(url, connect_timeout=args.connect_timeout)
    except GanhpoError as e:
        yield Check(False, "storage", str(e))
        return
    yield Check(True, "storage", f"{shown} reachable")
    try:
        study = load_study(args.study, storage)
        spec = study_spec(study)
    except GanhpoError as e:
        yield Check(False, "study", str(e))
        return
    yield Check(True, "study", f"{args.study!r} found ({_trial_counts(study)})")
    if storage.engine.dialect.name == "postgresql":
        yield from _server(storage, url)
    yield _versions(study)
    yield from _store(args, study)
    yield from _worker_side(args, study, spec, storage)


def _trial_counts(study: Any) -> str:
    from collections import Counter

    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name.lower() for t in trials)
    listed = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return f"{len(trials)} trials" + (f": {listed}" if listed else "")


def _server(storage: Any, url: str) -> Iterator[Check]:
    """The server's max_connections and whether a pooler (PgBouncer) is in front of it."""
    import socket

    import sqlalchemy
    from sqlalchemy.engine import make_url

    from ganhpo.storage import scrub

    parsed = make_url(url)
    try:
        with storage.engine.connect() as conn:
            max_conn = conn.execute(sqlalchemy.text("SHOW max_connections")).scalar_one()
            version = conn.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
            addr, port = conn.execute(
                sqlalchemy.text("SELECT host(inet_server_addr()), inet_server_port()")
            ).one()
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        yield Check(False, "server", scrub(first, url))
        return
    yield Check(
        True,
        "server",
        f"PostgreSQL {version}, max_connections {max_conn} (each worker uses one connection "
        "only while it talks)",
    )
    # Where the server sees this connection arrive, against where the URL points.
    try:
        url_addrs = {info[4][0] for info in socket.getaddrinfo(parsed.host or "localhost", None)}
    except OSError:
        url_addrs = set()
    elsewhere = (port is not None and port != (parsed.port or 5432)) or (
        addr is not None and url_addrs and addr not in url_addrs
    )
    bouncer = _pgbouncer_console(parsed)
    if bouncer is not None:
        yield Check(True, "pgbouncer", f"in front of the server: {bouncer}")
    elif elsewhere:
        yield Check(
            True,
            "pgbouncer",
            f"a pooler or proxy is in front (the server listens at {addr}:{port}, the URL "
            f"points at {parsed.host}:{parsed.port or 5432}); its admin console does not answer",
        )
    else:
        yield Check(
            True,
            "pgbouncer",
            "none: the workers talk to PostgreSQL directly (fine up to about 100 workers; "
            "beyond, put PgBouncer in transaction mode in front)",
        )


def _pgbouncer_console(parsed: Any) -> str | None:
    """What PgBouncer's admin console at the URL's host and port says, or None when no
    PgBouncer answers there (PostgreSQL itself has no database "pgbouncer")."""
    import psycopg2

    params: dict[str, Any] = {
        "host": parsed.host,
        "port": parsed.port or 5432,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": "pgbouncer",
        "connect_timeout": 5,
    }
    params.update({k: v for k, v in parsed.query.items() if isinstance(v, str)})
    try:
        conn = psycopg2.connect(**{k: v for k, v in params.items() if v is not None})
    except psycopg2.Error as e:
        if "not allowed" in str(e):  # PgBouncer's answer to a user who is not its admin
            return "PgBouncer (its admin console refuses this user: pool mode not shown)"
        return None
    try:
        conn.autocommit = True  # the console has no transactions
        with conn.cursor() as cur:
            cur.execute("SHOW VERSION")
            version = str(cur.fetchone()[0])
            cur.execute("SHOW CONFIG")
            config = {row[0]: row[1] for row in cur.fetchall()}
    except psycopg2.Error:
        return None
    finally:
        conn.close()
    return f"{version}, pool_mode {config.get('pool_mode', '?')}"


def _versions(study: Any) -> Check:
    import optuna

    from ganhpo import __version__
    from ganhpo.commands.study import OPTUNA_VERSION_ATTR
    from ganhpo.study import VERSION_ATTR

    made_with = {
        "ganhpo": study.user_attrs.get(VERSION_ATTR),
        "optuna": study.user_attrs.get(OPTUNA_VERSION_ATTR),
    }
    here = {"ganhpo": __version__, "optuna": optuna.__version__}
    differ = [
        f"{name} {here[name]} here, {made_with[name]} created the study"
        for name in here
        if made_with[name] is not None and made_with[name] != here[name]
    ]
    if differ:
        pins = " ".join(f"{name}=={made_with[name]}" for name in here if made_with[name])
        return Check(False, "versions", f"{'; '.join(differ)}; install them: pip install {pins}")
    unknown = [name for name in here if made_with[name] is None]
    note = f" ({' and '.join(unknown)}: not recorded by the study)" if unknown else ""
    return Check(
        True,
        "versions",
        f"ganhpo {__version__} and Optuna {optuna.__version__}, as the study's{note}",
    )


def _store(args: argparse.Namespace, study: Any) -> Iterator[Check]:
    """The study's store: there, writable, its own."""
    from ganhpo.artifacts import (
        STORE_MARKER_ATTR,
        check_store_marker,
        open_artifact_store,
        read_artifact,
        remove_artifact,
        resolve_artifacts,
        write_artifact,
    )
    from ganhpo.storage import study_attr
    from ganhpo.study import ARTIFACTS_ATTR

    try:
        location = resolve_artifacts(args.artifacts or study.user_attrs.get(ARTIFACTS_ATTR))
        store = open_artifact_store(location)  # never created here
        probe = f"doctor probe {time.time()}".encode()
        artifact_id = write_artifact(store, probe, kind="probe")
        back = read_artifact(store, artifact_id)
        remove_artifact(store, artifact_id)
    except GanhpoError as e:
        yield Check(False, "store", str(e))
        return
    except Exception as e:  # an OSError of a mount, StoreUnavailable of S3
        yield Check(
            False,
            "store",
            f"{location} is not usable from here ({type(e).__name__}: {e}); make it writable "
            "from this machine",
        )
        return
    if back != probe:
        yield Check(False, "store", f"{location} returned other bytes than were written")
        return
    yield Check(True, "store", f"{location} writable (a probe written, read back, removed)")
    marker = study_attr(study, STORE_MARKER_ATTR)
    if marker is None:
        yield Check(
            True,
            "store",
            "the study has no store marker (made before ganhpo marked stores): whether this is "
            "its store cannot be checked",
        )
        return
    try:
        check_store_marker(store, location, marker, study=study.study_name)
    except GanhpoError as e:
        yield Check(False, "store", str(e))
        return
    yield Check(True, "store", f"the study's own (its marker {marker} is there)")


def _worker_side(args: argparse.Namespace, study: Any, spec: Any, storage: Any) -> Iterator[Check]:
    """The device, the dataset, the extractor and real statistics, the user's networks: what a
    worker's own code builds (:class:`ganhpo.worker.Worker` and its preflight's parts)."""
    import torch

    from ganhpo.train import resolve_device
    from ganhpo.worker import Worker, WorkerOptions

    device_name = args.device or spec.base.device
    try:
        device = resolve_device(device_name)
        (torch.ones(8, device=device) * 2).sum().item()  # allocates and computes there
    except (GanhpoError, RuntimeError) as e:
        yield Check(False, "device", f"{device_name}: {e}")
        return
    yield Check(True, "device", f"{device_name} usable ({device})")
    options = WorkerOptions(device=args.device, data_dir=args.data_dir, cache_dir=args.cache_dir)
    try:
        worker = Worker(study, spec, options, storage=storage)  # loads the dataset
    except GanhpoError as e:
        yield Check(False, "dataset", str(e))
        return
    ds = spec.base.dataset
    shape = "x".join(str(n) for n in worker.data.images.shape[1:])
    yield Check(True, "dataset", f"{ds.name}: {len(worker.data)} images of {shape}")
    ev = spec.base.eval
    try:
        started = time.monotonic()
        evaluator = worker.evaluator(worker.base)  # the extractor, as a worker builds it
        sizes = sorted({ev.samples, ev.final_samples})
        for n in sizes:
            evaluator.real_stats(n)  # loaded from the cache, or computed once and cached
    except (GanhpoError, OSError) as e:
        yield Check(False, "statistics", str(e))
        return
    yield Check(
        True,
        "statistics",
        f"real-data statistics of {' and '.join(map(str, sizes))} images with the "
        f"{ev.extractor} extractor ({time.monotonic() - started:.1f} s; cached)",
    )
    if worker.base.model.custom:
        from ganhpo.train.models import import_builder

        try:
            import_builder(worker.base.model.arch)
        except GanhpoError as e:
            yield Check(False, "networks", str(e))
            return
        yield Check(True, "networks", f"{worker.base.model.arch} importable")
