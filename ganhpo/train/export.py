"""A run's final generator as a self-describing file, and the one call that loads it back.

A trial's ``generator.pt`` (in the study's artifact store) and ``ganhpo train --out DIR``'s
``DIR/generator.pt`` hold everything needed to rebuild the network without the study or the
spec that made it::

    {"format": 2, "kind": "generator",
     "config": the run's full TrainConfig as a dict (config_to_dict),
     "image_shape": [C, H, W], "step": the training step it was saved at,
     "ema": whether "G" is the EMA copy of the generator,
     "G": the state dict of the generator the run evaluated (its EMA copy when it kept one),
     "G_train": the state dict of the trained generator, when "G" is its EMA copy}

:func:`load_generator` rebuilds it (a registered architecture, or the user's own builder
``"package.module:function"``, which must be importable here) in eval mode. It also reads the
files written before this format (``{"config": dataclasses.asdict(config), "G": ...}``:
format 1, the evaluated generator only) and full training checkpoints (:mod:`checkpoint`).
Nothing is unpickled but tensors and plain values (``torch.load(weights_only=True)``).

An ensemble (``ganhpo ensemble``) is a generator file too, of its own kind::

    {"format": 1, "kind": "ensemble",
     "config": the first member's config, latent_dim the largest of the members',
     "image_shape": [C, H, W],
     "members": [{"config", "image_shape", "step", "ema", "G"} of each member's generator],
     "weights": [w_1, ...], "info": what made it (study, trials, how the weights were chosen)}

and builds into a :class:`ganhpo.train.mixture.MixtureGenerator`.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ganhpo._files import atomic_write_bytes
from ganhpo.errors import CheckpointError, GanhpoError
from ganhpo.train.config import TrainConfig, config_to_dict

if TYPE_CHECKING:
    from ganhpo.train.loop import Trainer

__all__ = [
    "ENSEMBLE_FORMAT",
    "GENERATOR_FORMAT",
    "GeneratorFile",
    "dump_ensemble",
    "dump_generator",
    "load_generator",
    "read_generator",
    "save_generator",
]

# 2: self-describing (config, image shape, step, both generators when the run kept an EMA).
# 1: {"config": dataclasses.asdict(config), "G": state dict}, with no "format" key.
GENERATOR_FORMAT = 2
_KIND = "generator"
ENSEMBLE_FORMAT = 1
_ENSEMBLE_KIND = "ensemble"

Source = str | Path | bytes


@dataclass(frozen=True, eq=False)
class GeneratorFile:
    """What a generator file (or a training checkpoint) holds, read but not yet built.

    ``weights`` are those of the generator the run evaluated: its EMA copy when it trained one
    (``ema``), else the trained generator. ``train_weights`` are the trained generator's when
    ``weights`` are the EMA copy and the file kept both (format 2, checkpoints). ``step`` and
    ``image_shape`` are None when the file did not record them (format 1).

    An ensemble's file has its ``members`` (each a GeneratorFile) and their ``mixture``
    weights, and no weights of its own.
    """

    config: TrainConfig
    weights: dict[str, torch.Tensor]
    train_weights: dict[str, torch.Tensor] | None
    ema: bool
    step: int | None
    image_shape: tuple[int, int, int] | None
    format: int
    source: str
    members: tuple[GeneratorFile, ...] = ()
    mixture: tuple[float, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        """Whether this is an ensemble of generators (``ganhpo ensemble``)."""
        return bool(self.members)

    def select(self, ema: bool | None = None) -> dict[str, torch.Tensor]:
        """The weights of the EMA generator (``ema=True``), of the trained one (False), or of
        the one the run evaluated (None)."""
        if ema is None or ema == self.ema:
            return self.weights
        if ema:
            raise CheckpointError(
                f"{self.source} holds no EMA generator (the run trained without train.ema); "
                "use the generator it trained (drop --ema)"
            )
        if self.train_weights is None:
            raise CheckpointError(
                f"{self.source} holds only the EMA generator (written before ganhpo kept the "
                "trained one beside it); use the EMA generator (drop --no-ema)"
            )
        return self.train_weights

    def shape(self, data_dir: str | Path | None = None) -> tuple[int, int, int]:
        """The images' (C, H, W): recorded in the file, else read from the run's dataset."""
        if self.image_shape is not None:
            return self.image_shape
        from ganhpo.train.loop import load_training_data

        try:
            data = load_training_data(self.config.dataset, data_dir, limit=2, download=False)
        except GanhpoError as e:
            raise CheckpointError(
                f"{self.source} does not record its image size (written before ganhpo did) and "
                f"its dataset cannot tell it here ({e}); pass --data-dir with the dataset"
            ) from e
        c, h, w = data.shape
        return c, h, w

    def build(
        self,
        *,
        device: str | torch.device = "cpu",
        ema: bool | None = None,
        data_dir: str | Path | None = None,
    ) -> nn.Module:
        """The generator, rebuilt from the configuration, with the weights :meth:`select`
        picks, in eval mode on ``device``."""
        from ganhpo.train.loop import _networks, resolve_device

        target = resolve_device(device) if isinstance(device, str) else device
        if self.members:
            return self._build_mixture(target, ema, data_dir)
        weights = self.select(ema)
        generator, _ = _networks(self.config, self.shape(data_dir))
        try:
            generator.load_state_dict(weights)
        except RuntimeError as e:
            # torch's message: a header line, then one line per mismatch; the first says most.
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            detail = (lines[1] if len(lines) > 1 else lines[0]).rstrip(".")[:200]
            raise CheckpointError(
                f"{self.source}: its weights do not fit the generator model.arch = "
                f"{self.config.model.arch!r} builds here ({detail}); build it with the code "
                "that trained it"
            ) from e
        return generator.to(target).eval()

    def _build_mixture(
        self, target: torch.device, ema: bool | None, data_dir: str | Path | None
    ) -> nn.Module:
        from ganhpo.train.mixture import MixtureGenerator

        if ema is not None:
            raise CheckpointError(
                f"{self.source} is an ensemble: it keeps the generator each member was scored "
                "on, so there is no EMA or trained copy to choose; drop --ema/--no-ema"
            )
        built = [m.build(device=target, data_dir=data_dir) for m in self.members]
        dims = [m.config.model.latent_dim for m in self.members]
        return MixtureGenerator(built, self.mixture, dims).to(target).eval()


def _state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def generator_state(trainer: Trainer) -> dict[str, Any]:
    """The generator file's contents for a trainer's current generator (see the module)."""
    c, h, w = trainer.data.shape
    state: dict[str, Any] = {
        "format": GENERATOR_FORMAT,
        "kind": _KIND,
        "config": config_to_dict(trainer.config),
        "image_shape": [c, h, w],
        "step": trainer.step,
        "ema": trainer.G_ema is not None,
        "G": _state_of(trainer.generator),
    }
    if trainer.G_ema is not None:
        state["G_train"] = _state_of(trainer.G)
    return state


def dump_generator(trainer: Trainer) -> bytes:
    """The serialized generator file of a trainer's current generator."""
    buffer = io.BytesIO()
    torch.save(generator_state(trainer), buffer)
    return buffer.getvalue()


