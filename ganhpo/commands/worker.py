"""``ganhpo worker --study NAME``: pull trials, train them, report FID; one per machine/GPU."""

from __future__ import annotations

import argparse

from ganhpo.commands._common import add_data_args, add_storage_args, positive, storage_from_args

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``worker`` command."""
    p = sub.add_parser(
        "worker",
        help="run trials of a study",
        description="Pull trials of a study from its database, train them and report their "
        "FID (or KID) until the study's budget is spent. Run one per machine or GPU; any "
        "number share a study.",
    )
    p.add_argument(
        "--study", required=True, metavar="NAME", help="the study name (ganhpo study list)"
    )
    add_storage_args(p)
    p.add_argument(
        "--n-trials", type=positive(int), metavar="N", help="stop after N trials of this worker"
    )
    p.add_argument(
        "--timeout",
        type=positive(float),
        metavar="SECONDS",
        help="start no new trial after this long (the running one finishes)",
    )
    p.add_argument(
        "--max-total-trials",
        type=positive(int),
        metavar="N",
        help="the study's total budget, shared by all workers (default: the spec's max_trials)",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the spec's)")
    add_data_args(p)
    p.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="shared artifact store for checkpoints and generators (default: the one the "
        "study was created with, else $GANHPO_ARTIFACTS, else ./ganhpo-artifacts)",
    )
    p.add_argument(
        "--db-retry-timeout",
        type=positive(float),
        default=300.0,
        metavar="SECONDS",
        help="retry database errors this long before giving up (default 300)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo worker``."""
    from ganhpo.train import resolve_device
    from ganhpo.worker import Worker, WorkerOptions, open_worker_study

    if args.device is not None:
        resolve_device(args.device)  # a bad or unavailable device fails before any trial
    from ganhpo.artifacts import STORE_MARKER_ATTR, open_study_store, resolve_artifacts
    from ganhpo.study import ARTIFACTS_ATTR, name_metrics

    study, spec, storage = open_worker_study(
        args.study, lambda **heartbeat: storage_from_args(args, **heartbeat)
    )
    name_metrics(study, spec.objectives)  # a study created before ganhpo named it
    artifacts = resolve_artifacts(args.artifacts or study.user_attrs.get(ARTIFACTS_ATTR))
    # The study's own store, or a refusal: never an empty folder on this machine's disk.
    open_study_store(artifacts, study.user_attrs.get(STORE_MARKER_ATTR), study=args.study)
    options = WorkerOptions(
        n_trials=args.n_trials,
        timeout=args.timeout,
        max_total_trials=args.max_total_trials,
        device=args.device,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        artifacts=artifacts,
        db_retry_timeout=args.db_retry_timeout,
    )
    worker = Worker(study, spec, options, storage=storage)
    worker.preflight()  # a broken store, dataset or extractor stops here, before any trial
    worker.install_signal_handlers()
    worker.run()
    return 0
