"""Trainer throughput vs a bare PyTorch loop of the same model, batch size and device.

Both loops run interleaved in one process (blocks of steps, alternating), so machine noise
hits both alike; the reported ratio is the median over blocks. Also times one intermediate and
one final evaluation at the default sample counts.

    python bench/trainer_speed.py [--quick] [--data-dir ../shared/data/mnist]
    python bench/trainer_speed.py --regularisers [--quick]

``--regularisers`` instead times a step with each representation regulariser (feature matching,
bCR, SS-GAN rotation) against a plain step of the same networks, interleaved the same way, for
the dcgan and resnet architectures: what docs/specs.md's cost per step says.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, beside this
from _common import save_results

from ganhpo.data import load_dataset, shipped_mnist_subset_dir
from ganhpo.train import DatasetConfig, EvalConfig, ModelConfig, TrainConfig, Trainer, TrainParams
from ganhpo.train.models import build_models


def bare_loop(data: torch.Tensor, config: TrainConfig, device: torch.device) -> Callable[[], None]:
    """The textbook DCGAN step with nothing around it."""
    torch.manual_seed(0)
    _, c, h, _ = data.shape
    m = config.model
    g, d = build_models(m.arch, latent_dim=m.latent_dim, channels=c, resolution=h, width=m.width)
    g, d = g.to(device), d.to(device)
    tp = config.train
    opt_g = torch.optim.Adam(g.parameters(), lr=tp.lr_g, betas=(tp.beta1, tp.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=tp.lr_d, betas=(tp.beta1, tp.beta2))
    images = data.to(device)
    b = tp.batch_size

    def step() -> None:
        real = images[torch.randint(len(images), (b,)).to(device)].float() / 127.5 - 1
        with torch.no_grad():
            fake = g(torch.randn(b, m.latent_dim, device=device))
        d_loss = F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d.requires_grad_(False)
        g_loss = F.softplus(-d(g(torch.randn(b, m.latent_dim, device=device)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
        float(d_loss.detach()), float(g_loss.detach())  # a bare loop logs its losses too

    return step


def timed(step: Callable[[], None], n: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer blocks (about a minute)")
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/mnist"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--regularisers", action="store_true", help="cost of each regulariser")
    args = ap.parse_args()
    if args.regularisers:
        regulariser_costs(args)
        return

    data_dir = args.data_dir if args.data_dir.exists() else shipped_mnist_subset_dir()
    data = load_dataset("mnist", data_dir=data_dir)
    config = TrainConfig(
        dataset=DatasetConfig(name="mnist"),
        model=ModelConfig(width=args.width, latent_dim=64),
        train=TrainParams(steps=10**9, batch_size=args.batch_size),
        eval=EvalConfig(every=0),
        device=args.device,
    )
    trainer = Trainer(config, data=data)
    device = trainer.device
    bare = bare_loop(data.images, config, device)
    blocks, n = (6, 30) if args.quick else (20, 50)
    timed(trainer.train_step, 10, device)  # warm-up both
    timed(bare, 10, device)
    ratios, t_tr, t_bare = [], [], []
    for _ in range(blocks):
        a = timed(trainer.train_step, n, device)
        b = timed(bare, n, device)
        t_tr.append(a)
        t_bare.append(b)
        ratios.append(b / a)  # images/s of the trainer over images/s of the bare loop
    ips = args.batch_size * n
    result: dict[str, object] = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "width": args.width,
        "blocks": blocks,
        "steps_per_block": n,
        "trainer_img_s": ips / statistics.median(t_tr),
        "bare_img_s": ips / statistics.median(t_bare),
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "evaluations": [],
    }
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"width {args.width}, {blocks} blocks x {n} steps, interleaved"
    )
    print(f"trainer    {ips / statistics.median(t_tr):8.0f} img/s")
    print(f"bare loop  {ips / statistics.median(t_bare):8.0f} img/s")
    print(
        f"ratio      {statistics.median(ratios):8.3f}  (median over blocks; min "
        f"{min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.95)"
    )

    # The default cadence: intermediate evaluations of 2000 samples score FID only, the final
    # one of 10000 samples FID and KID ([eval] kid = "final").
    for samples, final, what in ((2000, False, "FID"), (10000, True, "FID + KID")):
        trainer.evaluate(samples, final=final)  # first call computes or loads the real statistics
        t0 = time.perf_counter()
        rec = trainer.evaluate(samples, final=final)
        seconds = time.perf_counter() - t0
        steps = seconds / (statistics.median(t_tr) / n)
        print(
            f"one {'final' if final else 'intermediate'} evaluation of {samples:5d} samples "
            f"({what}): {seconds:6.2f} s (= {steps:.0f} training steps; FID {rec.fid:.2f})"
        )
        evaluations = result["evaluations"]
        assert isinstance(evaluations, list)
        evaluations.append(
            {"samples": samples, "final": final, "seconds": seconds, "steps_worth": steps}
        )
    save_results("trainer_speed" + ("_quick" if args.quick else ""), result)


REGULARISERS = {
    "feature_matching": {"feature_matching": True},
    "consistency (bCR)": {"consistency": True},
    "rotation (SS-GAN)": {"rotation": True},
}


def regulariser_costs(args: argparse.Namespace) -> None:
    """Step time with each regulariser over a plain step, per architecture (median of blocks)."""
    data_dir = args.data_dir if args.data_dir.exists() else shipped_mnist_subset_dir()
    data = load_dataset("mnist", data_dir=data_dir)
    blocks, n = (4, 10) if args.quick else (8, 20)
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, width {args.width}")
    costs: dict[str, dict[str, object]] = {}
    for arch in ("dcgan", "resnet"):

        def trainer(extra: dict[str, bool], arch: str = arch) -> Trainer:
            config = TrainConfig(
                dataset=DatasetConfig(name="mnist"),
                model=ModelConfig(arch=arch, width=args.width, latent_dim=64),
                train=TrainParams(steps=10**9, batch_size=args.batch_size, **extra),  # type: ignore[arg-type]
                eval=EvalConfig(every=0),
                device=args.device,
            )
            return Trainer(config, data=data)

        plain = trainer({})
        device = plain.device
        timed(plain.train_step, 3, device)
        for name, extra in REGULARISERS.items():
            other = trainer(extra)
            timed(other.train_step, 3, device)
            ratios = []
            for _ in range(blocks):
                a = timed(plain.train_step, n, device)
                b = timed(other.train_step, n, device)
                ratios.append(b / a)
            print(
                f"{arch:7s} {name:20s} {statistics.median(ratios):5.2f}x a plain step "
                f"(min {min(ratios):.2f}, max {max(ratios):.2f}; {a / n * 1000:.0f} ms plain)"
            )
            costs.setdefault(arch, {})[name] = {
                "ratio_median": statistics.median(ratios),
                "ratios": ratios,
                "plain_step_ms": a / n * 1000,
            }
    save_results(
        "regularisers" + ("_quick" if args.quick else ""),
        {"torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
         "width": args.width, "blocks": blocks, "steps_per_block": n, "costs": costs},
    )  # fmt: skip


if __name__ == "__main__":
    main()
