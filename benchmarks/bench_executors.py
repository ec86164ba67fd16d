"""Executors side by side on this machine: the same sweep with the local executor (the machine's threads, and 1
thread), and with a 2-worker local Ray instance (1 thread a task), each from an empty store (features extracted
once by the caller in both), wall time and ratio, plus the per-cell times that a scaling estimate needs.

    python benchmarks/bench_executors.py                  # quick-preset schedules, 5-25 a class, 1 repeat
    python benchmarks/bench_executors.py --sizes 5,10,25,50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5,10,25")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="tlcore-bench-exec-")

    import torch

    from tlcore.experiments.executors import LocalExecutor, RayExecutor
    from tlcore.engine.features import FeatureCache
    from tlcore.experiments.config import build_sweep_config
    from tlcore.records.store import Store
    from tlcore.experiments.config import parse_sizes
    from tlcore.experiments.sweep import run_sweep

    config = build_sweep_config("quick", sizes=parse_sizes(args.sizes), repeats=1)
    figures = {}
    default_threads = torch.get_num_threads()
    variants = (("local", LocalExecutor, default_threads), ("local-1-thread", LocalExecutor, 1),
                ("ray", lambda: RayExecutor(num_cpus=args.workers), default_threads))
    for name, make, threads in variants:
        home = Path(tempfile.mkdtemp(prefix=f"tlcore-bench-exec-{name}-"))
        os.environ["TLCORE_HOME"] = str(home)  # Ray workers read the feature cache from here
        torch.set_num_threads(threads)  # the caller's threads (Ray tasks use 1 each)
        start = time.perf_counter()
        result = run_sweep(config, store=Store(home / "tlcore.db"), cache=FeatureCache(home / "cache" / "features"),
                           executor=make())
        wall = time.perf_counter() - start
        cells = result.cells_frame()
        figures[name] = {"wall_seconds": round(wall, 1), "cells": len(cells),
                         "cell_seconds_sum": round(float(sum(c.run.timings.get("total", 0) for c in result.cells)), 1),
                         "accuracy": {c.label: c.run.accuracy for c in result.cells}}
        print(f"{name}: {len(cells)} cells in {wall:.1f} s (sum of per-cell times "
              f"{figures[name]['cell_seconds_sum']:.1f} s)")
    for base in ("local", "local-1-thread"):
        same = sum(abs(figures[base]["accuracy"][k] - figures["ray"]["accuracy"][k]) < 1e-9
                   for k in figures[base]["accuracy"])
        print(f"ray ({args.workers} workers, 1 thread each) vs {base}: "
              f"x{figures[base]['wall_seconds'] / figures['ray']['wall_seconds']:.2f} wall-time speed-up; identical "
              f"accuracy in {same} of {len(figures[base]['accuracy'])} cells")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