def save_generator(trainer: Trainer, path: str | Path) -> Path:
    """Write the generator file of a trainer's current generator atomically."""
    path = Path(path)
    atomic_write_bytes(path, dump_generator(trainer))
    return path


def ensemble_state(
    members: Sequence[GeneratorFile], weights: Sequence[float], info: dict[str, Any]
) -> dict[str, Any]:
    """The file contents of an ensemble of ``members`` (generator files that record their
    image shape, all the same) mixed in proportions ``weights`` (see the module)."""
    if not members or len(members) != len(weights):
        raise ValueError("an ensemble needs members and one weight for each")
    shapes = {m.image_shape for m in members}
    if None in shapes or len(shapes) != 1:
        raise CheckpointError(
            "the members of an ensemble must make images of one recorded size, got "
            + ", ".join(str(s) for s in sorted(shapes, key=str))
        )
    if any(m.members for m in members):
        raise CheckpointError("an ensemble's members must be generators, not ensembles")
    (shape,) = shapes
    first = members[0].config
    widest = max(m.config.model.latent_dim for m in members)
    config = dataclasses.replace(first, model=dataclasses.replace(first.model, latent_dim=widest))
    return {
        "format": ENSEMBLE_FORMAT,
        "kind": _ENSEMBLE_KIND,
        "config": config_to_dict(config),
        "image_shape": list(shape or ()),
        "members": [
            {
                "config": config_to_dict(m.config),
                "image_shape": list(m.image_shape or ()),
                "step": m.step,
                "ema": m.ema,
                "G": m.weights,
            }
            for m in members
        ],
        "weights": [float(w) for w in weights],
        "info": info,
    }


def dump_ensemble(
    members: Sequence[GeneratorFile], weights: Sequence[float], info: dict[str, Any]
) -> bytes:
    """The serialized file of an ensemble (:func:`ensemble_state`)."""
    buffer = io.BytesIO()
    torch.save(ensemble_state(members, weights, info), buffer)
    return buffer.getvalue()


