"""``ganhpo sample``: images from a trial's final generator (or a ``ganhpo train --out`` run's).

The generator is rebuilt from what the study stored (its self-describing ``generator.pt``,
:mod:`ganhpo.train.export`), a user's own networks included. By default the images are those
the trial's final evaluation scored: its evaluation latents, its EMA generator when it kept
one, quantized to uint8 as evaluations quantize them, so that ``ganhpo score OUT --study NAME``
gives the trial's recorded FID.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ganhpo.commands._common import (
    add_data_args,
    add_storage_args,
    positive,
    print_json,
    storage_from_args,
)
from ganhpo.errors import ConfigError

if TYPE_CHECKING:
    from ganhpo.train.export import GeneratorFile

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

GRID_IMAGES = 64  # images in a sample grid when -n is not given (8 x 8)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sample`` command."""
    p = sub.add_parser(
        "sample",
        help="write images from a trial's final generator (a PNG folder or an .npz)",
        description="Rebuild a completed trial's final generator (or a 'ganhpo train --out' "
        "run's) and write images from it: a folder of PNG files, a .npz of uint8 [N, H, W, C] "
        "(what 'ganhpo score' reads), or with --grid one sample-grid PNG. By default the "
        "images the trial's final FID was measured on: 'ganhpo score OUT --study NAME' gives "
        "that FID.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--study", metavar="NAME", help="a study's trial (default: its best)")
    where.add_argument(
        "--run", type=Path, metavar="DIR", help="the folder of 'ganhpo train --out DIR'"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, metavar="N", help="trial N (a completed one)")
    which.add_argument("--best", action="store_true", help="the best trial (the default)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR|FILE.npz",
        help="a new (or empty) folder for PNG files, a .npz file, or with --grid a .png file",
    )
    p.add_argument(
        "-n",
        "--samples",
        type=positive(int),
        metavar="N",
        help="how many images (default: as many as the final evaluation scored, "
        f"eval.final_samples; {GRID_IMAGES} with --grid)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="latents ganhpo.metrics.fixed_latents(S, N, latent_dim) (default: the evaluation "
        "seed, the latents the trial was scored on)",
    )
    p.add_argument("--grid", action="store_true", help="write one sample-grid PNG instead")
    p.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the EMA generator, or (--no-ema) the trained one (default: the one the trial "
        "was scored on, its EMA copy when it kept one)",
    )
    p.add_argument(
        "--step",
        type=int,
        metavar="K",
        help="the generator at training step K, while the artifact store still holds it "
        "(default: the final generator)",
    )
    p.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the study's artifact store, where it is reachable from here (default: the one "
        "the study was created with)",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    add_data_args(p)
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo sample``."""
    from ganhpo.data import check_image_output, save_images
    from ganhpo.results import run_generator, sample_images
    from ganhpo.train import resolve_device, save_grid

    if args.run is not None and (args.trial is not None or args.best):
        raise ConfigError("--trial and --best choose a study's trial; drop them with --run")
    device = resolve_device(args.device or "auto")
    # A place that cannot take the images fails before anything is loaded or generated.
    check_image_output(args.out, grid=args.grid)
    what: dict[str, object]
    generator_file: GeneratorFile
    if args.run is not None:
        generator_file = run_generator(args.run, step=args.step)
        what = {"run": str(args.run)}
    else:
        generator_file, what = _study_generator(args)
    config = generator_file.config
    generator = generator_file.build(device=device, ema=args.ema, data_dir=args.data_dir)
    n = args.samples or (GRID_IMAGES if args.grid else config.eval.final_samples)
    seed = config.eval.seed if args.seed is None else args.seed
    images = sample_images(
        generator, n, seed=seed, latent_dim=config.model.latent_dim,
        batch_size=config.eval.batch_size, device=device,
    )  # fmt: skip
    if args.grid:
        from ganhpo.data import to_unit_range

        save_grid(to_unit_range(images), args.out)
    else:
        save_images(images, args.out)
    ema = generator_file.ema if args.ema is None else args.ema
    out = {
        **what,
        "out": str(args.out),
        "num_samples": n,
        "seed": seed,
        "step": generator_file.step,
        "ema": ema,
        "shape": list(images.shape[1:]),
    }
    if args.json:
        print_json(out)
        return 0
    logger.info(
        "%d images of %s (step %s, %s generator, latents of seed %d)",
        n,
        ", ".join(f"{k} {v}" for k, v in what.items()),
        generator_file.step if generator_file.step is not None else "?",
        "EMA" if ema else "trained",
        seed,
    )
    print(args.out)
    return 0


def _study_generator(args: argparse.Namespace) -> tuple[GeneratorFile, dict[str, object]]:
    """The generator of the study trial the arguments name, and what to report of it."""
    from ganhpo.results import completed_trial, open_store, trial_generator
    from ganhpo.study import load_study

    study = load_study(args.study, storage_from_args(args))
    trial = completed_trial(study, args.trial)
    store = open_store(study, args.artifacts)
    generator_file = trial_generator(study, trial, store, step=args.step)
    return generator_file, {"study": study.study_name, "trial": trial.number}
