from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganhpo.errors import UnknownNameError
from ganhpo.train.losses import LOSSES
from ganhpo.train.penalties import PENALTIES


def test_registries_list_their_names() -> None:
    assert LOSSES.names() == ["hinge", "ns", "wasserstein"]
    assert PENALTIES.names() == ["gp", "none", "r1"]
    with pytest.raises(UnknownNameError, match=r"did you mean 'hinge'\?\); choose one of"):
        LOSSES.get("hinj")


def test_non_saturating_known_values() -> None:
    zero = torch.zeros(4)
    ns = LOSSES.get("ns")
    assert ns.d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert ns.g_loss(zero).item() == pytest.approx(math.log(2))
    # A confident, correct D has a small loss; G's loss is large when D rejects its samples.
    assert ns.d_loss(torch.full((4,), 10.0), torch.full((4,), -10.0)).item() < 1e-3
    assert ns.g_loss(torch.full((4,), -10.0)).item() == pytest.approx(10.0, abs=1e-3)


def test_hinge_and_wasserstein_known_values() -> None:
    hinge, wgan = LOSSES.get("hinge"), LOSSES.get("wasserstein")
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge.d_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert hinge.g_loss(fake).item() == pytest.approx(1.0)
    assert wgan.d_loss(real, fake).item() == pytest.approx(-1.0 - 1.25)
    assert wgan.g_loss(fake).item() == pytest.approx(1.0)


class Linear(nn.Module):
    """D(x) = w . x: its gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) * self.w).sum(1)


def test_penalties_closed_form() -> None:
    w = torch.tensor([3.0, 4.0, 0.0, 0.0])  # ||w|| = 5
    d = Linear(w)
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    gen = torch.Generator().manual_seed(0)
    assert PENALTIES.get("gp")(d, real, fake, 10.0, gen).item() == pytest.approx(10 * 16)
    assert PENALTIES.get("r1")(d, real, fake, 2.0, gen).item() == pytest.approx(25.0)
    assert PENALTIES.get("none")(d, real, fake, 2.0, gen).item() == 0.0


def test_penalty_gradients_reach_d() -> None:
    d = Linear(torch.tensor([3.0, 4.0, 0.0, 0.0]))
    gen = torch.Generator().manual_seed(0)
    pen = PENALTIES.get("gp")(d, torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2), 1.0, gen)
    pen.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    expected = 2 * 4 * torch.tensor([3.0, 4.0, 0.0, 0.0]) / 5
    torch.testing.assert_close(d.w.grad, expected)
