"""Layer-wise probe cost: the probe's one frozen pass (every stage's pooled output) against today's feature extraction
(the pooled last stage), on the same 1,000 Fashion-MNIST training images, packaged Lite0 weights, 48 px. The two are
timed alternately in this one run (best and median of --repeats each); the issue's bar is a ratio of at most 1.5.

    python benchmarks/bench_probe.py                  # the pass ratio, then the whole probe vs the FE strategy
    python benchmarks/bench_probe.py --skip-full      # the pass ratio only

Part 2 (unless --skip-full) times, with cold caches, the whole probe (pretrained and random-weights passes over
train + val + test, then a head per stage for each) against the feature-extraction strategy (`compare` with only
feature extraction) on the same config, for context: the bar above is about the pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tlcore import build_config, compare
from tlcore.advice.probe import layer_probe
from tlcore.engine.anatomy import StageEmbedding
from tlcore.engine.features import ExtractOptions, FeatureCache, extract_features
from tlcore.experiments.prepare import prepare


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100, help="training images a class (10 classes)")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=8, help="alternating timings of each pass")
    parser.add_argument("--skip-full", action="store_true", help="only the pass ratio")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="tlcore-bench-")  # cold caches
    sys.stdout.reconfigure(line_buffering=True)
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")

    config = build_config("default", dataset="fashion-mnist", per_class=args.per_class,
                          strategies=["feature-extraction"], image_size=args.image_size)
    prepared = prepare(config)
    data = prepared.cell_data(prepared.subset(args.per_class, config.seed), splits=("train",))
    images, model, cpu = data.splits["train"].images, prepared.reference, torch.device("cpu")
    options = ExtractOptions()
    print(f"\n== 1. one pass over {len(images)} training images at {args.image_size} px, "
          f"{config.backbone.name} ({prepared.weights.source} weights) ==")
    extract_features(model, images[:128], data.cfg, cpu, options)  # warm-up: first-call costs out of the timings
    extract_features(model, images[:128], data.cfg, cpu, options, embedding=StageEmbedding)
    times: dict[str, list[float]] = {"feature extraction": [], "probe pass": []}
    passes = [("feature extraction", None), ("probe pass", StageEmbedding)]
    for r in range(args.repeats):  # alternate which goes first, so neither is favoured by a drifting machine load
        for name, embedding in (passes if r % 2 == 0 else passes[::-1]):
            start = time.perf_counter()
            out = extract_features(model, images, data.cfg, cpu, options, embedding=embedding)
            times[name].append(time.perf_counter() - start)
            if embedding is not None:
                width = out.shape[1]
    paired = statistics.median(p / f for p, f in zip(times["probe pass"], times["feature extraction"]))
    fe_best, probe_best = min(times["feature extraction"]), min(times["probe pass"])
    fe_median, probe_median = statistics.median(times["feature extraction"]), statistics.median(times["probe pass"])
    for name, values in times.items():
        print(f"  {name:20} best {min(values):6.2f} s, median {statistics.median(values):6.2f} s "
              f"({len(images) / min(values):6.0f} img/s)  [{', '.join(f'{v:.2f}' for v in values)}]")
    print(f"  probe pass / feature extraction: {probe_best / fe_best:.2f}x (best), {probe_median / fe_median:.2f}x "
          f"(median), {paired:.2f}x (median of the {args.repeats} back-to-back pairs); the probe keeps {width} "
          f"features an image")
    figures = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "images": len(images),
               "image_size": args.image_size, "times": times, "ratio_best": probe_best / fe_best,
               "ratio_median": probe_median / fe_median, "ratio_paired": paired}

    if not args.skip_full:
        print("\n== 2. the whole probe vs the feature-extraction strategy (cold caches, train + val + test) ==")
        start = time.perf_counter()
        result = layer_probe(config, cache=FeatureCache(Path(os.environ["TLCORE_HOME"]) / "probe"))
        probe_total = time.perf_counter() - start
        start = time.perf_counter()
        fe = compare(config, cache=FeatureCache(Path(os.environ["TLCORE_HOME"]) / "fe")).runs[0]
        fe_total = time.perf_counter() - start
        for kind, c in result.curves.items():
            print(f"  probe, {kind:10} pass {c.feature_seconds:6.2f} s, {len(c.points)} heads {c.head_seconds:6.2f} s")
        print(f"  whole probe {probe_total:.1f} s; feature-extraction strategy {fe_total:.1f} s "
              f"(features {fe.timings.get('shared_features', 0) + fe.timings.get('features', 0):.2f} s, head "
              f"{fe.timings.get('head', 0):.2f} s)")
        last = result.curves["pretrained"].points[-1]
        print(f"  last stage test accuracy {last.test_accuracy:.4f}, feature extraction {fe.accuracy:.4f}")
        print(f"  {result.statement()}")
        figures.update(probe_total=probe_total, fe_total=fe_total, curves=result.to_dict()["curves"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
