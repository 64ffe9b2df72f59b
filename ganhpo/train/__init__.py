"""GAN training: models, losses, penalties, the loop and its checkpoints. No Optuna here."""

from __future__ import annotations

from ganhpo.train.checkpoint import (
    dump_checkpoint,
    load_checkpoint,
    parse_checkpoint,
    save_checkpoint,
)
from ganhpo.train.config import (
    DatasetConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    TrainParams,
    config_to_dict,
)
from ganhpo.train.images import make_grid, save_grid
from ganhpo.train.loop import (
    ADOPTABLE,
    EvalRecord,
    Progress,
    Trainer,
    TrainResult,
    check_networks,
    load_training_data,
    resolve_device,
    train,
)
from ganhpo.train.losses import LOSSES, Loss
from ganhpo.train.models import ARCHITECTURES, build_models, count_params
from ganhpo.train.penalties import PENALTIES

__all__ = [
    "ADOPTABLE",
    "ARCHITECTURES",
    "LOSSES",
    "PENALTIES",
    "DatasetConfig",
    "EvalConfig",
    "EvalRecord",
    "Loss",
    "ModelConfig",
    "Progress",
    "TrainConfig",
    "TrainParams",
    "TrainResult",
    "Trainer",
    "build_models",
    "check_networks",
    "config_to_dict",
    "count_params",
    "dump_checkpoint",
    "load_checkpoint",
    "load_training_data",
    "make_grid",
    "parse_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "save_grid",
    "train",
]
