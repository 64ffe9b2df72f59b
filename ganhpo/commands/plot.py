"""``ganhpo plot NAME --out DIR``: an offline HTML report of a study; prints index.html's path."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ganhpo.commands._common import add_storage_args, positive, storage_from_args
from ganhpo.errors import ConfigError

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` command."""
    p = sub.add_parser(
        "plot",
        help="write an offline HTML report of a study",
        description="Write history, FID curves, importances, parallel coordinates, slices, "
        "an lr_g × lr_d contour and an index with the best trials' sample grids into DIR. "
        "The pages open offline (plotly.js is copied into DIR). Prints the index's path.",
    )
    p.add_argument("name", help="the study name (ganhpo study list)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report folder")
    p.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="artifact store with the sample grids (default: the one the study was created "
        "with, else $GANHPO_ARTIFACTS, else ./ganhpo-artifacts)",
    )
    p.add_argument(
        "--top",
        type=positive(int),
        default=10,
        metavar="N",
        help="best trials in the index table (default 10)",
    )
    add_storage_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo plot``."""
    from optuna.trial import TrialState

    from ganhpo.artifacts import resolve_artifacts
    from ganhpo.report import write_report
    from ganhpo.study import ARTIFACTS_ATTR, load_study

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a directory for the report")
    storage = storage_from_args(args)
    study = load_study(args.name, storage)
    artifacts = resolve_artifacts(args.artifacts or study.user_attrs.get(ARTIFACTS_ATTR))
    index = write_report(study, args.out, storage=storage, artifacts=artifacts, top=args.top)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    if TrialState.COMPLETE not in states:
        running = states.count(TrialState.RUNNING)
        logger.warning(
            "no trial of %r has completed yet, so the report has no results and no sample "
            "grids: %s until a trial completes, then run 'ganhpo plot' again",
            args.name,
            f"wait for the {running} running trial(s)"
            if running
            else f"run a worker ('ganhpo worker --study {args.name}', with the same storage)",
        )
    print(index)
    return 0
