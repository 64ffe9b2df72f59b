"""``ganhpo worker --study NAME``: pull trials, train them, report FID; run one per machine/GPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganhpo.commands._common import add_storage_args, storage_from_args
from ganhpo.errors import ConfigError

__all__ = ["register"]


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be positive")
        return value

    return parse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``worker`` command."""
    p = sub.add_parser("worker", help="run trials of a study", description=__doc__)
    p.add_argument("--study", required=True, help="the study name (ganhpo study list)")
    add_storage_args(p)
    p.add_argument("--n-trials", type=_positive(int), help="stop after N trials of this worker")
    p.add_argument("--timeout", type=_positive(float), help="start no trial after S seconds")
    p.add_argument(
        "--max-total-trials",
        type=_positive(int),
        help="the study's total budget, shared by all workers (default: the spec's max_trials)",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the spec's)")
    p.add_argument("--data-dir", type=Path, help="dataset files (GANHPO_DATA_DIR)")
    p.add_argument("--cache-dir", type=Path, help="real-data statistics cache (GANHPO_CACHE_DIR)")
    p.add_argument("--out", type=Path, help="write each trial's sample grids under this folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo worker``."""
    from ganhpo.study import load_study, study_spec
    from ganhpo.train import resolve_device
    from ganhpo.worker import Worker, WorkerOptions

    if args.device:
        resolve_device(args.device)  # a bad or unavailable device fails before any trial
        if not (args.device in ("auto", "cpu", "cuda") or args.device.startswith("cuda:")):
            raise ConfigError(f"--device {args.device!r} is invalid; use auto, cpu, cuda or cuda:N")
    study = load_study(args.study, storage_from_args(args))
    options = WorkerOptions(
        n_trials=args.n_trials,
        timeout=args.timeout,
        max_total_trials=args.max_total_trials,
        device=args.device,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        out_dir=args.out,
    )
    Worker(study, study_spec(study), options).run()
    return 0
