"""Generator/discriminator architectures, registered by name."""

from __future__ import annotations

import importlib
import inspect
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ganhpo.errors import ConfigError, ModelError, ModelImportError
from ganhpo.registry import Registry, closest

__all__ = [
    "ARCHITECTURES",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "build_models",
    "build_user_models",
    "check_models",
    "count_params",
    "import_builder",
]

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


def _check_depth(depth: int) -> None:
    if not 0 <= depth <= MAX_DEPTH:
        raise ConfigError(f"model.depth = {depth} is invalid; use 0 to {MAX_DEPTH}")


MAX_DEPTH = 8  # extra blocks per resolution


class DCGANGenerator(nn.Module):
    """z -> linear -> (ConvTranspose 4x4/2, BN, ReLU)* -> ConvTranspose -> tanh; ``depth``
    extra (conv 3x3, BN, ReLU) layers at each hidden resolution."""

    def __init__(
        self, latent_dim: int, channels: int, resolution: int, width: int, depth: int = 0
    ) -> None:
        super().__init__()
        _check_depth(depth)
        base, ups = upsampling_plan(resolution)
        widths = [width * 2 ** (ups - 1 - i) for i in range(ups)]  # e.g. [64, 32]
        self.latent_dim = latent_dim
        self.base = base
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * base * base, bias=False),
            nn.BatchNorm1d(widths[0] * base * base),
            nn.ReLU(inplace=True),
        )

        def extra(c: int) -> list[nn.Module]:
            return [
                m
                for _ in range(depth)
                for m in (nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True))
            ]

        layers: list[nn.Module] = extra(widths[0])
        for cin, cout in itertools.pairwise(widths):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                *extra(cout),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, self.base, self.base)
        return self.net(x)


