"""Adaptive repeats, measured side by side in one run: the default sweep from nothing with its 2 fixed repeats, then
from nothing again with the preset's adaptive repeats (feature extraction and fine-tune get more seeds where their
95% interval is wider than +-5 points). Prints each run's wall time, their ratio, and the half-width of every
feature-extraction and fine-tune interval in both, with the repeats each got.

    python benchmarks/bench_adaptive.py                 # about 8 minutes on 2 cores
    python benchmarks/bench_adaptive.py --json adaptive.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="default")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("TLCORE_OFFLINE", "1")

    import torch

    from tlcore.engine.features import FeatureCache
    from tlcore.engine.rates import cpu_name
    from tlcore.experiments.config import build_sweep_config
    from tlcore.experiments.sweep import run_sweep
    from tlcore.records.store import Store

    adaptive = build_sweep_config(args.preset)
    runs = {"fixed": dataclasses.replace(adaptive, max_repeats=0), "adaptive": adaptive}
    figures = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "preset": args.preset}
    for name, config in runs.items():
        home = Path(tempfile.mkdtemp(prefix=f"tlcore-bench-adaptive-{name}-"))
        os.environ["TLCORE_HOME"] = str(home)
        start = time.perf_counter()
        result = run_sweep(config, store=Store(home / "tlcore.db"), cache=FeatureCache(home / "features"))
        wall = time.perf_counter() - start
        summary = result.summary()
        rows = summary[summary["kind"].isin(["feature-extraction", "fine-tune"])]
        widths = {f"{r.strategy} @ {r.size}": {"half_width": round((r.accuracy_high - r.accuracy_low) / 2, 4),
                                               "repeats": int(r.repeats), "accuracy": round(r.accuracy, 4)}
                  for r in rows.itertuples()}
        figures[name] = {"wall_seconds": round(wall, 1), "cells": len(result.cells), "intervals": widths,
                         "widest": max(w["half_width"] for w in widths.values())}
        print(f"\n{name}: {len(result.cells)} cells in {wall:.1f} s; widest FE/FT half-width "
              f"{figures[name]['widest'] * 100:.1f} points")
        for key, w in widths.items():
            print(f"  {key:<28} {w['accuracy']:.3f} +- {w['half_width'] * 100:5.1f} points ({w['repeats']} repeats)")
    figures["time_ratio"] = round(figures["adaptive"]["wall_seconds"] / figures["fixed"]["wall_seconds"], 3)
    print(f"\nadaptive / fixed wall time: {figures['time_ratio']:.3f} on {figures['cpu']}, "
          f"{figures['torch_threads']} torch threads")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
