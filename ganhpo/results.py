"""What a study hands over at the end: its trials' final generators, images sampled from them,
and their FID on images the search never used.

- :func:`trial_generator` finds a completed trial's final generator (or a checkpoint that is
  still in the artifact store) and :func:`run_generator` a ``ganhpo train --out`` folder's;
  both return a :class:`ganhpo.train.export.GeneratorFile` that rebuilds the network.
- :func:`sample_images` draws uint8 images from a generator on the evaluation latents, in the
  evaluation's batches and quantized as evaluations quantize them: ``ganhpo score`` of the
  saved images gives the trial's recorded FID.
- :func:`test_trials` re-scores the best trials' generators on the dataset's test split with
  fresh latents (``ganhpo study test``) and records ``test_fid`` on each trial.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ganhpo._optuna import trial_id_of
from ganhpo.chains import checkpoint_of
from ganhpo.errors import ConfigError, GanhpoError, StorageError
from ganhpo.train.config import DatasetConfig
from ganhpo.train.export import GeneratorFile, read_generator

__all__ = [
    "TEST_ATTRS",
    "TestRun",
    "TestScore",
    "best_completed",
    "completed_trial",
    "fid_sort_key",
    "finite_or_none",
    "held_out_images",
    "open_store",
    "real_images_score",
    "run_generator",
    "sample_images",
    "test_reference",
    "test_trials",
    "trial_generator",
]

logger = logging.getLogger(__name__)

# The user attributes `ganhpo study test` records on each trial it scores.
TEST_ATTRS = ("test_fid", "test_fid_std", "test_samples", "test_seed", "test_reference")

# In a 'ganhpo train --out DIR' folder: the final generator, the last training state.
RUN_GENERATOR = "generator.pt"
RUN_CHECKPOINT = "checkpoint.pt"


# --------------------------------------------------------------------- finding a generator
def open_store(study: optuna.Study, artifacts: str | None = None) -> Any:
    """The study's artifact store (``artifacts``, else the one it was created with), checked
    to be the study's own (its marker)."""
    from ganhpo.artifacts import STORE_MARKER_ATTR, open_study_store, resolve_artifacts
    from ganhpo.storage import study_attr
    from ganhpo.study import ARTIFACTS_ATTR

    location = resolve_artifacts(artifacts or study.user_attrs.get(ARTIFACTS_ATTR))
    marker = study_attr(study, STORE_MARKER_ATTR)
    return open_study_store(location, marker, study=study.study_name)


def completed_trial(study: optuna.Study, number: int | None = None) -> FrozenTrial:
    """Trial ``number`` of the study, which must be completed; default the best (for a study
    with a cost, the best FID of its Pareto front)."""
    from ganhpo.study import best_config

    chosen, _, _ = best_config(study, trial=number)
    return next(t for t in study.get_trials(deepcopy=False) if t.number == chosen)


def _read(store: Any, artifact_id: str) -> bytes | None:
    from ganhpo.artifacts import read_artifact

    try:
        return read_artifact(store, artifact_id)
    except (ArtifactNotFound, FileNotFoundError):
        return None


def trial_generator(
    study: optuna.Study, trial: FrozenTrial, store: Any, *, step: int | None = None
) -> GeneratorFile:
    """A completed trial's final generator (``generator.pt`` in the store) or, with ``step``,
    its generator at that step: the final one when it is that step's, else the trial's
    checkpoint at that step while the store still holds it (a trial keeps only its latest
    checkpoint, and a finished one usually none). Raises StorageError saying which steps the
    store still has."""
    name = f"trial {trial.number} of study {study.study_name!r}"
    generator_id = trial.user_attrs.get("generator")
    final_step = trial.user_attrs.get("steps")
    final = _read(store, generator_id) if generator_id else None
    kept = {int(final_step): "its final generator"} if final is not None and final_step else {}
    checkpoint = checkpoint_of(trial) or {}
    if step is None:
        if final is None:
            raise StorageError(
                f"{name} has no final generator in the artifact store ("
                + ("it was removed" if generator_id else "the study ran without a store")
                + "); sample another trial (--trial N)"
            )
        return read_generator(final, name=f"the final generator of {name}")
    if step in kept:
        assert final is not None
        return read_generator(final, name=f"the final generator of {name}")
    data = None
    if checkpoint.get("step") == step and checkpoint.get("id"):
        data = _read(store, checkpoint["id"])
    if data is None:
        steps = ", ".join(f"{s} ({what})" for s, what in sorted(kept.items())) or "none"
        raise StorageError(
            f"{name} has no generator at step {step} in the artifact store any more (a trial "
            f"keeps its final generator; its checkpoints are replaced as it trains and removed "
            f"when it ends); steps kept: {steps}; pick one of those or drop --step"
        )
    return read_generator(data, name=f"the checkpoint of {name} at step {step}")


