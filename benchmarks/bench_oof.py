"""The health check's out-of-fold heads: the five folds solved as one problem (what tlcore does,
`engine/train.out_of_fold_probabilities`) against one L-BFGS a fold (the reference, kept here), on the same
features, alternating in one process.

    python benchmarks/bench_oof.py                      # fashion-mnist, 100 a class: 2,700 images, 1,280 features
    python benchmarks/bench_oof.py --rounds 5 --max-iter 300

Prints the CPU, each round's two times and their ratio, and how far apart the two solutions' probabilities are (and
each from a solution run far past convergence): the objective is the same sum, so they differ only by where L-BFGS
stops. Run it alone: another torch process on 2 cores changes every time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_predict import cpu_name


def one_fold_at_a_time(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, folds: int, max_iter: int,
                       seed: int = 0) -> torch.Tensor:
    """The reference: the same stratified folds, each head standardised on its training rows and fitted by its own
    L-BFGS."""
    from tlcore.engine.train import _lbfgs

    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(y), dtype=torch.long)
    for c in torch.unique(y):
        members = torch.nonzero(y == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold[members] = torch.arange(len(members)) % folds
    probabilities = torch.zeros(len(y), num_classes)
    for k in range(folds):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0, unbiased=False).clamp_min(1e-6)
        w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
        b = torch.zeros(num_classes, requires_grad=True)
        _lbfgs(w, b, (x[train] - mean) / std, y[train], l2, max_iter)
        with torch.no_grad():
            probabilities[test] = torch.softmax(((x[test] - mean) / std) @ w.T + b, dim=1)
    return probabilities


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=0, help="default: the health check's (OOF_MAX_ITER)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("TLCORE_OFFLINE", "1")
    from tlcore.advice import health
    from tlcore.core.progress import CancelToken
    from tlcore.data.load import parse_dataset
    from tlcore.engine.backbone import BackboneSpec
    from tlcore.engine.features import FeatureCache
    from tlcore.engine.train import out_of_fold_probabilities

    max_iter = args.max_iter or health.OOF_MAX_ITER
    with tempfile.TemporaryDirectory() as home:
        os.environ["TLCORE_HOME"] = home
        ds, _, every, _ = health._features(parse_dataset(args.dataset), BackboneSpec(), args.per_class, 0, None,
                                           FeatureCache(Path(home) / "f"), CancelToken())
    x, y, classes = every.x.float(), torch.from_numpy(every.y).long(), ds.num_classes
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.dataset}, "
          f"{len(y)} images x {x.shape[1]} features, {classes} classes, L2 {every.head_l2:g}, {health.FOLDS} folds, "
          f"max_iter {max_iter}")
    ratios = []
    for round_ in range(1, args.rounds + 1):
        started = time.perf_counter()
        apart = one_fold_at_a_time(x, y, classes, every.head_l2, health.FOLDS, max_iter)
        reference = time.perf_counter() - started
        started = time.perf_counter()
        together = out_of_fold_probabilities(x, y, classes, every.head_l2, health.FOLDS, max_iter)
        joint = time.perf_counter() - started
        ratios.append(joint / reference)
        print(f"round {round_}: one L-BFGS a fold {reference:.2f} s, the folds together {joint:.2f} s: "
              f"{joint / reference:.2f}x")
    converged = one_fold_at_a_time(x, y, classes, every.head_l2, health.FOLDS, 3000)
    gap = {"apart": float((together - apart).abs().max()), "converged": float((together - converged).abs().max()),
           "reference": float((apart - converged).abs().max())}
    same = float((together.argmax(1) == apart.argmax(1)).float().mean())
    print(f"median {statistics.median(ratios):.2f}x; largest probability difference: together vs a fold at a time "
          f"{gap['apart']:.4f}, together vs converged {gap['converged']:.4f}, a fold at a time vs converged "
          f"{gap['reference']:.4f}; same predicted class for {same:.4f} of the images")


if __name__ == "__main__":
    main()
