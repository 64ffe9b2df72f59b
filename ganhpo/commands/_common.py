"""Arguments and helpers shared by several commands."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

__all__ = [
    "STORAGE_DEFAULTS",
    "add_data_args",
    "add_storage_args",
    "json_text",
    "non_negative",
    "positive",
    "print_json",
    "storage_from_args",
]


def print_json(data: Any) -> None:
    """Print ``data`` on stdout as every ``--json`` output is (:func:`json_text`)."""
    print(json_text(data))


def json_text(data: Any) -> str:
    """``data`` as indented JSON in which a non-finite number (a diverged value) is null,
    since JSON has no NaN or Infinity: what ``--json`` prints and what commands write."""
    return json.dumps(_finite(data), indent=2, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """An argparse type: a finite, positive ``kind`` (int or float)."""
    return _number(kind, zero_ok=False)


def non_negative(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` (int or float), 0 or more."""
    return _number(kind, zero_ok=True)


def _number(kind: type[int] | type[float], *, zero_ok: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):  # float('nan') and float('inf') parse
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(
                f"{text} must be {'0 or more' if zero_ok else 'positive'}"
            )
        return value

    return parse


# The storage options' values when none is given. They are set once, by the top-level parser
# (``ganhpo --storage URL study list``, as in Optuna's CLI); a command's own copy of an option
# has no default (SUPPRESS), so that it overwrites only what is given after the command.
STORAGE_DEFAULTS: dict[str, Any] = {"storage": None, "storage_file": None, "connect_timeout": 30.0}


def add_data_args(p: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--cache-dir``: where datasets and real-data statistics live."""
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="dataset files (default: $GANHPO_DATA_DIR, else the user data directory)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="real-data statistics cache (default: $GANHPO_CACHE_DIR, else the user cache "
        "directory)",
    )


def add_storage_args(p: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """``--storage`` / ``--storage-file`` / ``--connect-timeout`` on a command that opens the
    study database (``top_level``: on ``ganhpo`` itself, before any command, with the defaults).
    """

    def default(dest: str) -> Any:
        return STORAGE_DEFAULTS[dest] if top_level else argparse.SUPPRESS

    p.add_argument(
        "--storage",
        metavar="URL",
        default=default("storage"),
        help="study database URL (default: $GANHPO_STORAGE, else sqlite:///ganhpo.db)",
    )
    p.add_argument(
        "--storage-file",
        type=Path,
        metavar="FILE",
        default=default("storage_file"),
        help="read the storage URL from FILE (keeps passwords off the command line)",
    )
    p.add_argument(
        "--connect-timeout",
        type=non_negative(float),
        default=default("connect_timeout"),
        metavar="SECONDS",
        help="keep retrying an unreachable database this long (default 30)",
    )
    if not top_level:
        p.set_defaults(opens_storage=True)


def storage_from_args(
    args: argparse.Namespace, *, create_schema: bool = False, **heartbeat: Any
) -> optuna.storages.RDBStorage:
    """Open the storage the arguments name (``heartbeat``: interval, grace period, callback)."""
    from ganhpo.storage import open_storage, resolve_storage_url

    url = resolve_storage_url(args.storage, storage_file=args.storage_file)
    return open_storage(
        url, create_schema=create_schema, connect_timeout=args.connect_timeout, **heartbeat
    )
