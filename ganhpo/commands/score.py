"""``ganhpo score IMAGES``: FID (and KID) of images made elsewhere, as trials measure them.

The command GAN people know from pytorch-fid (``python -m pytorch_fid path1 path2``), through
ganhpo's own code path: the same extractors and their checks, the same seeded real reference,
the same Fréchet distance and sampling std as every evaluation of a study. The reference is a
study's dataset (``--study``: exactly the numbers its trials report), a registered dataset
(``--dataset``), or a second folder or ``.npz`` (``--against``).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganhpo.commands._common import (
    add_data_args,
    add_storage_args,
    positive,
    print_json,
    storage_from_args,
)
from ganhpo.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ganhpo.data import ImageDataset

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``score`` command."""
    p = sub.add_parser(
        "score",
        help="FID/KID of a folder or .npz of images against real data",
        description="Score images made anywhere (a folder of PNG/JPEG files, or an .npz/.npy "
        "of uint8 images) against a reference, with the extractor, real sample and distance "
        "that trials use: against a study's dataset (--study, the numbers its trials report), "
        "a registered dataset (--dataset) or a second folder or .npz (--against).",
    )
    p.add_argument("images", type=Path, help="folder of PNG/JPEG images, or .npz/.npy file")
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument(
        "--study", metavar="NAME", help="compare as this study's trials do (its dataset, "
        "extractor and evaluation seed)"
    )  # fmt: skip
    ref.add_argument(
        "--dataset", metavar="NAME", help="a registered dataset, e.g. mnist or fashion-mnist"
    )
    ref.add_argument(
        "--against", type=Path, metavar="PATH", help="a second folder or .npz as the reference"
    )
    p.add_argument("--split", default="train", help="the --dataset split (default: train)")
    p.add_argument(
        "--extractor",
        help="feature extractor: classifier or inception (default: the study's, else classifier)",
    )
    p.add_argument(
        "--samples",
        type=positive(int),
        metavar="N",
        help="score a seeded random N of the images (default: all); the real reference has as many",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the real reference sample (default: the study's evaluation seed, else 0)",
    )
    p.add_argument(
        "--final",
        action="store_true",
        help="with --study: compare with the reference of its final evaluations (the whole "
        "split when eval.final_reference = 'full'), to match a trial's final FID",
    )
    p.add_argument("--no-kid", action="store_true", help="FID only (KID is most of the time)")
    add_data_args(p)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)


def _image_source(path: Path) -> str:
    """The dataset loader for a path of images: a folder or an .npz/.npy file."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a folder of images or an .npz/.npy file")
    if path.is_dir():
        return "image-folder"
    if path.suffix.lower() in (".npz", ".npy"):
        return "npz"
    raise ConfigError(f"{path} is neither a folder nor an .npz/.npy file; give one of those")


def _reference(args: argparse.Namespace) -> tuple[dict[str, Any], str, int, bool]:
    """(load_dataset keyword arguments, extractor, seed, whether the whole split is the
    reference) of the reference the arguments name."""
    if args.final and args.study is None:
        raise ConfigError("--final compares as a study's final evaluations do; add --study NAME")
    if args.study is not None:
        from ganhpo.study import load_study, study_spec

        spec = study_spec(load_study(args.study, storage_from_args(args)))
        ds, ev = spec.base.dataset, spec.base.eval
        dataset = {
            "name": ds.name,
            "split": ds.split,
            "resolution": ds.resolution,
            "channels": ds.channels,
            "path": ds.path,
            "limit": ds.limit,
            "holdout": ds.holdout or 0.0,
        }
        seed = ev.seed if args.seed is None else args.seed
        return (
            dataset,
            args.extractor or ev.extractor,
            seed,
            args.final and ev.final_reference == "full",
        )
    if args.dataset is not None:
        dataset = {"name": args.dataset, "split": args.split}
    else:
        dataset = {"name": _image_source(args.against), "path": args.against}
    return dataset, args.extractor or "classifier", 0 if args.seed is None else args.seed, False


# FID fits a Gaussian to d-dimensional features: its covariance from n images has rank at most
# n - 1, singular below d, and FID's upward bias grows like d / n. Below 2 d images per side
# (256 for the classifier's 128 features, 4096 for Inception's 2048) the number is mostly that
# bias (5 images scored 583.7), so it is refused rather than printed.
_MIN_SAMPLES_PER_FEATURE = 2


def _min_samples(extractor: str) -> int:
    """The fewest images per side that ``ganhpo score`` accepts for this extractor."""
    from ganhpo.metrics import ClassifierExtractor, InceptionExtractor

    dims = {"classifier": ClassifierExtractor.dim, "inception": InceptionExtractor.dim}
    return _MIN_SAMPLES_PER_FEATURE * dims[extractor]


def _check_sample_size(args: argparse.Namespace, fake: int, real: int, extractor: str) -> None:
    """Refuse a scored set or reference too small for FID to mean anything."""
    least = _min_samples(extractor)
    why = (
        f"FID with the {extractor} extractor needs at least {least} images per side (twice its "
        "feature dimension: with fewer, the covariance is singular or nearly and the number is "
        "mostly small-sample bias)"
    )
    if fake < least and args.samples is not None:
        raise ConfigError(f"--samples {fake} is too few; {why}: ask for {least} or more")
    if fake < least:
        raise ConfigError(f"{args.images} holds only {fake} image(s); {why}: score more images")
    if real < least:
        raise ConfigError(f"the reference holds only {real} image(s); {why}: use a larger one")


def _check_shapes(args: argparse.Namespace, fake: tuple[int, ...], real: tuple[int, ...]) -> None:
    """Refuse images that a study's generators cannot have made (another size or channel
    count); against a dataset or a folder, warn: the extractor resizes, but gray against
    colour or a crop against a full view compares more than the images' quality."""

    def shape(s: tuple[int, ...]) -> str:
        return f"{s[1]}x{s[2]} {'gray' if s[0] == 1 else 'RGB'}"

    if fake == real:
        return
    if args.study is not None:
        raise ConfigError(
            f"{args.images} holds {shape(fake)} images and study {args.study!r} makes "
            f"{shape(real)} ones; score images of the study's shape (or use --dataset to "
            "compare with its data at another size)"
        )
    logger.warning(
        "%s holds %s images and the reference %s ones; the extractor resizes both, so FID "
        "also measures that difference",
        args.images,
        shape(fake),
        shape(real),
    )


