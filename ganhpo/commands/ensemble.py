"""``ganhpo ensemble NAME --top K --out DIR``: a mixture of a study's K best generators.

Each image of the mixture comes from one member; the weights are uniform or fitted to the
lowest FID against a validation reference (a sample of the training split, on latents of
their own), and every member alone and both mixtures are scored on the test reference that
``ganhpo study test`` uses. ``DIR/generator.pt`` is the ensemble as one generator, which
``ganhpo sample --run DIR`` samples like any other; ``DIR/ensemble.json`` says what it
measured. The study records it (a study artifact, which optuna-dashboard lists, and a user
attribute ``ganhpo:ensemble:<artifact id>`` with its scores, which ``ganhpo study show`` and the
report list).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganhpo._files import atomic_write_bytes
from ganhpo.commands._common import (
    add_data_args,
    add_storage_args,
    json_text,
    positive,
    print_json,
    storage_from_args,
)
from ganhpo.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from ganhpo.ensemble import EnsembleRun

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

ENSEMBLE_FILE = "generator.pt"
SUMMARY_FILE = "ensemble.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ensemble`` command."""
    p = sub.add_parser(
        "ensemble",
        help="mix a study's K best generators into one, fitted and scored on held-out data",
        description="Mix the final generators of a study's K best completed trials (each image "
        "drawn from one member), with weights fitted to the lowest FID against a validation "
        "sample of the training split (or uniform); score every member alone and both mixtures "
        "on the dataset's test split with fresh latents; write the chosen mixture to "
        "DIR/generator.pt (a generator 'ganhpo sample --run DIR' samples) and record it in the "
        "study.",
    )
    p.add_argument("name", help="the study name (ganhpo study list)")
    p.add_argument(
        "--top", type=positive(int), default=3, metavar="K", help="how many of the best (3)"
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new (or empty) folder")
    p.add_argument(
        "--weights",
        choices=("fitted", "uniform"),
        default="fitted",
        help="the mixture written and recorded (default: fitted); both are scored",
    )
    p.add_argument(
        "--samples",
        type=positive(int),
        default=10_000,
        metavar="N",
        help="generated images per test score, and real test images (default 10000)",
    )
    p.add_argument(
        "--fit-samples",
        type=positive(int),
        default=5_000,
        metavar="N",
        help="generated images per member, and real training images, to fit the weights on "
        "(default 5000)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the test latents and sample; the fit uses S + 1 (default: the "
        "evaluation seed + 1, as 'ganhpo study test')",
    )
    p.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the study's artifact store, where it is reachable from here",
    )
    p.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="write DIR only; do not upload the ensemble to the study's store or record it",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    add_data_args(p)
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print what was measured as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo ensemble``."""
    from ganhpo.data import check_image_output
    from ganhpo.ensemble import ensemble_study
    from ganhpo.results import open_store
    from ganhpo.study import load_study
    from ganhpo.train import resolve_device

    if args.top < 2:
        raise ConfigError(f"an ensemble needs 2 members or more, got --top {args.top}; use 2+")
    if args.out.suffix.lower() in (".npz", ".npy", ".png", ".pt"):
        raise ConfigError(f"--out {args.out} is a file name; give a new or empty folder")
    check_image_output(args.out)  # a new or empty folder that can be written, checked first
    device = resolve_device(args.device or "auto")
    storage = storage_from_args(args)
    study = load_study(args.name, storage)
    store = open_store(study, args.artifacts)
    result = ensemble_study(
        study, store, top=args.top, samples=args.samples, seed=args.seed,
        fit_samples=args.fit_samples, device=device, data_dir=args.data_dir,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    artifact_id = _write(result, args, study, storage, store)
    out = _as_json(result, args.weights, artifact_id)
    atomic_write_bytes(args.out / SUMMARY_FILE, (json_text(out) + "\n").encode())
    if args.json:
        print_json(out)
    else:
        _print(result, args.weights)
        print(args.out / ENSEMBLE_FILE)
    if not result.beats_best_member(args.weights):
        best = result.best_member
        logger.warning(
            "the %s ensemble (test FID %s) does not beat its best member alone (trial %d, %s): "
            "sample that trial instead ('ganhpo sample --study %s --trial %d')",
            args.weights,
            _fid(
                result.mixtures[args.weights].test_fid, result.mixtures[args.weights].test_fid_std
            ),
            best.number,
            _fid(best.test_fid, best.test_fid_std),
            study.study_name,
            best.number,
        )
    return 0


def _write(
    result: EnsembleRun,
    args: argparse.Namespace,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    store: Any,
) -> str | None:
    """Write the ensemble to DIR and (unless --no-record) the study's record of it: recorded
    first, then written to the store, as trials' artifacts are; its artifact id."""
    from ganhpo._optuna import record_study_artifact, study_id_of
    from ganhpo.artifacts import dashboard_artifact_id, write_artifact
    from ganhpo.ensemble import ensemble_info
    from ganhpo.study import ENSEMBLE_ATTR_PREFIX
    from ganhpo.train.export import dump_ensemble

    weights = result.mixtures[args.weights].weights
    data = dump_ensemble(result.files, weights, ensemble_info(result, args.weights))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / ENSEMBLE_FILE, data)
    artifact_id = None
    if args.record:
        artifact_id = dashboard_artifact_id()
        filename = f"ensemble-top{len(result.members)}-{args.weights}.pt"
        study_id = study_id_of(study)
        record_study_artifact(storage, study_id, artifact_id, filename, "application/octet-stream")
        storage.set_study_user_attr(
            study_id,
            ENSEMBLE_ATTR_PREFIX + artifact_id,
            {**result.summary(args.weights), "filename": filename},
        )
        write_artifact(store, data, kind="ensemble", artifact_id=artifact_id)
    return artifact_id


def _as_json(result: EnsembleRun, weighing: str, artifact_id: str | None) -> dict[str, Any]:
    """What was measured (non-finite FIDs become null when it is written as JSON)."""
    return {
        "study": result.study,
        "written": weighing,
        "artifact": artifact_id,
        "reference": result.reference,
        "samples": result.samples,
        "seed": result.seed,
        "fit_seed": result.fit_seed,
        "fit_samples": result.fit_samples,
        "extractor": result.extractor,
        "members": [vars(m) for m in result.members],
        "mixtures": {k: vars(m) for k, m in result.mixtures.items()},
        "beats_best_member": {k: result.beats_best_member(k) for k in result.mixtures},
    }


def _fid(value: float, std: float) -> str:
    return f"{value:.4f}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def _print(result: EnsembleRun, weighing: str) -> None:
    print(
        f"test reference: {result.reference}, {result.samples} samples of seed {result.seed}; "
        f"weights fitted on {result.fit_samples} training images and latents of seed "
        f"{result.fit_seed}; extractor {result.extractor}"
    )
    print(f"{'':>17}  {'search FID':>10}  {'weight':>6}  test FID")
    for m in result.members:
        print(
            f"{'trial ' + str(m.number):>17}  {m.search_fid:>10.4f}  {m.weight:>6.3f}  "
            f"{_fid(m.test_fid, m.test_fid_std)}"
        )
    for name, mixture in result.mixtures.items():
        mark = " (written)" if name == weighing else ""
        print(
            f"{name + ' mixture':>17}  {'':>10}  {'':>6}  "
            f"{_fid(mixture.test_fid, mixture.test_fid_std)}{mark}"
        )
