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


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize(("channels", "resolution"), [(1, 28), (3, 32)])
def test_depth_adds_blocks_at_every_resolution(arch: str, channels: int, resolution: int) -> None:
    """``model.depth`` extra blocks per resolution: the same image shapes, more layers; depth 0
    is the network of before (same parameters, so older checkpoints load)."""
    kw = {"latent_dim": 16, "channels": channels, "resolution": resolution, "width": 8}
    ups = upsampling_plan(resolution)[1]
    sizes = {}
    for depth in (0, 1, 2):
        torch.manual_seed(0)
        g, d = build_models(arch, depth=depth, **kw)
        x = g(torch.randn(3, 16))
        assert x.shape == (3, channels, resolution, resolution) and d(x).shape == (3,)
        convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
        d_convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
        sizes[depth] = (len(convs), len(d_convs), count_params(g), count_params(d))
    torch.manual_seed(0)
    g0, d0 = build_models(arch, **kw)  # no depth given
    assert (count_params(g0), count_params(d0)) == sizes[0][2:]
    if arch == "dcgan":  # one 3x3 conv per extra block: at the base and each up-sampled size
        assert sizes[1][0] - sizes[0][0] == ups and sizes[2][0] - sizes[0][0] == 2 * ups
        assert sizes[1][1] - sizes[0][1] == ups
    else:  # a residual block of 2 convs per up-/down-sampling block, identity shortcut
        assert sizes[1][0] - sizes[0][0] == 2 * ups and sizes[1][1] - sizes[0][1] == 2 * ups
        d_blocks = [m for m in d.modules() if type(m).__name__ == "_DownBlock"]
        assert len(d_blocks) == 3 * ups  # depth 2: 1 + 2 per resolution
    assert sizes[0][2] < sizes[1][2] < sizes[2][2] and sizes[0][3] < sizes[1][3] < sizes[2][3]


def test_depth_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model.depth = 9 is invalid; use 0 to 8"):
        build_models("dcgan", latent_dim=8, channels=1, resolution=28, width=8, depth=9)
