"""Adversarial losses, registered by name.

Each loss is a pair of functions of the discriminator's logits: ``d_loss(real, fake)``
and ``g_loss(fake)``, both returning a scalar to minimise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ganhpo.registry import Registry

__all__ = ["LOSSES", "Loss"]


@dataclass(frozen=True)
class Loss:
    """The discriminator and generator objectives of one GAN loss."""

    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]


LOSSES: Registry[Loss] = Registry("loss")

# Non-saturating loss of Goodfellow et al. (2014): D minimises the logistic loss, G maximises
# log D(G(z)) instead of minimising log(1 - D(G(z))), which saturates early in training.
LOSSES.add(
    "ns",
    Loss(
        d_loss=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
        g_loss=lambda fake: F.softplus(-fake).mean(),
    ),
)
# Hinge loss (Lim & Ye 2017; Miyato et al. 2018).
LOSSES.add(
    "hinge",
    Loss(
        d_loss=lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(),
        g_loss=lambda fake: -fake.mean(),
    ),
)
# Wasserstein loss (Arjovsky et al. 2017); needs a Lipschitz constraint such as penalty = "gp".
LOSSES.add(
    "wasserstein",
    Loss(
        d_loss=lambda real, fake: fake.mean() - real.mean(),
        g_loss=lambda fake: -fake.mean(),
    ),
)