def run_generator(run: Path, *, step: int | None = None) -> GeneratorFile:
    """The generator of a ``ganhpo train --out`` folder: its ``generator.pt`` (else the last
    ``checkpoint.pt`` of runs written before ganhpo wrote one), or the one of those at
    ``step``. Raises ConfigError naming the steps the folder holds."""
    if not run.is_dir():
        raise ConfigError(
            f"{run} is not a folder; give --run the folder of 'ganhpo train --out DIR'"
        )
    files = [run / RUN_GENERATOR, run / RUN_CHECKPOINT]
    found = [read_generator(path) for path in files if path.is_file()]
    if not found:
        raise ConfigError(
            f"{run} holds neither {RUN_GENERATOR} nor {RUN_CHECKPOINT}; give --run the folder "
            "of 'ganhpo train --out DIR'"
        )
    if step is None:
        return found[0]
    for generator in found:
        if generator.step == step:
            return generator
    steps = ", ".join(f"{g.step} ({Path(g.source).name})" for g in found if g.step is not None)
    raise ConfigError(
        f"{run} holds no generator at step {step} ('ganhpo train' keeps only its last "
        f"checkpoint); steps kept: {steps or 'none'}; pick one of those or drop --step"
    )


# ------------------------------------------------------------------------------- sampling
def sample_images(
    generator: nn.Module,
    num_samples: int,
    *,
    seed: int,
    latent_dim: int,
    batch_size: int = 500,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``num_samples`` uint8 images [N, C, H, W] (on the CPU) of ``generator`` on
    :func:`ganhpo.metrics.fixed_latents` of ``seed``: with the study's evaluation seed, the
    images its final evaluation scored, generated in the same batches and quantized the same
    way (:func:`ganhpo.data.from_unit_range`). Raises GanhpoError when the generator makes
    non-finite pixels."""
    from ganhpo.data import from_unit_range
    from ganhpo.metrics import fixed_latents, generate_images

    latents = fixed_latents(seed, num_samples, latent_dim)
    chunks = []
    for images in generate_images(generator, latents, batch_size=batch_size, device=device):
        if not bool(torch.isfinite(images).all()):
            raise GanhpoError(
                "the generator makes NaN or infinite pixels on these latents; it diverged: "
                "sample another trial or step"
            )
        chunks.append(from_unit_range(images).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8)


# ---------------------------------------------------------------------- the held-out test
@dataclass(frozen=True)
class TestScore:
    """One trial's FID on the test reference beside its search FID; ranks count from 1
    (``search_rank`` among all completed trials, ``test_rank`` among those tested)."""

    number: int
    search_rank: int
    search_fid: float
    test_fid: float
    test_fid_std: float
    test_rank: int = 0


@dataclass(frozen=True)
class TestRun:
    """What ``ganhpo study test`` measured: the scores, best test FID first, and the reference
    they were measured against (``reference``: dataset name, split, images in the split, and
    the ``indices`` of the split's images the real statistics came from)."""

    scores: list[TestScore]
    reference: dict[str, Any]
    samples: int
    seed: int
    search_seed: int
    extractor: str
    warnings: list[str] = field(default_factory=list)


def test_reference(study: optuna.Study, *, data_dir: str | Path | None = None) -> tuple[Any, Any]:
    """(held-out images, training data as the study uses it) of a study's dataset: the images
    the search never saw (the test split, else the ``dataset.holdout`` share of the train
    split the study set aside when it was created), and those its feature extractor is for.
    Raises ConfigError for a dataset with neither."""
    from ganhpo.data import load_dataset
    from ganhpo.study import study_spec

    ds = study_spec(study).base.dataset
    test = held_out_images(ds, study.study_name, data_dir=data_dir)
    common: dict[str, Any] = {"resolution": ds.resolution, "channels": ds.channels, "path": ds.path}
    train = load_dataset(
        ds.name, split="train", data_dir=data_dir, limit=ds.limit, holdout=ds.holdout or 0.0,
        **common,
    )  # fmt: skip
    return test, train


def held_out_images(ds: DatasetConfig, name: str, *, data_dir: str | Path | None = None) -> Any:
    """The images study ``name``'s search never saw (see :func:`test_reference`); raises
    ConfigError for a dataset with none."""
    from ganhpo.data import HOLDOUT_SPLIT, has_test_split, load_dataset

    if ds.split != "train":
        raise ConfigError(
            f"study {name!r} trains on the {ds.split} split of {ds.name}, so no split is held "
            "out of its search; test its generators against images of your own with "
            "'ganhpo sample' and 'ganhpo score OUT --against HELD_OUT'"
        )
    holdout = ds.holdout or 0.0
    test_split = has_test_split(ds.name, ds.path)
    if not test_split and not holdout:
        raise ConfigError(
            f"dataset {ds.name!r} of study {name!r} has no test split, and the study set "
            "none of its images aside (it was created before ganhpo did, or with "
            "dataset.holdout = 0); create it again to have 10 % held out, or sample its "
            "generators with 'ganhpo sample' and score them against images the search never "
            "saw with 'ganhpo score OUT --against HELD_OUT'"
        )
    common: dict[str, Any] = {"resolution": ds.resolution, "channels": ds.channels, "path": ds.path}
    if test_split:
        return load_dataset(ds.name, split="test", data_dir=data_dir, **common)
    return load_dataset(ds.name, split=HOLDOUT_SPLIT, data_dir=data_dir, holdout=holdout, **common)


def real_images_score(evaluator: Any, held: Any, samples: int) -> dict[str, Any]:
    """The FID (and KID) of ``samples`` real images the search never saw (``held``), scored
    as a trial's generator is (``evaluator``, against the training images): the floor of the
    metric at that sample size, what a person reads a trial's value against."""
    n = min(samples, len(held))
    result = evaluator.evaluate_images(held.images[:n])
    return {
        "fid": finite_or_none(result.fid),
        "fid_std": finite_or_none(result.fid_std),
        "kid": finite_or_none(result.kid),
        "samples": n,
        "split": held.split,
    }


def test_trials(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    store: Any,
    *,
    top: int = 5,
    samples: int = 10_000,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> TestRun:
    """Re-score the final generators of the ``top`` best completed trials on the test split
    (:func:`test_reference`) with ``samples`` fresh latents of ``seed`` (default: the
    evaluation seed + 1; the evaluation seed itself is refused) and as many real test images
    (all of them when the split has fewer), FID with its jackknife std; record
    :data:`TEST_ATTRS` on each trial, one transaction per trial."""
    from ganhpo.metrics import Evaluator
    from ganhpo.storage import set_user_attrs
    from ganhpo.study import study_spec

    spec = study_spec(study)
    base = spec.base
    search_seed = base.eval.seed
    seed = search_seed + 1 if seed is None else seed
    if seed == search_seed:
        raise ConfigError(
            f"--seed {seed} is the evaluation seed of study {study.study_name!r}: the latents "
            "its search was scored on; choose another seed"
        )
    test, train = test_reference(study, data_dir=data_dir)
    completed = best_completed(study, top)
    target = torch.device(device)
    evaluator = Evaluator(
        test, extractor=base.eval.extractor, device=target, cache_dir=cache_dir, seed=seed,
        latent_dim=base.model.latent_dim, extractor_data=train,
    )  # fmt: skip
    reference = f"{test.name}/{test.split}"
    warnings = []
    if len(test) < samples:
        warnings.append(
            f"the {reference} split holds {len(test)} images for {samples} generated ones: "
            "FID is biased by the mismatch (compare these test FIDs with one another)"
        )
    scores = []
    for rank, trial in enumerate(completed, start=1):
        generator_file = trial_generator(study, trial, store)
        config = generator_file.config
        generator = generator_file.build(device=target, data_dir=data_dir)
        result = evaluator.evaluate(
            generator, samples, batch_size=config.eval.batch_size, kid=False,
            latent_dim=config.model.latent_dim,
        )  # fmt: skip
        scores.append(TestScore(trial.number, rank, trial.values[0], result.fid, result.fid_std))
        attrs: dict[str, object] = {
            "test_fid": finite_or_none(result.fid),
            "test_fid_std": finite_or_none(result.fid_std),
            "test_samples": samples,
            "test_seed": seed,
            "test_reference": reference,
        }
        set_user_attrs(storage, trial_id_of(trial), attrs, finished=True)
        logger.info(
            "trial %d: test FID %.4f (search FID %.4f)", trial.number, result.fid, trial.values[0]
        )
    by_test = sorted(scores, key=lambda s: (fid_sort_key(s.test_fid), s.search_rank))
    ranked = [
        TestScore(s.number, s.search_rank, s.search_fid, s.test_fid, s.test_fid_std, i)
        for i, s in enumerate(by_test, start=1)
    ]
    stats = evaluator.real_stats(samples)
    return TestRun(
        scores=ranked,
        reference={
            "dataset": test.name,
            "split": test.split,
            "num_images": len(test),
            "indices": [int(i) for i in stats.indices],
        },
        samples=samples,
        seed=seed,
        search_seed=search_seed,
        extractor=base.eval.extractor,
        warnings=warnings,
    )


def best_completed(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` completed trials of the best (lowest) objective, best first; raises
    StorageError when there is none."""
    completed = sorted(
        (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values),
        key=lambda t: (fid_sort_key(t.values[0]), t.number),
    )
    if not completed:
        raise StorageError(
            f"study {study.study_name!r} has no completed trial yet; run 'ganhpo worker "
            f"--study {study.study_name}' first"
        )
    return completed[:top]


def finite_or_none(value: float) -> float | None:
    """``value``, or None for inf and nan (JSON and Optuna's attributes have neither)."""
    return value if math.isfinite(value) else None


def fid_sort_key(value: float) -> float:
    """A FID to sort by, best first: nan and inf last."""
    return value if math.isfinite(value) else math.inf
