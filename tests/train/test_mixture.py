"""MixtureGenerator: each image from one member, in the mixture's proportions, every member
fed standard normal latents, the same image for a latent in any batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganhpo.train.mixture import MixtureGenerator


class Echo(nn.Module):
    """A 'generator' whose image [2, 1, 1] is its member id and the first latent it got."""

    def __init__(self, ident: int) -> None:
        super().__init__()
        self.ident = ident

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        ident = torch.full_like(z[:, :1], float(self.ident))
        return torch.stack([ident, z[:, :1]], dim=1)[..., None]  # [N, 2, 1, 1]


def draw(mixture: MixtureGenerator, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n, mixture.latent_dim, generator=torch.Generator().manual_seed(seed))
    out = mixture(z)
    return out[:, 0, 0, 0].round().long(), out[:, 1, 0, 0]


def test_members_draw_their_share_and_see_standard_normal_latents() -> None:
    weights = [0.2, 0.0, 0.5, 0.3]
    mixture = MixtureGenerator([Echo(i) for i in range(4)], weights, [4, 4, 4, 4])
    n = 40_000
    who, z0 = draw(mixture, n)
    counts = torch.bincount(who, minlength=4)
    assert counts[1] == 0  # weight 0: never drawn
    for i, w in enumerate(weights):
        if w > 0:  # within 5 binomial stds
            assert abs(counts[i] / n - w) < 5 * math.sqrt(w * (1 - w) / n), (i, counts)
    for i in (0, 2, 3):  # each member's z_0 is N(0, 1), though chosen by z_0
        mine = z0[who == i]
        assert abs(float(mine.mean())) < 5 / math.sqrt(len(mine))
        assert abs(float(mine.std()) - 1) < 0.03
        # Not a band of z_0: its quartiles are the normal's (+-0.674).
        quartiles = torch.quantile(mine, torch.tensor([0.25, 0.75]))
        assert torch.allclose(quartiles, torch.tensor([-0.674, 0.674]), atol=0.04), quartiles


def test_the_same_latent_gives_the_same_image_in_any_batch() -> None:
    mixture = MixtureGenerator([Echo(0), Echo(1)], [1.0, 1.0], [3, 3])
    z = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1))
    whole = mixture(z)
    parts = torch.cat([mixture(z[i : i + 7]) for i in range(0, 1000, 7)])
    assert torch.equal(whole, parts)


def test_members_with_fewer_latent_dimensions_read_the_first() -> None:
    class Width(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.full((len(z), 1, 1, 1), float(z.shape[1]))

    mixture = MixtureGenerator([Width(), Width()], [0.5, 0.5], [2, 5])
    assert mixture.latent_dim == 5
    out = mixture(torch.randn(500, 5, generator=torch.Generator().manual_seed(2)))
    assert set(out.flatten().tolist()) == {2.0, 5.0}
    with pytest.raises(ValueError, match=r"latents \[N, 5\]"):
        mixture(torch.randn(3, 4))


@pytest.mark.parametrize("weights", [[1.0, -0.1], [0.0, 0.0], [1.0, math.nan], [1.0]])
def test_bad_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError):
        MixtureGenerator([Echo(0), Echo(1)], weights, [2, 2])
