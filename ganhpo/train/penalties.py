"""Discriminator regularisers, registered by name.

A penalty is ``fn(discriminator, real, fake, weight, generator) -> scalar`` added to D's loss.
``generator`` is the run's noise RNG, so interpolation points are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ganhpo.registry import Registry

__all__ = ["PENALTIES", "Penalty", "gradient_penalty", "r1_penalty"]

Penalty = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, torch.Generator], torch.Tensor]
PENALTIES: Registry[Penalty] = Registry("penalty")


def _grad_norm_sq(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1)


@PENALTIES.register("gp")
def gradient_penalty(
    d: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float, gen: torch.Generator
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad D(x_hat)|| - 1)^2]."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=gen)
    x_hat = alpha * real + (1 - alpha) * fake.detach()
    norm = (_grad_norm_sq(d, x_hat) + 1e-12).sqrt()
    return weight * (norm - 1).pow(2).mean()


@PENALTIES.register("r1")
def r1_penalty(
    d: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float, gen: torch.Generator
) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): weight/2 * E[||grad D(x_real)||^2]."""
    return 0.5 * weight * _grad_norm_sq(d, real).mean()


@PENALTIES.register("none")
def no_penalty(
    d: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float, gen: torch.Generator
) -> torch.Tensor:
    """No regulariser."""
    return real.new_zeros(())
