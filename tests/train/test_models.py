from __future__ import annotations

import pytest
import torch

from ganhpo.errors import ConfigError, UnknownNameError
from ganhpo.train.models import ARCHITECTURES, build_models, count_params, upsampling_plan


@pytest.mark.parametrize(
    ("resolution", "plan"), [(8, (4, 1)), (28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (12, (6, 1))]
)
def test_upsampling_plan(resolution: int, plan: tuple[int, int]) -> None:
    assert upsampling_plan(resolution) == plan


@pytest.mark.parametrize("resolution", [4, 6, 30, 33])
def test_impossible_resolution_is_a_config_error(resolution: int) -> None:
    with pytest.raises(ConfigError, match="multiple of 4"):
        upsampling_plan(resolution)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [28, 32, 64])
def test_dcgan_shapes_and_range(channels: int, resolution: int) -> None:
    g, d = build_models("dcgan", latent_dim=16, channels=channels, resolution=resolution, width=8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [28, 32, 64])
def test_resnet_shapes_range_and_spectral_norm(channels: int, resolution: int) -> None:
    g, d = build_models("resnet", latent_dim=16, channels=channels, resolution=resolution, width=8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)
    blocks = [m for m in g.modules() if type(m).__name__ == "_UpBlock"]
    assert len(blocks) == upsampling_plan(resolution)[1]  # one residual up-sampling per 2x
    layers = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m) for m in layers)


def test_width_scales_parameters() -> None:
    small, _ = build_models("dcgan", latent_dim=16, channels=1, resolution=28, width=8)
    big, _ = build_models("dcgan", latent_dim=16, channels=1, resolution=28, width=16)
    assert count_params(big) > 2 * count_params(small)


def test_spectral_norm_is_applied_to_every_d_layer() -> None:
    _, d = build_models(
        "dcgan", latent_dim=8, channels=1, resolution=28, width=8, spectral_norm=True
    )
    layers = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m) for m in layers)


def test_unknown_architecture_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="choose one of: dcgan, resnet"):
        build_models("dcgann", latent_dim=8, channels=1, resolution=28, width=8)
    assert "dcgan" in ARCHITECTURES


def test_bad_channel_count() -> None:
    with pytest.raises(ConfigError, match="use 1 or 3"):
        build_models("dcgan", latent_dim=8, channels=2, resolution=28, width=8)
