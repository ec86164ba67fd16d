"""tlcore's default comparison against the PyTorch-tutorial recipe (recipe_tutorial.py), on the same images, side by
side in one run: each is a whole process (`python -m tlcore compare` with an empty TLCORE_HOME, and
`python benchmarks/recipe_tutorial.py`), run alternately, so a noisy machine slows both alike.

    python benchmarks/bench_recipe.py [--rounds 1] [--only tlcore|recipe]

The images (issue #15): Fashion-MNIST from the built-in set, 100 training images a class, 50 val and 100 test a class,
written once as PNGs into train/ val/ test/ folders. Prints, per round, each side's wall time and per-strategy accuracy
and seconds, then the ratio tlcore / recipe (the target is at most 1.0) and the CPU that ran it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"train": 100, "val": 50, "test": 100}


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} vCPUs, {' '.join(isa) or 'no AVX2'}"


def write_folder(root: Path) -> Path:
    """The built-in Fashion-MNIST as train/ val/ test/ PNG folders: train and val drawn (disjoint, seeded) from its
    training pool, test from its test pool."""
    ds = load_dataset(DatasetSpec("fashion-mnist"))
    rng = np.random.default_rng(0)
    for c, name in enumerate(ds.classes):
        train_pool, test_pool = ds.pools["train"], ds.pools["test"]
        members = rng.permutation(np.flatnonzero(np.asarray(train_pool.labels) == c))
        tests = rng.permutation(np.flatnonzero(np.asarray(test_pool.labels) == c))
        chosen = {"train": (train_pool, members[:SIZES["train"]]),
                  "val": (train_pool, members[SIZES["train"]:SIZES["train"] + SIZES["val"]]),
                  "test": (test_pool, tests[:SIZES["test"]])}
        for split, (pool, indices) in chosen.items():
            folder = root / split / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i in indices:
                pool.load(int(i)).save(folder / f"{int(i)}.png")
    return root


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return seconds, out.stdout


def tlcore_side(data: Path, work: Path, extra: list[str]) -> dict:
    home, out = Path(tempfile.mkdtemp(dir=work)), Path(tempfile.mkdtemp(dir=work))
    env = os.environ | {"TLCORE_HOME": str(home), "TLCORE_OFFLINE": "1"}
    seconds, _ = run([sys.executable, "-m", "tlcore", "compare", "--dataset", str(data), "--out", str(out)] + extra,
                     env)
    result = json.loads((out / "comparison.json").read_text())
    return {"wall": seconds, "runs": {r["kind"]: {"accuracy": r["accuracy"], "seconds": r["train_seconds"],
                                                  "epochs": len([p for p in r.get("curve", []) if p.get("epoch")])}
                                      for r in result["runs"]},
            "image_size": result["dataset"].get("image_size")}


def recipe_side(data: Path) -> dict:
    seconds, stdout = run([sys.executable, str(ROOT / "benchmarks" / "recipe_tutorial.py"), "--data", str(data)],
                          dict(os.environ))
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {"wall": seconds, "runs": {r["strategy"]: {"accuracy": r["accuracy"], "seconds": r["seconds"]}
                                      for r in lines if "strategy" in r}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", choices=["tlcore", "recipe"], default=None)
    ap.add_argument("--tlcore-args", default="", help="extra arguments for `tlcore compare`")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    data = write_folder(work / "fashion-mnist-100")
    print(f"CPU: {cpu()}; torch threads: {__import__('torch').get_num_threads()}; images: {data}", flush=True)
    rounds = []
    for r in range(args.rounds):
        row = {}
        for side in ("recipe", "tlcore") if r % 2 == 0 else ("tlcore", "recipe"):
            if args.only and side != args.only:
                continue
            row[side] = recipe_side(data) if side == "recipe" else tlcore_side(data, work, args.tlcore_args.split())
            runs = ", ".join(f"{k} {v['accuracy']:.3f} ({v['seconds']:.1f} s)" for k, v in row[side]["runs"].items())
            print(f"round {r + 1} {side:7} whole process {row[side]['wall']:6.1f} s: {runs}", flush=True)
        if "recipe" in row and "tlcore" in row:
            print(f"round {r + 1} ratio tlcore / recipe: {row['tlcore']['wall'] / row['recipe']['wall']:.2f}x",
                  flush=True)
        rounds.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu(), "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
