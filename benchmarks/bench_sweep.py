"""Sweep benchmark: wall time of the sweep presets on the built-in default, and what resuming and feature reuse save,
all measured in this one run with a fresh data directory.

    python benchmarks/bench_sweep.py                      # quick and default presets (about 6 minutes on 2 cores)
    python benchmarks/bench_sweep.py --presets quick

For each preset: the sweep from nothing (wall seconds, cells, seconds per strategy, frozen-feature rows computed vs
reused), then the same sweep again, which must take every cell from the store (wall seconds and the ratio).
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
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="tlcore-bench-sweep-")

    from tlcore.views.text import sweep_report as format_sweep
    from tlcore.engine.features import FeatureCache
    from tlcore.experiments.config import build_sweep_config
    from tlcore.records.store import Store
    from tlcore.experiments.sweep import run_sweep

    figures = {}
    for preset in args.presets.split(","):
        # each preset from nothing: its own empty store and feature cache (no cells or features shared)
        home = Path(tempfile.mkdtemp(prefix=f"tlcore-bench-sweep-{preset}-"))
        store, cache = Store(home / "tlcore.db"), FeatureCache(home / "features")
        config = build_sweep_config(preset)
        start = time.perf_counter()
        result = run_sweep(config, store=store, cache=cache)
        cold = time.perf_counter() - start
        assert not any(c.resumed for c in result.cells)
        start = time.perf_counter()
        again = run_sweep(config, store=store, cache=cache)
        warm = time.perf_counter() - start
        assert all(c.resumed for c in again.cells) and len(again.cells) == len(result.cells)
        per_strategy = result.cells_frame().groupby("strategy")["train_seconds"].sum().round(1).to_dict()
        figures[preset] = {"wall_seconds": round(cold, 1), "cells": len(result.cells),
                           "train_seconds_by_strategy": per_strategy, "feature_rows": result.feature_cache,
                           "rerun_seconds": round(warm, 1), "rerun_ratio": round(cold / warm, 1),
                           "crossovers": [c.statement for c in result.crossovers()]}
        print(f"\n=== sweep preset '{preset}' ===")
        print(format_sweep(result))
        print(f"\n{preset}: {len(result.cells)} cells in {cold:.1f} s from nothing; training seconds by strategy "
              f"{per_strategy}; frozen-feature rows computed {result.feature_cache['rows_computed']}, reused "
              f"{result.feature_cache['rows_reused']}")
        print(f"{preset}: the same sweep again took {warm:.1f} s with every cell from the store "
              f"(x{cold / warm:.0f} faster)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
