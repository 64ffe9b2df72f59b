"""Generator/discriminator architectures, registered by name."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from ganhpo.errors import ConfigError
from ganhpo.registry import Registry

__all__ = ["ARCHITECTURES", "DCGANDiscriminator", "DCGANGenerator", "build_models", "count_params"]

ModelFactory = Callable[..., tuple[nn.Module, nn.Module]]
ARCHITECTURES: Registry[ModelFactory] = Registry("architecture")


def upsampling_plan(resolution: int) -> tuple[int, int]:
    """(base size, number of 2x up-samplings) for a square image of ``resolution`` pixels.

    The base is the smallest size >= 4 reached by halving: 28 -> (7, 2), 32 -> (4, 3).
    """
    if resolution < 8 or resolution % 4:
        raise ConfigError(
            f"image size {resolution} is not supported by dcgan; "
            "use a multiple of 4 that is at least 8 (set dataset.resolution)"
        )
    size, ups = resolution, 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        ups += 1
    return size, ups


class DCGANGenerator(nn.Module):
    """z -> linear -> (ConvTranspose 4x4/2, BN, ReLU)* -> ConvTranspose -> tanh."""

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int) -> None:
        super().__init__()
        base, ups = upsampling_plan(resolution)
        widths = [width * 2 ** (ups - 1 - i) for i in range(ups)]  # e.g. [64, 32]
        self.latent_dim = latent_dim
        self.base = base
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * base * base, bias=False),
            nn.BatchNorm1d(widths[0] * base * base),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, self.base, self.base)
        return self.net(x)


class DCGANDiscriminator(nn.Module):
    """(Conv 4x4/2, LeakyReLU)* -> linear logit. No batch norm, so every penalty applies."""

    def __init__(self, channels: int, resolution: int, width: int, spectral_norm: bool) -> None:
        super().__init__()
        base, downs = upsampling_plan(resolution)

        def sn(m: nn.Module) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(m) if spectral_norm else m

        layers: list[nn.Module] = []
        cin = channels
        for i in range(downs):
            cout = width * 2**i
            layers += [sn(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.net = nn.Sequential(*layers)
        self.fc = sn(nn.Linear(cin * base * base, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1)).squeeze(1)


def _init_weights(module: nn.Module) -> None:
    # DCGAN's N(0, 0.02) initialisation.
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@ARCHITECTURES.register("dcgan")
def _dcgan(
    *, latent_dim: int, channels: int, resolution: int, width: int, spectral_norm: bool
) -> tuple[nn.Module, nn.Module]:
    g = DCGANGenerator(latent_dim, channels, resolution, width)
    d = DCGANDiscriminator(channels, resolution, width, spectral_norm)
    g.apply(_init_weights)
    d.apply(_init_weights)
    return g, d


def build_models(
    arch: str,
    *,
    latent_dim: int,
    channels: int,
    resolution: int,
    width: int,
    spectral_norm: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) of a registered architecture for C x R x R images."""
    if channels not in (1, 3):
        raise ConfigError(f"images with {channels} channels are not supported; use 1 or 3")
    return ARCHITECTURES.get(arch)(
        latent_dim=latent_dim,
        channels=channels,
        resolution=resolution,
        width=width,
        spectral_norm=spectral_norm,
    )


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