class DCGANDiscriminator(nn.Module):
    """(Conv 4x4/2, LeakyReLU)* -> linear logit, with ``depth`` extra (conv 3x3, LeakyReLU)
    layers after each down-sampling. No batch norm, so every penalty applies."""

    def __init__(
        self,
        channels: int,
        resolution: int,
        width: int,
        spectral_norm: bool,
        rotation_head: bool = False,
        depth: int = 0,
    ) -> None:
        super().__init__()
        _check_depth(depth)
        base, downs = upsampling_plan(resolution)

        def sn(m: nn.Module) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(m) if spectral_norm else m

        layers: list[nn.Module] = []
        cin = channels
        for i in range(downs):
            cout = width * 2**i
            layers += [sn(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            for _ in range(depth):
                layers += [sn(nn.Conv2d(cout, cout, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.net = nn.Sequential(*layers)
        self.fc = sn(nn.Linear(cin * base * base, 1))
        # SS-GAN's head: which of 4 rotations an image shows, from the same features.
        self.rotation = nn.Linear(cin * base * base, 4) if rotation_head else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the logit is read from, [N, F]."""
        return self.net(x).flatten(1)

    def logit(self, h: torch.Tensor) -> torch.Tensor:
        """One logit per image from :meth:`features`."""
        return self.fc(h).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(x))


class _UpBlock(nn.Module):
    """BN, ReLU, 2x nearest up-sampling, conv 3x3, BN, ReLU, conv 3x3; shortcut: up, conv 1x1.
    Without ``up``, a block at the same resolution (identity shortcut): ``model.depth``."""

    def __init__(self, cin: int, cout: int, *, up: bool = True) -> None:
        super().__init__()
        upsample: list[nn.Module] = [nn.Upsample(scale_factor=2)] if up else []
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            *upsample,
            nn.Conv2d(cin, cout, 3, 1, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1),
        )
        self.shortcut: nn.Module = (
            nn.Sequential(*upsample, nn.Conv2d(cin, cout, 1))
            if up or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class _DownBlock(nn.Module):
    """(ReLU,) conv 3x3, ReLU, conv 3x3, 2x average pooling; shortcut: conv 1x1 and pooling.

    The first block of D sees images: no ReLU before its first convolution, and its shortcut
    pools before the 1x1 convolution (SNGAN's "optimized" block). ``sn`` wraps every layer in
    spectral normalisation. Without ``down``, a block at the same resolution with an identity
    shortcut (SNGAN's last blocks; ``model.depth``).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        first: bool,
        sn: Callable[[nn.Module], nn.Module],
        down: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [] if first else [nn.ReLU()]
        layers += [sn(nn.Conv2d(cin, cout, 3, 1, 1)), nn.ReLU(), sn(nn.Conv2d(cout, cout, 3, 1, 1))]
        if down:
            layers.append(nn.AvgPool2d(2))
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module
        if not down and cin == cout:
            self.shortcut = nn.Identity()
        elif not down:
            self.shortcut = sn(nn.Conv2d(cin, cout, 1))
        else:
            conv = sn(nn.Conv2d(cin, cout, 1))
            self.shortcut = (
                nn.Sequential(nn.AvgPool2d(2), conv)
                if first
                else nn.Sequential(conv, nn.AvgPool2d(2))
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ResNetGenerator(nn.Module):
    """SNGAN's ResNet generator (Miyato et al. 2018; compare_gan's ``resnet_cifar``): z ->
    linear -> residual up-sampling blocks (each followed by ``depth`` residual blocks at its
    resolution) -> BN, ReLU, conv 3x3 -> tanh."""

    def __init__(
        self, latent_dim: int, channels: int, resolution: int, width: int, depth: int = 0
    ) -> None:
        super().__init__()
        _check_depth(depth)
        base, ups = upsampling_plan(resolution)
        widths = [width * 2 ** (ups - 1 - i) for i in range(ups)] + [width]
        self.latent_dim = latent_dim
        self.base = base
        self.fc = nn.Linear(latent_dim, widths[0] * base * base)
        self.blocks = nn.Sequential(
            *(
                block
                for a, b in itertools.pairwise(widths)
                for block in (_UpBlock(a, b), *(_UpBlock(b, b, up=False) for _ in range(depth)))
            )
        )
        self.out = nn.Sequential(
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(),
            nn.Conv2d(widths[-1], channels, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, self.base, self.base)
        return self.out(self.blocks(x))


class ResNetDiscriminator(nn.Module):
    """SNGAN's ResNet discriminator: residual down-sampling blocks with spectral normalisation,
    ReLU, global sum pooling, a linear logit. Spectral normalisation is part of the design
    (model.spectral_norm does not turn it off). ``depth`` residual blocks follow each
    down-sampling one, at its resolution."""

    def __init__(
        self,
        channels: int,
        resolution: int,
        width: int,
        rotation_head: bool = False,
        depth: int = 0,
    ) -> None:
        super().__init__()
        _check_depth(depth)
        _, downs = upsampling_plan(resolution)
        sn = nn.utils.parametrizations.spectral_norm
        widths = [channels] + [width * 2**i for i in range(downs)]
        self.blocks = nn.Sequential(
            *(
                block
                for i, (a, b) in enumerate(itertools.pairwise(widths))
                for block in (
                    _DownBlock(a, b, first=i == 0, sn=sn),
                    *(_DownBlock(b, b, first=False, sn=sn, down=False) for _ in range(depth)),
                )
            )
        )
        self.fc = sn(nn.Linear(widths[-1], 1))
        self.rotation = sn(nn.Linear(widths[-1], 4)) if rotation_head else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU and global sum pooling of the last block, [N, F]."""
        return torch.relu(self.blocks(x)).sum(dim=(2, 3))

    def logit(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(x))


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
    *,
    latent_dim: int,
    channels: int,
    resolution: int,
    width: int,
    spectral_norm: bool,
    width_g: int | None = None,
    width_d: int | None = None,
    rotation_head: bool = False,
    depth: int = 0,
) -> tuple[nn.Module, nn.Module]:
    g = DCGANGenerator(latent_dim, channels, resolution, width_g or width, depth)
    d = DCGANDiscriminator(
        channels, resolution, width_d or width, spectral_norm, rotation_head, depth
    )
    g.apply(_init_weights)
    d.apply(_init_weights)
    return g, d


@ARCHITECTURES.register("resnet")
def _resnet(
    *,
    latent_dim: int,
    channels: int,
    resolution: int,
    width: int,
    spectral_norm: bool,
    width_g: int | None = None,
    width_d: int | None = None,
    rotation_head: bool = False,
    depth: int = 0,
) -> tuple[nn.Module, nn.Module]:
    del spectral_norm  # always on in this D
    g = ResNetGenerator(latent_dim, channels, resolution, width_g or width, depth)
    d = ResNetDiscriminator(channels, resolution, width_d or width, rotation_head, depth)
    return g, d


def build_models(
    arch: str,
    *,
    latent_dim: int,
    channels: int,
    resolution: int,
    width: int,
    spectral_norm: bool = False,
    width_g: int | None = None,
    width_d: int | None = None,
    options: Mapping[str, Any] | None = None,
    rotation_head: bool = False,
    depth: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for C x R x R images: a registered architecture, or a user's
    builder named ``"package.module:function"`` (see :func:`build_user_models`).
    ``rotation_head`` gives a registered D the 4-way rotation classifier of SS-GAN."""
    if channels not in (1, 3):
        raise ConfigError(f"images with {channels} channels are not supported; use 1 or 3")
    if ":" in arch:
        keys = {
            "latent_dim": latent_dim,
            "width": width,
            "spectral_norm": spectral_norm,
            "width_g": width_g,
            "width_d": width_d,
            "depth": depth,
        }
        if rotation_head:
            raise ConfigError(
                "train.rotation needs a discriminator with ganhpo's rotation head; it is not "
                f"available with model.arch = {arch!r}: use dcgan or resnet, or drop it"
            )
        return build_user_models(arch, (channels, resolution, resolution), keys, options or {})
    extra = {"rotation_head": True} if rotation_head else {}
    return ARCHITECTURES.get(arch)(
        latent_dim=latent_dim,
        channels=channels,
        resolution=resolution,
        width=width,
        width_g=width_g,
        width_d=width_d,
        spectral_norm=spectral_norm,
        depth=depth,
        **extra,
    )


def import_builder(arch: str) -> Callable[..., Any]:
    """The function ``"package.module:function"`` names. Raises ModelImportError (the module is
    not importable here) or ModelError (no such function), each in one line with the fix."""
    module_name, _, function = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own code failing
        raise ModelImportError(
            f"model.arch = {arch!r}: cannot import {module_name} ({type(e).__name__}: "
            f"{_first_line(e)}); install the package that provides it on this machine (every "
            "worker imports it), or fix the module"
        ) from e
    builder = getattr(module, function, None)
    if not callable(builder):
        names = [n for n in vars(module) if callable(vars(module)[n]) and not n.startswith("_")]
        hint = closest(function, names)
        raise ModelError(
            f"model.arch = {arch!r}: {module_name} has no function {function!r}"
            + (f"; did you mean {hint!r}?" if hint else "")
        )
    return builder  # type: ignore[no-any-return]


def build_user_models(
    arch: str,
    image_shape: tuple[int, int, int],
    keys: Mapping[str, Any],
    options: Mapping[str, Any],
) -> tuple[nn.Module, nn.Module]:
    """A user's (generator, discriminator) from ``builder(image_shape, **kwargs)``.

    The builder receives the image shape (C, H, W) and ``latent_dim``, the builder's own
    ``[model]`` keys (fixed or searched), and those of ``width``, ``width_g``, ``width_d``,
    ``spectral_norm`` and ``depth`` that its signature names (or all of them, given
    ``**kwargs``). It returns (G, D): G maps z [N, latent_dim] to images [N, C, H, W] in
    [-1, 1] (tanh), D maps images to one logit per image ([N] or [N, 1]). Raises ModelError in
    one line when it fails or returns anything else.
    """
    builder = import_builder(arch)
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {"latent_dim": keys["latent_dim"]}
    kwargs |= {
        k: v
        for k, v in keys.items()
        if k != "latent_dim" and v is not None and (takes_any or k in parameters)
    }
    kwargs |= dict(options)
    try:
        built = builder(image_shape, **kwargs)
    except Exception as e:  # the user's code: any failure is reported in one line
        raise ModelError(
            f"model.arch = {arch!r} raised {type(e).__name__}: {_first_line(e)} when called "
            f"with image shape {image_shape} and {_short(kwargs)}; fix the builder or the keys"
        ) from e
    if (
        not isinstance(built, tuple | list)
        or len(built) != 2
        or not all(isinstance(m, nn.Module) for m in built)
    ):
        raise ModelError(
            f"model.arch = {arch!r} returned {type(built).__name__}; it must return "
            "(generator, discriminator), two torch.nn.Module"
        )
    g, d = built
    return g, d


def check_models(
    g: nn.Module, d: nn.Module, *, latent_dim: int, image_shape: tuple[int, int, int], arch: str
) -> None:
    """Run G and D once on a batch of 2, in eval mode, without gradients: G must return images
    of ``image_shape``, D one logit per image. Raises ModelError in one line naming the
    mismatch."""
    was = (g.training, d.training)
    g.eval()
    d.eval()
    try:
        with torch.no_grad():
            try:
                images = g(torch.zeros(2, latent_dim))
            except Exception as e:
                raise ModelError(
                    f"model.arch = {arch!r}: the generator fails on z of shape (2, {latent_dim}) "
                    f"({type(e).__name__}: {_first_line(e)}); it must take z [N, latent_dim]"
                ) from e
            if not isinstance(images, torch.Tensor) or tuple(images.shape) != (2, *image_shape):
                got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
                raise ModelError(
                    f"model.arch = {arch!r}: the generator returns {got} for 2 latents; the data "
                    f"needs images (2, {', '.join(map(str, image_shape))}) in [-1, 1]"
                )
            try:
                logits = d(images)
            except Exception as e:
                raise ModelError(
                    f"model.arch = {arch!r}: the discriminator fails on images of shape "
                    f"{tuple(images.shape)} ({type(e).__name__}: {_first_line(e)})"
                ) from e
            if not isinstance(logits, torch.Tensor) or logits.numel() != 2 or logits.dim() > 2:
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
                raise ModelError(
                    f"model.arch = {arch!r}: the discriminator returns {got} for 2 images; it "
                    "must return one logit per image ([N] or [N, 1])"
                )
    finally:
        g.train(was[0])
        d.train(was[1])


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _short(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
