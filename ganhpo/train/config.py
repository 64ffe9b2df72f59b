"""Typed, frozen configuration of one training run.

These dataclasses are what the trainer consumes. They are built from TOML only by
:mod:`ganhpo.spec` (the one parser of user input) or directly in Python; every value is
checked when the object is created, so a typo never surfaces deep inside a trial.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ganhpo.errors import ConfigError

__all__ = [
    "DatasetConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "TrainParams",
    "config_to_dict",
]


def _require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid; {allowed}")


# Upper bounds beyond which a value is a typo, not a choice: each would fail or never end.
MAX_STEPS = 1_000_000_000  # training steps of one run: years on any device
MAX_BATCH_SIZE = 65_536  # images per training batch: 32x BigGAN's 2048
MAX_N_DISC = 100  # D updates per G update (WGAN uses 5)
MAX_WEIGHT = 1e6  # a regulariser's weight (published ones are 0.1 to 1000)
MAX_RESOLUTION = 1024  # pixels on a side
SEED_RANGE = (0, 2**32 - 1)  # what every random generator ganhpo seeds (numpy's, Optuna's) takes


def _require_seed(key: str, value: int) -> None:
    low, high = SEED_RANGE
    _require(low <= value <= high, key, value, f"use a whole number from {low} to {high}")


@dataclass(frozen=True)
class DatasetConfig:
    """Which images to train on (``[dataset]``)."""

    name: str = "mnist"  # a registered dataset: mnist, fashion-mnist, image-folder, npz
    split: str = "train"  # the split trained on; FID compares against the same split
    resolution: int | None = None  # None keeps the native size (28 for MNIST)
    channels: int | None = None  # 1 or 3; None keeps the native channels
    path: str | None = None  # the folder (image-folder) or .npz file (npz)
    limit: int | None = None  # use only the first N images (quick runs, tests)
    # A share of the train split set aside: never trained on, never in a search's FID; what
    # 'ganhpo study test' and 'ganhpo ensemble' score on when the dataset has no test split.
    # None: 0, except that 'ganhpo study create' sets DEFAULT_HOLDOUT for such a dataset.
    holdout: float | None = None

    def __post_init__(self) -> None:
        from ganhpo.data import DATASETS

        DATASETS.get(self.name)
        _require(self.split in ("train", "test"), "dataset.split", self.split, "use train or test")
        if self.holdout is not None:
            _require(
                0 <= self.holdout <= 0.5 and (self.holdout == 0 or self.split == "train"),
                "dataset.holdout",
                self.holdout,
                "use a share of the train split from 0 to 0.5 (e.g. 0.1)",
            )
        if self.resolution is not None:
            _require(
                8 <= self.resolution <= MAX_RESOLUTION and self.resolution % 4 == 0,
                "dataset.resolution",
                self.resolution,
                f"use a multiple of 4 from 8 to {MAX_RESOLUTION} (e.g. 28, 32, 64)",
            )
        if self.channels is not None:
            _require(self.channels in (1, 3), "dataset.channels", self.channels, "use 1 or 3")
        if self.limit is not None:
            _require(self.limit >= 1, "dataset.limit", self.limit, "use a positive count")


@dataclass(frozen=True)
class ModelConfig:
    """The generator/discriminator pair (``[model]``).

    ``arch`` is a registered architecture, or a user's builder ``"package.module:function"``
    (see :func:`ganhpo.train.models.build_models`); for a builder, keys of ``[model]`` that are
    not fields here are its own and are kept in ``options`` (and passed to it).
    """

    arch: str = "dcgan"  # a registered architecture, or "package.module:function"
    width: int = 32  # channels of the widest-resolution hidden layer; deeper layers double it
    latent_dim: int = 64  # size of z
    spectral_norm: bool = False  # spectral normalization on every D layer
    width_g: int | None = None  # the generator's width when it differs from D's (else width)
    width_d: int | None = None  # the discriminator's width (else width)
    depth: int = 0  # extra blocks (layers in dcgan, residual blocks in resnet) per resolution
    options: tuple[tuple[str, Any], ...] = ()  # a user builder's own keys, sorted

    # from_dict collects unknown [model] keys here when accepts_options says so
    OPTIONS_FIELD: ClassVar[str] = "options"

    @staticmethod
    def accepts_options(data: dict[str, Any]) -> bool:
        """Whether a ``[model]`` table may carry keys of its own: a user builder's."""
        return is_builder_path(data.get("arch"))

    @property
    def custom(self) -> bool:
        """Whether ``arch`` names a user's builder rather than a registered architecture."""
        return is_builder_path(self.arch)

    def __post_init__(self) -> None:
        from ganhpo.train.models import ARCHITECTURES

        if self.custom:
            check_builder_path(self.arch)
        elif self.arch not in ARCHITECTURES.names() and "." in self.arch:
            names = ", ".join(ARCHITECTURES.names())
            raise ConfigError(
                f"model.arch = {self.arch!r} is not an architecture ({names}); "
                'a function of your own is written "package.module:function"'
            )
        else:
            ARCHITECTURES.get(self.arch)
            _require(
                not self.options,
                "model",
                dict(self.options),
                f"unknown keys for arch {self.arch!r}; they are passed only to a builder "
                '(arch = "package.module:function")',
            )
        _require(4 <= self.width <= 1024, "model.width", self.width, "use 4 to 1024")
        for key in ("width_g", "width_d"):
            value = getattr(self, key)
            _require(value is None or 4 <= value <= 1024, f"model.{key}", value, "use 4 to 1024")
        _require(1 <= self.latent_dim <= 4096, "model.latent_dim", self.latent_dim, "use 1 to 4096")
        _require(0 <= self.depth <= 8, "model.depth", self.depth, "use 0 to 8")


