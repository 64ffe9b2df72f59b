"""The GAN training loop. It knows nothing about Optuna: a tuner plugs in through callbacks.

``on_eval(record)`` is called after every evaluation (and the final one); ``should_stop()`` is
called after every step and ends the run early when it returns True (a pruned trial, a
signal); ``on_checkpoint(step)`` is called every ``train.checkpoint_every`` steps.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ganhpo.errors import CheckpointError, ConfigError, DivergenceError, GanhpoError
from ganhpo.train.checkpoint import dump_checkpoint, load_checkpoint, save_checkpoint
from ganhpo.train.config import DatasetConfig, TrainConfig, config_to_dict
from ganhpo.train.images import save_grid
from ganhpo.train.losses import LOSSES
from ganhpo.train.models import build_models, check_models, import_builder
from ganhpo.train.penalties import PENALTIES

if TYPE_CHECKING:
    from ganhpo.data import ImageDataset
    from ganhpo.metrics import Evaluator

__all__ = [
    "ADOPTABLE",
    "EvalRecord",
    "Progress",
    "TrainResult",
    "Trainer",
    "check_networks",
    "resolve_device",
    "train",
]

logger = logging.getLogger(__name__)

GRID_SIZE = 64  # images in a sample grid (8 x 8)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a bad or unavailable device is a clear error."""
    kind, _, index = device.partition(":")
    cuda_n = kind == "cuda" and index.isascii() and index.isdigit()
    if device not in ("auto", "cpu", "cuda") and not cuda_n:  # torch would raise a RuntimeError
        raise ConfigError(f"device {device!r} is invalid; use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available; use cpu")
    if cuda_n and int(index) >= (count := torch.cuda.device_count()):
        raise ConfigError(f"device {device!r} does not exist; use cuda:0 to cuda:{count - 1}")
    return torch.device(device)