def _read_ensemble(state: dict[str, Any], what: str) -> GeneratorFile:
    if state.get("format") != ENSEMBLE_FORMAT:
        raise CheckpointError(
            f"{what} is an ensemble file of format {state.get('format')!r}, newer than this "
            f"ganhpo reads ({ENSEMBLE_FORMAT}); upgrade ganhpo"
        )
    c, h, w = (int(v) for v in state["image_shape"])
    members = tuple(
        GeneratorFile(
            _config(m["config"], f"{what}, member {i + 1}"),
            m["G"],
            None,
            bool(m["ema"]),
            None if m.get("step") is None else int(m["step"]),
            (c, h, w),
            GENERATOR_FORMAT,
            f"{what}, member {i + 1}",
        )
        for i, m in enumerate(state["members"])
    )
    return GeneratorFile(
        _config(state["config"], what), {}, None, False, None, (c, h, w), ENSEMBLE_FORMAT,
        what, members, tuple(float(x) for x in state["weights"]), dict(state.get("info") or {}),
    )  # fmt: skip


def read_generator(source: Source, *, name: str | None = None) -> GeneratorFile:
    """Read a generator file (format 2 or 1) or a full training checkpoint: a path, or its
    bytes (``name`` then says what they are in messages). Raises CheckpointError when it is
    none of those or cannot be read."""
    if isinstance(source, bytes):
        what, data = name or "the generator file", source
    else:
        path = Path(source)
        what = name or str(path)
        if not path.is_file():
            raise CheckpointError(f"{what} does not exist; give a generator.pt or checkpoint.pt")
        data = path.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{what} cannot be read ({type(e).__name__}: {str(e).strip().splitlines()[0]}); it "
            "is corrupt or not a ganhpo generator"
        ) from e
    if isinstance(state, dict) and state.get("kind") == _ENSEMBLE_KIND:
        return _read_ensemble(state, what)
    if not isinstance(state, dict) or "config" not in state or "G" not in state:
        raise CheckpointError(f"{what} is not a ganhpo generator file or training checkpoint")
    config = _config(state["config"], what)
    if state.get("kind") == _KIND:
        if state.get("format") != GENERATOR_FORMAT:
            raise CheckpointError(
                f"{what} is a generator file of format {state.get('format')!r}, newer than this "
                f"ganhpo reads ({GENERATOR_FORMAT}); upgrade ganhpo"
            )
        c, h, w = (int(v) for v in state["image_shape"])
        return GeneratorFile(
            config, state["G"], state.get("G_train"), bool(state["ema"]), int(state["step"]),
            (c, h, w), GENERATOR_FORMAT, what,
        )  # fmt: skip
    if "opt_g" in state:  # a full training checkpoint: both generators, no image shape
        ema = state.get("G_ema") is not None
        weights, trained = (state["G_ema"], state["G"]) if ema else (state["G"], None)
        return GeneratorFile(
            config, weights, trained, ema, int(state["step"]), None, 0, what
        )  # format 0: not a generator file
    # Format 1: the evaluated generator only (its EMA copy when the run kept one).
    return GeneratorFile(config, state["G"], None, config.train.ema, None, None, 1, what)


def load_generator(
    source: Source,
    *,
    device: str | torch.device = "cpu",
    ema: bool | None = None,
    data_dir: str | Path | None = None,
) -> nn.Module:
    """The generator in a ganhpo generator file, rebuilt, in eval mode, on ``device``.

    ``source`` is a path or the file's bytes: a trial's ``generator.pt`` (from the study's
    artifact store, or downloaded from optuna-dashboard), ``ganhpo train --out DIR``'s
    ``DIR/generator.pt``, or a training checkpoint. By default the generator the run was
    scored on (its EMA copy when it trained one); ``ema=False`` the trained one, ``ema=True``
    the EMA copy. A user's network (``model.arch = "package.module:function"``) must be
    importable here. ``data_dir`` is needed only for files that do not record their image size
    (written before ganhpo did), to read it from the dataset. The result maps latents
    ``z [N, config.model.latent_dim]`` to images [N, C, H, W] in [-1, 1]::

        import ganhpo, torch
        g = ganhpo.load_generator("generator.pt")
        images = g(torch.randn(16, g.latent_dim))  # DCGAN/ResNet generators have latent_dim
    """
    return read_generator(source).build(device=device, ema=ema, data_dir=data_dir)


def _config(data: Any, what: str) -> TrainConfig:
    """The TrainConfig of a file's ``config``: config_to_dict's form, or format 1's
    ``dataclasses.asdict`` (a builder's keys in ``model.options``, None values kept)."""
    from ganhpo.spec import from_dict

    if not isinstance(data, dict):
        raise CheckpointError(f"{what} holds no configuration dict; it is not a ganhpo generator")

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    data = strip(dict(data))
    model = dict(data.get("model", {}))
    options = model.pop("options", ())
    model |= {str(k): v for k, v in options}
    data["model"] = model
    try:
        return from_dict(TrainConfig, data)
    except GanhpoError as e:
        raise CheckpointError(
            f"{what}: its configuration is not one this ganhpo reads ({e}); read it with the "
            "ganhpo version that wrote it"
        ) from e