# [model] keys a study may search (besides a user builder's own keys).
MODEL_SEARCHABLE = frozenset(
    {"arch", "width", "width_g", "width_d", "latent_dim", "spectral_norm", "depth"}
)


def is_builder_path(arch: object) -> bool:
    """Whether ``arch`` is written as a builder's import path (``module:function``)."""
    return isinstance(arch, str) and ":" in arch


def check_builder_path(arch: str) -> None:
    """Refuse an import path that is not ``package.module:function`` (nothing is imported)."""
    module, _, function = arch.partition(":")
    parts = module.split(".")
    if not (all(p.isidentifier() for p in parts) and function.isidentifier()):
        raise ConfigError(
            f'model.arch = {arch!r} is not an import path; write "package.module:function", '
            'e.g. "mynets.gan:build"'
        )


@dataclass(frozen=True)
class TrainParams:
    """Optimization hyperparameters and the step budget (``[train]``).

    A *step* is one generator update preceded by ``n_disc`` discriminator updates.
    """

    steps: int = 3000  # generator updates (about 1.5 min on 2 CPU cores at the defaults)
    batch_size: int = 64
    # DCGAN's published 2e-4 is slow for this D (no batch norm): on MNIST at 2000 steps, FID 167
    # with 2e-4 and 75 with 5e-4 (classifier features; see docs/specs.md).
    lr_g: float = 5e-4  # Adam learning rate of G
    lr_d: float = 5e-4  # Adam learning rate of D
    beta1: float = 0.5  # Adam beta1 (DCGAN's 0.5)
    beta2: float = 0.999  # Adam beta2
    n_disc: int = 1  # D updates per G update
    loss: str = "ns"  # ns (non-saturating), hinge, wasserstein
    penalty: str = "none"  # none, gp (WGAN-GP), r1
    gp_weight: float = 10.0  # lambda of the gradient penalty (used when penalty = "gp")
    r1_gamma: float = 1.0  # gamma of R1 (used when penalty = "r1")
    ema: bool = False  # evaluate an exponential moving average of G's weights
    ema_decay: float = 0.999
    # Representation regularisers (docs/specs.md, "Regularisers"), each off by default:
    feature_matching: bool = False  # G also matches the mean of D's features on real data
    fm_weight: float = 1.0  # its weight (used when feature_matching)
    consistency: bool = False  # bCR: D gives a translated image the logit of the original
    cr_weight: float = 10.0  # its weight, real and fake alike (used when consistency)
    rotation: bool = False  # SS-GAN: D also tells which of 4 rotations an image shows
    rotation_weight: float = 1.0  # D's weight; G's is a fifth of it (used when rotation)
    # Steps between training-state checkpoints (when the caller stores them: a study's worker,
    # ganhpo train --out); None = at every evaluation (every eval.every steps; steps // 10 when
    # eval.every = 0), so a killed trial resumes where it was last scored; 0 = never.
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        from ganhpo.train.losses import LOSSES
        from ganhpo.train.penalties import PENALTIES

        _require(self.steps >= 1, "train.steps", self.steps, "use a positive count")
        _require(self.steps <= MAX_STEPS, "train.steps", self.steps, f"use at most {MAX_STEPS:,}")
        _require(self.batch_size >= 2, "train.batch_size", self.batch_size, "use at least 2")
        _require(
            self.batch_size <= MAX_BATCH_SIZE,
            "train.batch_size",
            self.batch_size,
            f"use at most {MAX_BATCH_SIZE}",
        )
        for key in ("lr_g", "lr_d"):
            value = getattr(self, key)
            _require(0 < value < 1, f"train.{key}", value, "use a value in (0, 1)")
        _require(0 <= self.beta1 < 1, "train.beta1", self.beta1, "use a value in [0, 1)")
        _require(0 <= self.beta2 < 1, "train.beta2", self.beta2, "use a value in [0, 1)")
        _require(self.n_disc >= 1, "train.n_disc", self.n_disc, "use at least 1")
        _require(
            self.n_disc <= MAX_N_DISC, "train.n_disc", self.n_disc, f"use at most {MAX_N_DISC}"
        )
        LOSSES.get(self.loss)
        PENALTIES.get(self.penalty)
        _require(0 < self.ema_decay < 1, "train.ema_decay", self.ema_decay, "use (0, 1)")
        for key in ("gp_weight", "r1_gamma", "fm_weight", "cr_weight", "rotation_weight"):
            value = getattr(self, key)  # NaN fails every comparison, inf the upper one
            _require(0 <= value <= MAX_WEIGHT, f"train.{key}", value, f"use 0 to {MAX_WEIGHT:g}")
        _require(
            self.checkpoint_every is None or 0 <= self.checkpoint_every <= MAX_STEPS,
            "train.checkpoint_every",
            self.checkpoint_every,
            f"use 0 (never) or a step count up to {MAX_STEPS:,}",
        )

    @property
    def penalty_weight(self) -> float:
        """The weight of the chosen penalty."""
        return {"gp": self.gp_weight, "r1": self.r1_gamma}.get(self.penalty, 0.0)