# Training parameters a run can change in the middle: read at every step (penalty weights,
# the EMA decay) or held by the optimizers (learning rates, betas).
ADOPTABLE = (
    "lr_g", "lr_d", "beta1", "beta2", "gp_weight", "r1_gamma", "ema_decay", "fm_weight",
    "cr_weight", "rotation_weight",
)  # fmt: skip


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation of the generator during or at the end of training."""

    step: int
    fid: float
    kid: float
    kid_std: float
    num_samples: int
    eval_seconds: float
    d_loss: float  # mean D loss (penalty included) since the previous evaluation
    g_loss: float  # mean G loss since the previous evaluation
    images_per_sec: float  # real images per second of training time so far
    final: bool = False
    grid: str | None = None  # path of the sample-grid PNG, when one was written
    # FID's sampling std: how much it would vary over new draws of the samples (jackknife).
    fid_std: float = math.nan

    def describe(self, total_steps: int, eta_seconds: float | None = None) -> str:
        """One progress line."""
        eta = (
            f"  ETA {_duration(eta_seconds)}" if eta_seconds is not None and not self.final else ""
        )
        # KID is printed as computed (MMD², not ×10³ as papers print it); docs/metrics.md.
        kid = (
            "" if math.isnan(self.kid) else f"  KID {self.kid:.4g} ± {self.kid_std:.2g} (unscaled)"
        )
        return (
            f"step {self.step}/{total_steps}  FID {self.fid:.3f}{_plus_minus(self.fid_std)}{kid}  "
            f"D {self.d_loss:.3f}  G {self.g_loss:.3f}  {self.images_per_sec:.0f} img/s  "
            f"(eval {self.eval_seconds:.1f}s){eta}{'  final' if self.final else ''}"
        )


def _plus_minus(std: float) -> str:
    """`` ± 0.52`` for a finite std, nothing otherwise (too few samples to estimate one)."""
    return f" ± {std:.2g}" if math.isfinite(std) else ""


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else (f"{seconds // 60}m{seconds % 60:02d}s")
    )


class Progress:
    """Progress lines with an ETA from the wall time per step so far (evaluations included)."""

    def __init__(self, total_steps: int, start_step: int = 0) -> None:
        self.total_steps = total_steps
        self.start_step = start_step
        self.started = time.monotonic()

    def line(self, record: EvalRecord) -> str:
        """The progress line of an evaluation."""
        done = record.step - self.start_step
        eta = None
        if done > 0:
            eta = (time.monotonic() - self.started) / done * (self.total_steps - record.step)
        return record.describe(self.total_steps, eta)


@dataclass
class TrainResult:
    """What a run produced."""

    steps: int  # steps trained (including those before a resume)
    stopped_early: bool  # should_stop() ended the run before its budget
    history: list[EvalRecord] = field(default_factory=list)
    train_seconds: float = 0.0  # wall time in training steps (evaluation excluded)
    eval_seconds: float = 0.0
    images_per_sec: float = 0.0
    device: str = "cpu"

    @property
    def final(self) -> EvalRecord | None:
        """The final evaluation, or None when the run stopped early."""
        return self.history[-1] if self.history and self.history[-1].final else None

    @property
    def last(self) -> EvalRecord | None:
        """The latest evaluation, final or not."""
        return self.history[-1] if self.history else None


class Trainer:
    """Owns the models, optimizers, RNGs and step counter of one run."""

    # The first steps of each run are timed exactly (synchronised on CUDA, where a step is
    # otherwise timed only up to its launch): a caller may read its rate after them.
    TIMED_FIRST_STEPS = 5

    def __init__(
        self,
        config: TrainConfig,
        *,
        data: ImageDataset | None = None,
        evaluator: Evaluator | None = None,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        from ganhpo.data import Batcher

        self.config = config
        self.device = self.device_for(config)
        ds = config.dataset
        if data is None:
            data = load_training_data(ds, data_dir)
        self.data = data
        channels, height, width = data.shape
        if height != width:
            raise ConfigError(
                f"dataset images are {height}x{width}; dcgan needs square images: "
                "set dataset.resolution to resize them"
            )
        tp = config.train
        if len(data) < tp.batch_size:
            raise ConfigError(
                f"train.batch_size = {tp.batch_size} is larger than the dataset "
                f"({len(data)} images); use a smaller batch"
            )
        g, d = _networks(config, (channels, height, width))
        self.G = g.to(self.device)
        self.D = d.to(self.device)
        self.G_ema: nn.Module | None = None
        if tp.ema:
            self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (tp.beta1, tp.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=tp.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=tp.lr_d, betas=betas)
        self.loss = LOSSES.get(tp.loss)
        self.penalty = PENALTIES.get(tp.penalty)
        # Every random draw of training comes from these two generators (checkpointed).
        self.rng_data = torch.Generator().manual_seed(config.seed * 2 + 1)
        self.rng_noise = torch.Generator(device=self.device).manual_seed(config.seed * 2 + 2)
        self.batcher = Batcher(data, tp.batch_size, self.device, self.rng_data)
        self.step = 0
        self.history: list[EvalRecord] = []
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self._loss_sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        self._loss_count = 0
        # Non-finite losses are looked for every step on the CPU; on a GPU, in blocks, to
        # avoid a host sync per step (the exact step is still found from the block).
        self._check_every = 1 if self.device.type == "cpu" else 25
        self._pending: list[torch.Tensor] = []
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._evaluator = evaluator
        self._cache_dir = cache_dir

    @staticmethod
    def device_for(config: TrainConfig) -> torch.device:
        """The device a configuration trains on."""
        return resolve_device(config.device)

    # ---------------------------------------------------------------- training
    @property
    def generator(self) -> nn.Module:
        """The generator that is evaluated: the EMA copy when enabled."""
        return self.G_ema if self.G_ema is not None else self.G

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(
            n, self.config.model.latent_dim, device=self.device, generator=self.rng_noise
        )

    def train_step(self) -> None:
        """One generator update preceded by ``n_disc`` discriminator updates."""
        tp = self.config.train
        g, d = self.G, self.D
        regularised = tp.feature_matching or tp.consistency or tp.rotation
        d.requires_grad_(True)
        for _ in range(tp.n_disc):
            real = self.batcher.next()
            with torch.no_grad():
                fake = g(self._z(tp.batch_size))
            if regularised:
                d_loss = self._regularised_d_loss(real, fake)
            else:
                d_loss = self.loss.d_loss(d(real), d(fake))
            d_loss = d_loss + self.penalty(d, real, fake, tp.penalty_weight, self.rng_noise)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        d.requires_grad_(False)  # G's step needs gradients through D, not for D's weights
        fake = g(self._z(tp.batch_size))
        g_loss = self._regularised_g_loss(real, fake) if regularised else self.loss.g_loss(d(fake))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        if self.G_ema is not None:
            self._update_ema()
        self.step += 1
        self._pending.append(torch.stack([d_loss.detach(), g_loss.detach()]))
        if len(self._pending) >= self._check_every:
            self._check_losses()

    # ------------------------------------------------------ representation regularisers
    def _regularised_d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """D's loss with bCR (Zhang et al. 2020: a translated image gets the logit of the
        original, real and fake alike) and SS-GAN's rotation task (Chen et al. 2019)."""
        tp, d = self.config.train, self.D
        d_real, d_fake = d(real), d(fake)
        loss = self.loss.d_loss(d_real, d_fake)
        if tp.consistency:
            shifted = d(self._translate(torch.cat([real, fake])))
            loss = loss + tp.cr_weight * (shifted - torch.cat([d_real, d_fake])).pow(2).mean()
        if tp.rotation:
            loss = loss + tp.rotation_weight * self._rotation_loss(real)
        return loss

    def _regularised_g_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """G's loss with feature matching (Salimans et al. 2016: the mean of D's features on
        fakes moves toward that on the last real batch; mean squared difference) and SS-GAN's
        rotation task at a fifth of D's weight (the paper's 0.2 against 1)."""
        tp, d = self.config.train, cast(Any, self.D)  # features/logit: checked at init
        if not tp.feature_matching:
            loss = self.loss.g_loss(d(fake))
        else:
            h_fake = d.features(fake)
            loss = self.loss.g_loss(d.logit(h_fake))
            with torch.no_grad():
                h_real = d.features(real)
            loss = loss + tp.fm_weight * (h_real.mean(0) - h_fake.mean(0)).pow(2).mean()
        if tp.rotation:
            loss = loss + 0.2 * tp.rotation_weight * self._rotation_loss(fake)
        return loss

    def _rotation_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of D's rotation head on the batch, image i turned by (i mod 4) x 90°."""
        d = cast(Any, self.D)  # a rotation head: built with it
        turned = torch.cat([torch.rot90(images[k::4], k, dims=(2, 3)) for k in range(4)])
        labels = torch.cat(
            [torch.full((len(images[k::4]),), k, device=images.device) for k in range(4)]
        )
        return F.cross_entropy(d.rotation(d.features(turned)), labels)

    def _translate(self, images: torch.Tensor, pad: int = 2) -> torch.Tensor:
        """Each image shifted by its own random whole pixels, up to ``pad`` along each axis
        (zeros come in), drawn from the run's noise generator (checkpointed)."""
        n, _, h, w = images.shape
        shift = torch.randint(
            0, 2 * pad + 1, (2, n), device=images.device, generator=self.rng_noise
        )
        padded = F.pad(images, (pad, pad, pad, pad), value=-1.0)  # -1: black in [-1, 1]
        rows = (torch.arange(h, device=images.device)[None, :] + shift[0][:, None])[:, :, None]
        cols = (torch.arange(w, device=images.device)[None, :] + shift[1][:, None])[:, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)

    @torch.no_grad()
    def _update_ema(self) -> None:
        assert self.G_ema is not None
        ema_p: list[torch.Tensor] = list(self.G_ema.parameters())
        params: list[torch.Tensor] = list(self.G.parameters())
        torch._foreach_lerp_(ema_p, params, 1.0 - self.config.train.ema_decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    def _check_losses(self) -> None:
        if not self._pending:
            return
        block = torch.stack(self._pending).double()
        first_step = self.step - len(self._pending) + 1
        self._pending = []
        finite = torch.isfinite(block)
        if not bool(finite.all()):
            row, col = (~finite).nonzero()[0].tolist()
            what = ("discriminator loss", "generator loss")[col]
            raise DivergenceError(what, first_step + row, float(block[row, col]))
        self._loss_sums += block.sum(0)
        self._loss_count += block.shape[0]

    # -------------------------------------------------------------- evaluation
    @property
    def evaluator(self) -> Evaluator:
        """The FID/KID evaluator, built on first use (real statistics come from the cache)."""
        if self._evaluator is None:
            from ganhpo.metrics import Evaluator

            self._evaluator = Evaluator(
                self.data,
                extractor=self.config.eval.extractor,
                device=self.device,
                cache_dir=self._cache_dir,
                seed=self.config.eval.seed,
                latent_dim=self.config.model.latent_dim,
            )
        return self._evaluator

    def prepare_evaluation(self) -> None:
        """Build the evaluator and the real statistics this run's evaluations will compare
        against, so that an extractor or dataset that cannot be scored fails before any
        training step instead of at the first evaluation."""
        tp, ev = self.config.train, self.config.eval
        evaluator = self.evaluator
        next_eval = (self.step // ev.every + 1) * ev.every if ev.every else tp.steps
        if next_eval < tp.steps:
            evaluator.real_stats(ev.samples)
        evaluator.real_stats(self._final_real_samples())

    def _final_real_samples(self) -> int:
        """Real images the final evaluation compares with (see ``eval.final_reference``)."""
        ev = self.config.eval
        return len(self.data) if ev.final_reference == "full" else ev.final_samples

    def evaluate(self, num_samples: int, *, final: bool = False) -> EvalRecord:
        """Score the generator on ``num_samples`` fixed latents; write a sample grid."""
        from ganhpo.metrics import fixed_latents

        self._check_losses()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        gen = self.generator
        try:
            mode = self.config.eval.kid
            result = self.evaluator.evaluate(
                gen,
                num_samples,
                batch_size=self.config.eval.batch_size,
                kid=mode == "every" or (final and mode == "final"),
                real_samples=self._final_real_samples() if final else None,
                latent_dim=self.config.model.latent_dim,
            )
        except ValueError as e:  # non-finite generated images or features
            raise DivergenceError("generated images", self.step, math.nan) from e
        for name in ("fid", "kid"):
            value = getattr(result, name)
            if not math.isfinite(value) and not (name == "kid" and math.isnan(value)):
                raise DivergenceError(name.upper(), self.step, value)
        grid_path: str | None = None
        if self.out_dir is not None and self.config.eval.grid:
            z = fixed_latents(self.config.eval.seed, GRID_SIZE, self.config.model.latent_dim)
            was_training = gen.training
            gen.eval()
            with torch.no_grad():
                images = gen(z.to(self.device))
            gen.train(was_training)
            name = "final.png" if final else f"step_{self.step:07d}.png"
            grid_path = str(save_grid(images, self.out_dir / "samples" / name, nrow=8))
        seconds = time.perf_counter() - start
        self.eval_seconds += seconds
        n = max(self._loss_count, 1)
        d_mean, g_mean = (self._loss_sums / n).tolist()
        self._loss_sums.zero_()
        self._loss_count = 0
        record = EvalRecord(
            step=self.step,
            fid=result.fid,
            kid=result.kid,
            kid_std=result.kid_std,
            num_samples=num_samples,
            eval_seconds=seconds,
            d_loss=d_mean,
            g_loss=g_mean,
            images_per_sec=self.images_per_sec,
            final=final,
            grid=grid_path,
            fid_std=result.fid_std,
        )
        self.history.append(record)
        return record

    @property
    def images_per_sec(self) -> float:
        """Real images seen by G's updates per second of training time."""
        if self.train_seconds <= 0:
            return 0.0
        return self._timed_steps * self.config.train.batch_size / self.train_seconds

    # ------------------------------------------------------------------ driver
    def run(
        self,
        *,
        on_eval: Callable[[EvalRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> TrainResult:
        """Train to ``train.steps``, evaluating every ``eval.every`` steps and at the end
        (``train.steps`` as :meth:`end_at` may set it meanwhile)."""
        ev = self.config.eval
        checkpoint_every = self.config.checkpoint_interval
        self._timed_steps = 0
        stopped = False
        sync = self.device.type == "cuda"
        while self.step < self.config.train.steps:
            t0 = time.perf_counter()
            self.train_step()
            evaluates = (
                ev.every and self.step % ev.every == 0 and self.step < self.config.train.steps
            )
            boundary = evaluates or (checkpoint_every and self.step % checkpoint_every == 0)
            if sync and (boundary or self._timed_steps < self.TIMED_FIRST_STEPS):
                torch.cuda.synchronize(self.device)
            self.train_seconds += time.perf_counter() - t0
            self._timed_steps += 1
            if evaluates:
                record = self.evaluate(ev.samples)
                if on_eval is not None:
                    on_eval(record)
            if checkpoint_every and self.step % checkpoint_every == 0:
                self._check_losses()
                if on_checkpoint is not None:
                    on_checkpoint(self.step)
            if should_stop is not None and should_stop():
                stopped = self.step < self.config.train.steps
                break
        if not stopped:
            record = self.evaluate(ev.final_samples, final=True)
            if on_eval is not None:
                on_eval(record)
        return TrainResult(
            steps=self.step,
            stopped_early=stopped,
            history=list(self.history),
            train_seconds=self.train_seconds,
            eval_seconds=self.eval_seconds,
            images_per_sec=self.images_per_sec,
            device=str(self.device),
        )

    def end_at(self, steps: int) -> None:
        """End the run at ``steps`` (not before the current step) instead of ``train.steps``,
        with its final evaluation there: a run whose budget turned out shorter than planned
        still ends with a scored generator. Only the length changes."""
        steps = max(steps, self.step)
        self.config = dataclasses.replace(
            self.config, train=dataclasses.replace(self.config.train, steps=steps)
        )

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The full training state: models, EMA, optimizers, step, every RNG, history."""
        self._check_losses()
        rng: dict[str, Any] = {
            "data": self.rng_data.get_state(),
            "noise": self.rng_noise.get_state(),
            "torch": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": config_to_dict(self.config),
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": rng,
            "history": [asdict(r) for r in self.history],
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "loss_sums": self._loss_sums.cpu(),
            "loss_count": self._loss_count,
        }

    def load_state_dict(self, state: dict[str, Any], *, adopt: Collection[str] = ()) -> None:
        """Restore a state from :meth:`state_dict`; the run must be the same configuration.

        ``adopt`` names training parameters (see :data:`ADOPTABLE`: learning rates, Adam's
        betas, penalty weights, the EMA decay) that may differ from the checkpoint's: this
        trainer's values replace the saved ones from the next step on (population-based
        training continues a state with new hyperparameters this way).
        """
        unknown = set(adopt) - set(ADOPTABLE)
        if unknown:
            raise ValueError(f"cannot adopt {sorted(unknown)}; adoptable: {', '.join(ADOPTABLE)}")
        saved = state["config"]
        mine = config_to_dict(self.config)
        # The budget and the evaluation cadence may change on resume; nothing else may.
        ignored = {"steps", "checkpoint_every", *adopt}
        diffs = []
        # A key a checkpoint lacks was added to ganhpo after it was made: its default then.
        defaults = config_to_dict(TrainConfig())
        for section in ("dataset", "model", "train"):
            a, b = mine.get(section, {}), {**defaults[section], **saved.get(section, {})}
            diffs += [f"{section}.{k}" for k in (set(a) | set(b)) - ignored if a.get(k) != b.get(k)]
        if saved.get("seed") != mine.get("seed"):
            diffs.append("seed")
        if diffs:
            raise CheckpointError(
                "the checkpoint was made with a different configuration "
                f"({', '.join(sorted(diffs))}); resume with the configuration it was made with"
            )
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        tp = self.config.train
        for optimizer, lr in ((self.opt_g, tp.lr_g), (self.opt_d, tp.lr_d)):
            for group in optimizer.param_groups:  # as configured: adopted, or equal anyway
                group["lr"], group["betas"] = lr, (tp.beta1, tp.beta2)
        rng = state["rng"]
        self.rng_data.set_state(rng["data"])
        self.rng_noise.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = int(state["step"])
        self.history = [EvalRecord(**r) for r in state["history"]]
        self.train_seconds = float(state["train_seconds"])
        self.eval_seconds = float(state["eval_seconds"])
        self._loss_sums = state["loss_sums"].to(self.device)
        self._loss_count = int(state["loss_count"])
        self._pending = []

    def checkpoint_bytes(self) -> bytes:
        """The full training state, serialized (for an artifact store)."""
        return dump_checkpoint(self.state_dict())

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint of the full training state atomically."""
        return save_checkpoint(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint written by :meth:`save`."""
        self.load_state_dict(load_checkpoint(path))


def check_networks(
    config: TrainConfig, extra: Sequence[dict[str, Any]] = (), *, data_dir: str | Path | None = None
) -> None:
    """For a user's builder (``model.arch = "package.module:function"``): import it, and when
    the dataset is on this machine build the networks once per configuration (the base, and
    ``extra`` searched/baseline values applied to it) and run them on 2 latents, so a wrong
    path, a missing function, an exception or a shape mismatch is one line before anything is
    written. Raises ModelImportError or ModelError; a registered architecture passes."""

    if not config.model.custom:
        return
    import_builder(config.model.arch)
    try:
        data = load_training_data(config.dataset, data_dir, limit=2, download=False)
    except GanhpoError:
        return  # the data is elsewhere (the workers'); the workers check again
    for values in [{}, *extra]:
        _networks(config.replace_params(**values), data.shape)


def load_training_data(
    ds: DatasetConfig, data_dir: str | Path | None, *, limit: int | None = None, **kwargs: Any
) -> ImageDataset:
    """The images a run of ``[dataset]`` trains and is scored on: its split, less its held-out
    share (``holdout``), at most ``limit`` images (else its own limit)."""
    from ganhpo.data import load_dataset

    return load_dataset(
        ds.name,
        split=ds.split,
        data_dir=data_dir,
        resolution=ds.resolution,
        channels=ds.channels,
        path=ds.path,
        limit=ds.limit if limit is None else limit,
        holdout=ds.holdout or 0.0,
        **kwargs,
    )


def _networks(
    config: TrainConfig, image_shape: tuple[int, int, int]
) -> tuple[nn.Module, nn.Module]:
    """The run's (G, D) for images (C, H, W), initialised from its seed without disturbing the
    caller's global RNG; a user's networks are run once to check they fit the data."""
    channels, height, _ = image_shape  # square: the Trainer checks it
    model = config.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        g, d = build_models(
            model.arch,
            latent_dim=model.latent_dim,
            channels=channels,
            resolution=height,
            width=model.width,
            spectral_norm=model.spectral_norm,
            width_g=model.width_g,
            width_d=model.width_d,
            depth=model.depth,
            options=dict(model.options),
            rotation_head=config.train.rotation,
        )
    tp = config.train
    if (tp.feature_matching or tp.consistency) and not (
        callable(getattr(d, "features", None)) and callable(getattr(d, "logit", None))
    ):
        raise ConfigError(
            "train.feature_matching and train.consistency need a discriminator with "
            "features(images) -> [N, F] and logit(features) -> [N]; give yours those methods "
            "or drop them"
        )
    if model.custom:
        check_models(g, d, latent_dim=model.latent_dim, image_shape=image_shape, arch=model.arch)
    return g, d


def train(
    config: TrainConfig,
    *,
    on_eval: Callable[[EvalRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
) -> TrainResult:
    """Train one configuration and return its evaluations (the last one is the final FID)."""
    trainer = Trainer(config, data_dir=data_dir, cache_dir=cache_dir, out_dir=out_dir)
    if resume is not None:
        trainer.load(resume)
    trainer.prepare_evaluation()
    return trainer.run(on_eval=on_eval, should_stop=should_stop)
