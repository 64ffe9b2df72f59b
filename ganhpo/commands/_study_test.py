"""``ganhpo study test NAME``: the best trials' FID on images their search never used.

A search picks its best trial by the FID it measured, on the evaluation latents and against a
sample of the training split: the winner's number is biased low by the choice itself (many
trials, the luckiest noise wins). This re-scores the final generators of the K best trials on
the dataset's test split, with fresh latents, and records the result on each trial.
"""

from __future__ import annotations

import argparse
import logging
import math

from ganhpo.commands._common import (
    add_data_args,
    add_storage_args,
    positive,
    print_json,
    storage_from_args,
)

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(group: argparse._SubParsersAction) -> None:
    """Add ``study test`` to the ``study`` command group."""
    t = group.add_parser(
        "test",
        help="re-score the best trials' generators on the test split",
        description="Re-score the final generators of the K best completed trials on images "
        "the search never used (the dataset's test split), with fresh latents (a seed other "
        "than the evaluation seed) and N samples; print each trial's search and test FID and "
        "ranks, and record test_fid and test_fid_std on each trial.",
    )
    t.add_argument("name", help="the study name (ganhpo study list)")
    t.add_argument(
        "--top", type=positive(int), default=5, metavar="K", help="how many of the best (5)"
    )
    t.add_argument(
        "--samples",
        type=positive(int),
        default=10_000,
        metavar="N",
        help="generated images per trial, and real test images (all when the split has "
        "fewer) (default 10000)",
    )
    t.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the latents and of the test sample (default: the evaluation seed + 1)",
    )
    t.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the study's artifact store, where it is reachable from here",
    )
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    add_data_args(t)
    add_storage_args(t)
    t.add_argument("--json", action="store_true", help="print JSON (indented) instead of text")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo study test``."""
    from ganhpo.results import open_store, test_trials
    from ganhpo.study import load_study
    from ganhpo.train import resolve_device

    device = resolve_device(args.device or "auto")
    storage = storage_from_args(args)
    study = load_study(args.name, storage)
    store = open_store(study, args.artifacts)
    result = test_trials(
        study, storage, store, top=args.top, samples=args.samples, seed=args.seed,
        device=device, data_dir=args.data_dir, cache_dir=args.cache_dir,
    )  # fmt: skip
    for warning in result.warnings:
        logger.warning("%s", warning)
    ref = result.reference
    if args.json:
        print_json(
            {
                "study": study.study_name,
                "samples": result.samples,
                "seed": result.seed,
                "extractor": result.extractor,
                "reference": ref,
                "trials": [vars(s) for s in result.scores],
            }
        )
        return 0
    print(
        f"test reference: {ref['dataset']}/{ref['split']} ({len(ref['indices'])} of its "
        f"{ref['num_images']} images), {result.samples} samples of seed {result.seed} "
        f"(the search: seed {result.search_seed}), extractor {result.extractor}"
    )
    print(f"{'trial':>5}  {'search rank':>11}  {'search FID':>10}  {'test rank':>9}  test FID")
    for s in sorted(result.scores, key=lambda s: s.search_rank):
        std = f" ± {s.test_fid_std:.2g}" if math.isfinite(s.test_fid_std) else ""
        print(
            f"{s.number:>5}  {s.search_rank:>11}  {s.search_fid:>10.4f}  {s.test_rank:>9}  "
            f"{s.test_fid:.4f}{std}"
        )
    return 0