KID_MODES = ("final", "every", "off")
FINAL_REFERENCES = ("sample", "full")
# The most images one evaluation may generate: 20x the 50,000 papers use for FID. Beyond it a
# count is a typo that would fail every trial on memory (latents, images, features).
MAX_EVAL_SAMPLES = 1_000_000


@dataclass(frozen=True)
class EvalConfig:
    """How and when the generator is scored (``[eval]``)."""

    every: int = 500  # steps between intermediate evaluations; 0 = only at the end
    samples: int = 2000  # generated (and real) images per intermediate evaluation
    final_samples: int = 10000  # images for the final evaluation
    extractor: str = "classifier"  # feature extractor: classifier, inception
    batch_size: int = 500  # generation/extraction batch size
    seed: int = 0  # seed of the fixed evaluation latents: the same z for every trial of a study
    grid: bool = True  # write a sample-grid PNG at each evaluation (when an out dir is given)
    # When to compute KID (100 subsets: most of an evaluation's time): "final" (the final
    # evaluation only), "every" (every evaluation; needed when a study minimizes KID), "off".
    kid: str = "final"
    # What the final evaluation compares with: "sample", a seeded random sample of as many real
    # images as it generates (like every intermediate evaluation), or "full", the statistics of
    # the whole split: with final_samples = 50000 and extractor = "inception" that is the FID-50k
    # protocol papers report (docs/metrics.md).
    final_reference: str = "sample"

    def __post_init__(self) -> None:
        from ganhpo.metrics import EXTRACTORS

        EXTRACTORS.get(self.extractor)
        _require(self.kid in KID_MODES, "eval.kid", self.kid, f"use {', '.join(KID_MODES)}")
        _require(
            self.final_reference in FINAL_REFERENCES,
            "eval.final_reference",
            self.final_reference,
            f"use {' or '.join(FINAL_REFERENCES)}",
        )
        _require(
            0 <= self.every <= MAX_STEPS,
            "eval.every",
            self.every,
            f"use 0 (end only) or a step count up to {MAX_STEPS:,}",
        )
        for key in ("samples", "final_samples"):
            value = getattr(self, key)
            _require(
                2 <= value <= MAX_EVAL_SAMPLES,
                f"eval.{key}",
                value,
                f"use 2 to {MAX_EVAL_SAMPLES} images (papers use 50000 for FID)",
            )
        _require(
            1 <= self.batch_size <= MAX_EVAL_SAMPLES,
            "eval.batch_size",
            self.batch_size,
            f"use 1 to {MAX_EVAL_SAMPLES}",
        )
        _require_seed("eval.seed", self.seed)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one training run."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0  # every random choice of the run flows from this
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        ok = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        _require(ok, "device", self.device, "use auto, cpu, cuda or cuda:N")
        _require_seed("seed", self.seed)

    @property
    def checkpoint_interval(self) -> int:
        """Steps between checkpoints, ``train.checkpoint_every`` resolved (0 = never)."""
        every = self.train.checkpoint_every
        if every is not None:
            return every
        return self.eval.every or max(1, self.train.steps // 10)

    def replace_params(self, **params: Any) -> TrainConfig:
        """A copy with some searched values replaced (how a trial's sample is applied):
        ``[train]`` keys, ``[model]`` keys, and a user builder's own keys."""
        train_keys = {f.name for f in dataclasses.fields(TrainParams)}
        model_keys = MODEL_SEARCHABLE
        train = {k: v for k, v in params.items() if k in train_keys}
        model = {k: v for k, v in params.items() if k in model_keys}
        options = {k: v for k, v in params.items() if k not in train_keys | model_keys}
        if options and not self.model.custom:
            raise ConfigError(
                f"unknown parameter {sorted(options)[0]!r} for arch {self.model.arch!r}"
            )
        if options:
            model["options"] = tuple(sorted({**dict(self.model.options), **options}.items()))
        return dataclasses.replace(
            self,
            train=dataclasses.replace(self.train, **train) if train else self.train,
            model=dataclasses.replace(self.model, **model) if model else self.model,
        )


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain nested dicts, without None values (TOML has no null); a builder's
    own keys sit in ``[model]`` as the user wrote them."""

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    data = dataclasses.asdict(config)
    data["model"] |= dict(data["model"].pop("options"))
    return strip(data)
