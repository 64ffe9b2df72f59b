"""Write the small real MNIST subset shipped in ganhpo/data/subsets/ (reproducibly).

Takes the first images and labels of each split of the full MNIST (default: ../shared/data/mnist
from the repository root), checks that the source is the original MNIST, and writes them as
gzip-compressed IDX files with the standard names. The gzip streams carry no file name and
mtime 0, so running this again gives byte-identical files.

    python scripts/make_mnist_subset.py [--source DIR] [--out DIR] [--train N] [--test N]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(ROOT))

from ganhpo.data import read_idx, write_idx  # noqa: E402
from ganhpo.data._idx import encode_idx  # noqa: E402
from ganhpo.data._idx_datasets import MNIST  # noqa: E402

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_OUT = ROOT / "ganhpo" / "data" / "subsets"
DEFAULT_COUNTS = {"train": 2000, "test": 1000}  # about 0.5 MB compressed


def make_subset(source: Path, out: Path, counts: dict[str, int]) -> list[Path]:
    """Write the first ``counts[split]`` images and labels of each split; return the files."""
    written = []
    out.mkdir(parents=True, exist_ok=True)
    for split, remotes in MNIST.splits.items():
        for remote in remotes:
            path = source / remote.filename
            array = read_idx(path)
            if hashlib.sha256(encode_idx(array)).hexdigest() != remote.sha256:
                raise SystemExit(f"{path} is not the original MNIST file (sha256 differs)")
            target = out / remote.filename
            write_idx(target, array[: counts[split]])
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="full MNIST dir")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write")
    parser.add_argument("--train", type=int, default=DEFAULT_COUNTS["train"], help="images")
    parser.add_argument("--test", type=int, default=DEFAULT_COUNTS["test"], help="images")
    args = parser.parse_args(argv)
    files = make_subset(args.source, args.out, {"train": args.train, "test": args.test})
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}  {path.stat().st_size} bytes  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
