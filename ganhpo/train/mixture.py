"""A mixture of generators: each image drawn from one member, member i with probability w_i.

The member is chosen by the latent itself, so the mixture is an ordinary generator (fixed
latents give fixed images, in any batching) and each member still sees standard normal latents:
with ``u = Phi(z_0)`` (uniform on (0, 1)), member ``i`` draws the images whose ``u`` falls in its
interval ``[c_{i-1}, c_i)`` of the cumulative weights, and gets ``z_0`` replaced by
``Phi^-1((u - c_{i-1}) / w_i)``, which is again standard normal and independent of the choice.
Members that take fewer latent dimensions than the mixture (``latent_dim``, the largest of
theirs) read the first ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MixtureGenerator"]

# u and u' are kept this far inside (0, 1): Phi^-1 of 0 or 1 is infinite.
_EDGE = 1e-12


class MixtureGenerator(nn.Module):
    """Images from ``members`` in proportions ``weights`` (non-negative, normalized here);
    member i reads the first ``latent_dims[i]`` coordinates of z [N, max(latent_dims)]."""

    weights: torch.Tensor

    def __init__(
        self, members: Sequence[nn.Module], weights: Sequence[float], latent_dims: Sequence[int]
    ) -> None:
        super().__init__()
        if not members or len(members) != len(weights) or len(members) != len(latent_dims):
            raise ValueError("a mixture needs one weight and one latent size per member")
        w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"mixture weights must be non-negative and not all 0, got {weights}")
        self.members = nn.ModuleList(members)
        self.latent_dims = [int(d) for d in latent_dims]
        self.latent_dim = max(self.latent_dims)
        self.register_buffer("weights", w / w.sum())

    def member_of(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the member that draws each latent [N], the member's z_0 for it [N])."""
        u = torch.special.ndtr(z[:, 0].to(torch.float64)).clamp(_EDGE, 1 - _EDGE)
        upper = torch.cumsum(self.weights.to(u.device), 0)
        upper[-1] = 1.0  # rounding must not leave a sliver past the last member
        index = torch.searchsorted(upper, u, right=True).clamp(max=len(self.members) - 1)
        # A member of weight 0 has an empty interval: searchsorted never lands in it.
        lower = torch.cat([upper.new_zeros(1), upper[:-1]])[index]
        width = (upper[index] - lower).clamp_min(_EDGE)
        fresh = torch.special.ndtri(((u - lower) / width).clamp(_EDGE, 1 - _EDGE))
        return index, fresh.to(z.dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] < self.latent_dim:
            raise ValueError(f"a mixture takes latents [N, {self.latent_dim}], got {list(z.shape)}")
        index, fresh = self.member_of(z)
        out: torch.Tensor | None = None
        for i, (member, dim) in enumerate(zip(self.members, self.latent_dims, strict=True)):
            rows = (index == i).nonzero(as_tuple=True)[0]
            if len(rows) == 0:
                continue
            zi = torch.cat([fresh[rows, None], z[rows, 1:dim]], dim=1)
            images = member(zi)
            if out is None:
                out = images.new_empty((len(z), *images.shape[1:]))
            out[rows] = images
        assert out is not None  # every latent has a member
        return out
