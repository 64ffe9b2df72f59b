"""What a quickstart FID means: the FIDs of real images, an untrained generator and one trial.

    python bench/reference_fid.py [--out DIR]

On the quickstart's data and metric (the shipped MNIST subset, the shipped classifier's
features, evaluation seed 0; ``studies/quick.toml``), at the quickstart's sample sizes (500 at
each evaluation, 1,000 at the end): FID against the training images of real images the
generator never sees (the subset's test split: the floor a perfect generator reaches at that
sample size), of an untrained generator (the ceiling), and of the quickstart's first trial (the
preset, 240 steps) at its end. Writes ``--out/reference_fid.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    import torch

    from ganhpo.data import load_dataset, shipped_mnist_subset_dir
    from ganhpo.spec import load_study_spec
    from ganhpo.train import Trainer

    torch.set_num_threads(1)
    spec = load_study_spec(ROOT / "studies" / "quick.toml")
    config = spec.base
    subset = shipped_mnist_subset_dir()
    train = load_dataset("mnist-subset", data_dir=subset)
    test = load_dataset("mnist-subset", split="test", data_dir=subset)
    trainer = Trainer(config, data=train)
    evaluator = trainer.evaluator
    out: dict[str, object] = {"study": "studies/quick.toml", "extractor": config.eval.extractor}
    sizes = {"eval": config.eval.samples, "final": config.eval.final_samples}
    for name, n in sizes.items():
        real = evaluator.evaluate_images(test.images[:n], kid=False)
        untrained = trainer.evaluate(n)
        out[name] = {
            "samples": n,
            "real_test_images": real.fid,
            "real_test_images_std": real.fid_std,
            "untrained_generator": untrained.fid,
        }
    result = trainer.run()
    assert result.final is not None
    out["preset_trial_final"] = {"steps": config.train.steps, "fid": result.final.fid}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "reference_fid.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
