"""``ganhpo`` command line: registers one module per command and dispatches.

Exit codes come from :func:`main` only: 0 success, 1 a failure, 2 bad input, 130 interrupted.
Results go to stdout; progress and diagnostics (logging) to stderr. ``ganhpo`` without a
command prints its help on stdout and exits 0 (asking what it can do is no mistake).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from ganhpo import __version__
from ganhpo.errors import GanhpoError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ganhpo")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ganhpo: error: ...`` (with the command, for a
    command's parser: ``ganhpo: error: study create: ...``) and where to find the usage,
    instead of the whole usage block above the error (every subcommand's parser is one too)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("ganhpo").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"ganhpo: error: {where}{message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    from ganhpo.commands import COMMANDS
    from ganhpo.commands._common import add_storage_args

    parser = _Parser(prog="ganhpo", description="Hyperparameter optimization for GANs.")
    parser.add_argument("--version", action="version", version=f"ganhpo {__version__}")
    _add_verbosity(parser, default=False)
    add_storage_args(parser, top_level=True)  # before the command too, as in Optuna's CLI
    # Not required: without one, main prints this help.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    _add_verbosity_everywhere(parser)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="results only, no progress"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug diagnostics"
    )


def _add_verbosity_everywhere(parser: argparse.ArgumentParser) -> None:
    # -q/-v also after the command ("ganhpo worker ... -v"); SUPPRESS keeps the top-level value
    # when a subcommand does not see the flag.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--quiet" in a.option_strings for a in child._actions):
                    _add_verbosity(child, default=argparse.SUPPRESS)
                _add_verbosity_everywhere(child)


def _reject_unused_storage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A storage option given before a command that opens no study database is a mistake."""
    from ganhpo.commands._common import STORAGE_DEFAULTS

    if getattr(args, "opens_storage", False):
        return
    for dest, default in STORAGE_DEFAULTS.items():
        if getattr(args, dest) != default:
            option = "--" + dest.replace("_", "-")
            parser.error(
                f"{option} does not apply to 'ganhpo {args.command}' (it opens no study "
                f"database); drop {option}"
            )


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("ganhpo")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Optuna's own INFO lines duplicate ours.
    logging.getLogger("optuna").setLevel(logging.WARNING)
    # ganhpo uses Optuna's heartbeat and retry machinery on purpose, with its own loop (so the
    # exact budget lock can wrap ask()): the "experimental" and "use Study.optimize" notes are
    # noise to a user.
    warnings.filterwarnings("ignore", message=r".*is experimental")
    warnings.filterwarnings("ignore", message=r".*is an experimental feature")
    warnings.filterwarnings("ignore", message=r"Heartbeat of storage is supposed to be used")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _reject_unused_storage(parser, args)
    _setup_logging(args.quiet, args.verbose)
    try:
        return int(args.func(args) or 0)
    except GanhpoError as e:
        print(f"ganhpo: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ganhpo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away ('ganhpo study trials NAME --csv | head'): what it
        # read is what it asked for. Python's own flush at exit must not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
