"""What the data health check costs against the feature-extraction comparison on the same data, side by side in one
process, each from its own empty feature cache, then the check again with every feature cached.

    python benchmarks/bench_health.py                                  # fashion-mnist, 100 a class (the default)
    python benchmarks/bench_health.py --dataset digits --per-class all

Prints the CPU and, per round: the feature-extraction comparison's wall time (frozen pass + head + test), the health
check's from its own empty cache (frozen pass of every split + 5 out-of-fold heads + cleanlab + cleanvision), their
ratio, and the check with every feature cached (its parts: heads and cleanlab, cleanvision). Run it alone: another
torch process on 2 cores changes every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_predict import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--per-class", default="100")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("TLCORE_OFFLINE", "1")
    import torch

    from tlcore.advice.health import health_check
    from tlcore.engine.features import FeatureCache
    from tlcore.experiments.compare import compare
    from tlcore.experiments.config import build_config, parse_size

    per_class = parse_size(args.per_class)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.dataset}, "
          f"{args.per_class} a class")
    ratios = []
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as home:
            os.environ["TLCORE_HOME"] = home
            config = build_config(dataset=args.dataset, per_class=per_class, strategies=["feature-extraction"])
            started = time.perf_counter()
            result = compare(config, cache=FeatureCache(Path(home) / "fe"))
            fe = time.perf_counter() - started
            cache = FeatureCache(Path(home) / "health")
            started = time.perf_counter()
            report = health_check(args.dataset, per_class=per_class, cache=cache, save=False)
            cold = time.perf_counter() - started
            started = time.perf_counter()
            warm_report = health_check(args.dataset, per_class=per_class, cache=cache, save=False)
            warm = time.perf_counter() - started
        ratios.append(cold / fe)
        print(f"round {round_}: feature-extraction comparison {fe:.1f} s ({result.runs[0].accuracy:.3f} test "
              f"accuracy); health check {cold:.1f} s from an empty cache ({report.extract_seconds:.1f} s of it the "
              f"frozen pass of {sum(report.checked_images.values())} images): {cold / fe:.2f}x; with every feature "
              f"cached {warm:.1f} s ({warm_report.rows_computed} rows computed; cleanvision "
              f"{warm_report.image_seconds:.1f} s)")
    print(f"health check / feature extraction, median of {len(ratios)}: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
