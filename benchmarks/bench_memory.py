"""Peak memory and time against the number of training images (issue 27): each run is `tlcore compare` in its own
process from an empty TLCORE_HOME, its peak resident memory read from the kernel (`os.wait4`'s ru_maxrss, what
`/usr/bin/time -v` prints), beside the estimate tlcore shows before the run, and the disk the run's caches took.

    python benchmarks/bench_memory.py                                    # FE at 5k, 20k, 50k; fine-tune at 5k
    python benchmarks/bench_memory.py --sizes 5000,20000 --strategy fine-tune --preset quick

Data: the full Fashion-MNIST (`fashion-mnist-full`: Debian's dataset-fashion-mnist, 54k train, 6k val, 10k test) at
96 px. Prints the CPU, one row per size, the growth of the peak from the smallest size to the largest, and writes the
rows as JSON (--json). Run it alone: another torch process on 2 cores changes every time (not the memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_predict import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def disk_mb(folder: Path) -> float:
    """Disk actually used under `folder` (allocated blocks: sparse files count what was written)."""
    total = 0
    for path in folder.rglob("*") if folder.exists() else []:
        if path.is_file():
            total += path.stat().st_blocks * 512
    return total / 2**20


def run(size: int, strategy: str, preset: str, image_size: int, dataset: str) -> dict:
    classes = 10
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "TLCORE_HOME": home, "TLCORE_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        args = [sys.executable, "-m", "tlcore", "compare", "--dataset", dataset, "--per-class",
                str(size // classes), "--strategies", strategy, "--image-size", str(image_size), "--preset", preset,
                "--no-progress", "--out", str(Path(home) / "out")]
        started = time.perf_counter()
        child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 cwd=ROOT)
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            raise SystemExit(f"size {size} failed:\n{output[-3000:]}")
        said = next((line for line in output.splitlines() if "Needs about" in line), "")
        estimate = said[said.index("Needs about"):].split(";")[0] if said else ""
        row = {"training_images": size, "strategy": strategy, "peak_mb": round(usage.ru_maxrss / 1024, 1),
               "seconds": round(seconds, 1), "feature_cache_mb": round(disk_mb(Path(home) / "cache" / "features"), 1),
               "decoded_mb": round(disk_mb(Path(home) / "cache" / "decoded"), 1),
               "prefix_rows_mb": round(disk_mb(Path(home) / "cache" / "rows"), 1), "estimate": estimate}
        accuracy = [line for line in output.splitlines() if line.strip().startswith(strategy) and "completed" in line]
        row["result"] = accuracy[0].strip() if accuracy else ""
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--strategy", default="feature-extraction")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--dataset", default="fashion-mnist-full")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.dataset} at {args.image_size} px, {args.strategy}, "
          f"preset {args.preset}")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        row = run(size, args.strategy, args.preset, args.image_size, args.dataset)
        rows.append(row)
        print(json.dumps(row))
    if len(rows) > 1:
        print(f"peak grows by {rows[-1]['peak_mb'] - rows[0]['peak_mb']:.0f} MB from {rows[0]['training_images']:,} "
              f"to {rows[-1]['training_images']:,} training images")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