def _warn_overlap(args: argparse.Namespace, images: torch.Tensor, real: ImageDataset) -> None:
    """Warn (one line) when scored images are also in the reference: a set scored against
    itself gets a low FID that says nothing about new images."""
    from ganhpo.data import image_hashes

    if tuple(images.shape[1:]) != tuple(real.images.shape[1:]):
        return  # read at other sizes: no image can be the same
    reference = set(image_hashes(real.images))
    shared = sum(key in reference for key in image_hashes(images))
    if shared:
        logger.warning(
            "%d of the %d images scored are also in the reference %s/%s (identical pixels): "
            "FID is biased low; score images the reference does not hold",
            shared,
            len(images),
            real.name,
            real.split,
        )


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo score``."""
    from ganhpo.data import load_dataset
    from ganhpo.metrics import Evaluator, check_extractor, content_order, real_sample_indices
    from ganhpo.train import resolve_device

    device = resolve_device(args.device or "auto")
    source = _image_source(args.images)
    reference, extractor, seed, whole_split = _reference(args)
    # What can be told without loading anything fails first (an extractor that cannot work).
    check_extractor(extractor, dataset=reference["name"], path=reference.get("path"))
    fake = load_dataset(source, path=args.images, data_dir=args.data_dir)
    real = load_dataset(data_dir=args.data_dir, **reference)
    images = fake.images
    if args.samples is not None and args.samples < len(images):
        # Another draw than the reference's (seed): the same file on both sides must not
        # compare an image with itself. From the images in their content order, so that the
        # same images in another order give the same sample.
        images = images[content_order(images)]
        images = images[real_sample_indices(len(images), args.samples, seed + 1)]
    _check_sample_size(args, len(images), len(real), extractor)
    _check_shapes(args, tuple(images.shape[1:]), tuple(real.images.shape[1:]))
    _warn_overlap(args, images, real)
    evaluator = Evaluator(
        real, extractor=extractor, device=device, cache_dir=args.cache_dir, seed=seed,
        latent_dim=1,
    )  # fmt: skip
    real_samples = len(real) if whole_split else len(images)
    result = evaluator.evaluate_images(images, kid=not args.no_kid, real_samples=real_samples)
    real_n = evaluator.real_stats(real_samples).num_samples
    out = {
        "fid": result.fid,
        "fid_std": result.fid_std,
        "kid": result.kid,
        "kid_std": result.kid_std,
        "num_samples": result.num_samples,
        "real_samples": real_n,
        "reference": f"{real.name}/{real.split}",
        "extractor": extractor,
        "seed": seed,
    }
    if args.json:
        print_json(out)  # not computed or not finite: null
        return 0
    std = f" ± {result.fid_std:.2g}" if math.isfinite(result.fid_std) else ""
    kid = (
        ""
        if math.isnan(result.kid)
        else f"  KID {result.kid:.4g} ± {result.kid_std:.2g} (unscaled)"
    )
    print(f"FID {result.fid:.4f}{std}{kid}")
    logger.info(
        "%d images of %s against %d real images of %s (extractor %s, seed %d)",
        result.num_samples,
        args.images,
        real_n,
        out["reference"],
        extractor,
        seed,
    )
    return 0
