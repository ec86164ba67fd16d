"""Build the bundled Fashion-MNIST subset (tlcore/data/assets/fashion_mnist_subset.npz) reproducibly.

Source: Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`), which holds the original
idx files from Zalando Research (MIT licence, https://github.com/zalandoresearch/fashion-mnist).

    python scripts/make_fashion_mnist_subset.py [--source /usr/share/datasets/fashion-mnist]

The subset is a seeded, stratified draw: TRAIN_PER_CLASS images a class from the 60k training set and TEST_PER_CLASS
from the 10k test set. The script prints a digest of the arrays so a rebuild can be checked against the committed file.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from tlcore.data.builtin import FASHION_MNIST_CLASSES, read_fashion_mnist_idx

TRAIN_PER_CLASS = 700
TEST_PER_CLASS = 100
SEED = 20240601
OUT = Path(__file__).resolve().parents[1] / "tlcore" / "data" / "assets" / "fashion_mnist_subset.npz"


def stratified_pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picked = [np.sort(rng.choice(np.flatnonzero(labels == c), per_class, replace=False)) for c in np.unique(labels)]
    return np.concatenate(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        images, labels = read_fashion_mnist_idx(Path(args.source), split)
        idx = stratified_pick(labels, per_class, rng)
        arrays[f"{split}_images"] = images[idx]
        arrays[f"{split}_labels"] = labels[idx].astype(np.uint8)
    arrays["classes"] = np.array(FASHION_MNIST_CLASSES)
    np.savez_compressed(args.out, **arrays)

    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    print(f"wrote {args.out}: train {arrays['train_images'].shape}, test {arrays['test_images'].shape}")
    print(f"content sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    main()
