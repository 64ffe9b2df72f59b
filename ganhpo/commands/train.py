"""``ganhpo train CONFIG``: train one fixed configuration outside any study, print its FID."""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
from dataclasses import asdict, replace
from pathlib import Path

from ganhpo.commands._common import add_data_args, print_json
from ganhpo.errors import ConfigError
from ganhpo.train import TrainConfig, resolve_device

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        msg = f"{text!r} is not a comma-separated list of integers"
        raise argparse.ArgumentTypeError(msg) from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    p = sub.add_parser(
        "train",
        help="train one configuration and print its FID",
        description="Train one fixed configuration (a TOML file) and print its final FID.",
    )
    p.add_argument(
        "config",
        type=Path,
        nargs="?",
        help="TOML file with [dataset], [model], [train], [eval] (default: the built-in "
        "small MNIST preset)",
    )
    add_data_args(p)
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write sample grids, the checkpoint and the final generator (generator.pt) here",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the file)")
    p.add_argument("--steps", type=int, metavar="N", help="override train.steps")
    p.add_argument(
        "--seeds",
        type=_seeds,
        metavar="SEED,SEED,...",
        help="comma-separated seeds: train once per seed and print mean ± std FID",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="FILE",
        help="continue from a checkpoint written with --out",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo train``."""
    from ganhpo.spec import load_train_config

    if args.device is not None:
        resolve_device(args.device)  # a bad or unavailable device fails before any data loads
    config = load_train_config(args.config) if args.config else TrainConfig()
    if args.device is not None:
        config = replace(config, device=args.device)
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps {args.steps} is invalid; use a positive count")
        config = config.replace_params(steps=args.steps)
    seeds = args.seeds or [config.seed]
    if args.resume and len(seeds) > 1:
        raise ConfigError("--resume continues one run; drop --seeds or --resume")

    runs = []
    for seed in seeds:
        out = args.out / f"seed{seed}" if args.out and len(seeds) > 1 else args.out
        runs.append(_train_one(replace(config, seed=seed), args, out))

    fids = [float(r["fid"]) for r in runs]  # type: ignore[arg-type]
    summary = {
        "fid_mean": statistics.fmean(fids),
        "fid_std": statistics.stdev(fids) if len(fids) > 1 else 0.0,
        "runs": runs,
    }
    if args.json:
        print_json(summary)
    elif len(runs) == 1:
        r = runs[0]
        kid = "" if r["kid"] is None else f"  KID {r['kid']:.4g} ± {r['kid_std']:.2g} (unscaled)"
        std = "" if r["fid_std"] is None else f" ± {r['fid_std']:.2g}"
        print(f"FID {r['fid']:.4f}{std}{kid}  (step {r['step']})")
    else:
        for r in runs:
            print(f"seed {r['seed']}: FID {r['fid']:.4f}")
        print(f"FID {summary['fid_mean']:.4f} ± {summary['fid_std']:.4f} over {len(runs)} seeds")
    return 0


def _train_one(cfg: TrainConfig, args: argparse.Namespace, out: Path | None) -> dict[str, object]:
    from ganhpo.train import Progress, Trainer, config_to_dict

    trainer = Trainer(cfg, data_dir=args.data_dir, cache_dir=args.cache_dir, out_dir=out)
    if args.resume:
        trainer.load(args.resume)
        logger.info("resumed from %s at step %d", args.resume, trainer.step)
    # The extractor and the real statistics first: one that cannot work fails now, not after
    # the training up to the first evaluation (with nothing written to --out).
    trainer.prepare_evaluation()
    logger.info(
        "training seed %d for %d steps on %s (%s, %d images)",
        cfg.seed,
        cfg.train.steps,
        trainer.device,
        cfg.dataset.name,
        len(trainer.data),
    )
    checkpoint = out / "checkpoint.pt" if out else None

    def save(step: int) -> None:
        if checkpoint is not None:
            trainer.save(checkpoint)

    progress = Progress(cfg.train.steps, trainer.step)
    result = trainer.run(
        on_eval=lambda record: logger.info("%s", progress.line(record)),
        on_checkpoint=save,
    )
    if out is not None and checkpoint is not None:
        from ganhpo.train.export import save_generator

        trainer.save(checkpoint)
        # What 'ganhpo sample --run DIR' and ganhpo.load_generator read, as a trial's.
        save_generator(trainer, out / "generator.pt")
        (out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
    final = result.final
    assert final is not None  # without should_stop a run always reaches its final evaluation
    record = {k: None if isinstance(v, float) and math.isnan(v) else v  # KID off: null
              for k, v in asdict(final).items()}  # fmt: skip
    return {"seed": cfg.seed, **record, "images_per_sec": result.images_per_sec}
