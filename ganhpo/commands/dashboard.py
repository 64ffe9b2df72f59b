"""``ganhpo dashboard``: optuna-dashboard on the study database, with the shared artifacts."""

from __future__ import annotations

import argparse
import logging
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ganhpo.commands._common import add_storage_args, storage_from_args
from ganhpo.errors import ConfigError

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


class _Server(ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server, one thread per request (the page polls)."""

    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} is out of range; use 1-65535")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``dashboard`` command."""
    p = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard on the study database",
        description="Serve optuna-dashboard (pip install 'ganhpo[dashboard]') on the study "
        "database: live history, FID curves, importances, and each trial's artifacts "
        "(generator, sample grids). Prints its URL; Ctrl-C stops it.",
    )
    add_storage_args(p)
    p.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="artifact store (default: the one the studies were created with, else "
        "$GANHPO_ARTIFACTS, else ./ganhpo-artifacts)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    p.set_defaults(func=run)


def _studies_artifacts(storage: Any) -> list[str]:
    """The distinct artifact stores the studies in ``storage`` were created with."""
    import optuna

    from ganhpo.study import ARTIFACTS_ATTR

    found = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        value = s.user_attrs.get(ARTIFACTS_ATTR)
        if isinstance(value, str) and value not in found:
            found.append(value)
    return found


def _name_metrics(storage: Any) -> None:
    """Name the objective of each ganhpo study (FID or KID) where one created before ganhpo
    named it would show "Objective 0"."""
    import optuna

    from ganhpo.study import name_metrics, stored_spec, study_spec

    for s in storage.get_all_studies():
        if stored_spec(s) is not None:  # studies of other tools are shown as they are
            study = optuna.load_study(study_name=s.study_name, storage=storage)
            name_metrics(study, study_spec(study).objectives)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo dashboard``; serves until interrupted."""
    try:
        import optuna_dashboard
    except ImportError as e:
        raise ConfigError(
            "ganhpo dashboard needs optuna-dashboard: pip install 'ganhpo[dashboard]'"
        ) from e
    from ganhpo.artifacts import open_artifact_store, resolve_artifacts
    from ganhpo.storage import redact, resolve_storage_url
    from ganhpo.study import list_studies

    storage = storage_from_args(args)
    list_studies(storage)  # a database without ganhpo's tables fails here, in one line
    _name_metrics(storage)
    location = args.artifacts
    if location is None:
        stores = _studies_artifacts(storage)
        if len(stores) > 1:
            logger.warning(
                "the studies use different artifact stores (%s); showing %s (pass --artifacts "
                "to pick another)",
                ", ".join(stores),
                stores[0],
            )
        location = stores[0] if stores else None
    artifacts = resolve_artifacts(location)
    store = open_artifact_store(artifacts, create=True)  # where its uploads go
    url = resolve_storage_url(args.storage, storage_file=args.storage_file)
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        server = make_server(args.host, args.port, app, _Server, handler_class=_QuietHandler)
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); pick another --port"
        ) from e
    logger.info("optuna-dashboard on %s, artifacts in %s", redact(url), artifacts)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    print(f"http://{shown}:{server.server_port}/dashboard/", flush=True)
    with server:
        server.serve_forever()
    return 0
