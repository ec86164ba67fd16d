"""The time estimate shown before a run, against the run: the quick and default comparisons on the built-in data,
each from nothing in a fresh data directory, estimated first (rates measured once here), then run. Prints the
estimate and the measured training seconds per strategy and their ratio.

    python benchmarks/bench_estimate.py                  # about 2 minutes on 2 cores
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
    parser.add_argument("--presets", default="quick,default")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("TLCORE_OFFLINE", "1")
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="tlcore-bench-estimate-")

    import torch

    from tlcore.engine.rates import cpu_name
    from tlcore.experiments.compare import compare
    from tlcore.experiments.config import build_config
    from tlcore.experiments.estimate import estimate_comparison

    figures = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads()}
    for preset in args.presets.split(","):
        config = build_config(preset)
        start = time.perf_counter()
        estimate = estimate_comparison(config)
        estimating = time.perf_counter() - start
        start = time.perf_counter()
        result = compare(config)
        wall = time.perf_counter() - start
        rows = {r.strategy: {"estimate": estimate.seconds[r.strategy], "measured": round(r.train_seconds or 0, 1)}
                for r in result.runs}
        for row in rows.values():
            row["measured / estimate"] = round(row["measured"] / max(row["estimate"], 1e-9), 2)
        figures[preset] = {"estimate_total": round(estimate.total, 1), "wall_seconds": round(wall, 1),
                           "estimating_seconds": round(estimating, 2), "busy": estimate.busy, "strategies": rows}
        print(f"\n{preset}: estimated at most {estimate.total:.1f} s (computed in {estimating:.2f} s), the run took "
              f"{wall:.1f} s{' [busy: ' + estimate.busy + ']' if estimate.busy else ''}")
        for name, row in rows.items():
            print(f"  {name:<20} estimate {row['estimate']:7.1f} s  measured {row['measured']:7.1f} s  "
                  f"ratio {row['measured / estimate']:.2f}")
    print(f"\non {figures['cpu']}, {figures['torch_threads']} torch threads")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
