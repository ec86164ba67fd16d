"""The first real run on a GPU (issues 27 and 28), as one prepared script of at most about 8 minutes on one GPU:

    python benchmarks/gpu_check.py                 # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --device cpu    # the same steps on the CPU (a dry run of the script itself)

Steps, each through the CLI as a user runs it, in one fresh TLCORE_HOME:
1. the default comparison (`tlcore compare --device cuda`), with GPU utilisation and memory sampled by nvidia-smi
   every half second while it runs;
2. `tlcore predict --run ID --test-images` for every run: the agreement of the deployed model's predictions, on
   the CPU in fp32, with the predictions the run stored;
3. the throughput protocol, as each run recorded it (images per second), and the frozen pass fed from decoded
   images against the GPU's forward-only ceiling on random tensors of the same shape (issue 27);
4. a sweep cell (`tlcore sweep --sizes 20 --repeats 1`);
5. an ONNX export of the feature-extraction run.
Prints one table (accuracy, agreement, images per second, device and host peaks, GPU utilisation) and writes it as
JSON (--json). Without a GPU and without --device cpu it says so and exits 0: nothing to check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class GpuSampler(threading.Thread):
    """nvidia-smi's utilisation and memory every `interval` seconds while a step runs."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.samples, self.stop = interval, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, memory = out.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(util), float(memory)))
            self.stop.wait(self.interval)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        utils = [u for u, _ in self.samples]
        return {"gpu_util_mean": round(sum(utils) / len(utils), 1), "gpu_util_max": max(utils),
                "gpu_memory_max_mb": max(m for _, m in self.samples), "samples": len(self.samples)}


def cli(args: list[str], env: dict, timeout: float) -> tuple[str, float, float]:
    """(output, seconds, host peak resident MB) of `python -m tlcore ARGS` in its own process, killed after
    `timeout` seconds."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "tlcore", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    seconds = time.perf_counter() - started
    if status != 0:
        print(output[-3000:])
        raise SystemExit(f"tlcore {args[0]} failed (status {status}, {seconds:.0f} s)")
    return output, seconds, round(usage.ru_maxrss / 1024, 1)


def feed_ratio(device: str, image_size: int = 224, batch: int = 128, seconds: float = 3.0) -> dict:
    """Frozen-pass images per second fed from uint8 images (the streamed path: decoded images, normalised on the
    device) against the forward-only ceiling on random tensors already on the device, each timed for `seconds` after
    a warm-up of the same shape, with CUDA events."""
    import torch

    from tlcore.engine import backbone as bb
    from tlcore.engine.features import ExtractOptions, extract_features

    model, _ = bb.load_template(bb.BackboneSpec(bb.DEFAULT_BACKBONE, "pretrained"))
    cfg = bb.data_config(model, image_size)
    dev = torch.device(device)
    images = torch.randint(0, 255, (batch * 8, 3, image_size, image_size), dtype=torch.uint8)
    extract_features(model, images[:batch], cfg, dev, ExtractOptions())  # warm-up
    fed, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        extract_features(model, images, cfg, dev, ExtractOptions())
        fed += len(images)
    fed_rate = fed / (time.perf_counter() - started)
    placed = model.to(dev).eval()
    x = torch.randn(batch, 3, image_size, image_size, device=dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        placed(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            placed(x)
            done += batch
        if dev.type == "cuda":
            torch.cuda.synchronize()
    ceiling = done / (time.perf_counter() - started)
    return {"fed_images_per_second": round(fed_rate, 1), "forward_only_ceiling": round(ceiling, 1),
            "fed_share_of_ceiling": round(fed_rate / ceiling, 3), "image_size": image_size, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or with "
              "--device cpu to dry-run the script")
        return
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}, "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    home = tempfile.mkdtemp(prefix="gpu-check-")
    env = {**os.environ, "TLCORE_HOME": home, "PYTHONPATH": str(ROOT)}
    out = Path(home) / "out"
    report: dict = {"device": args.device}
    sampler = GpuSampler()
    sampler.start()
    _, seconds, host_peak = cli(["compare", "--device", args.device, "--no-progress", "--out", str(out)], env, 300)
    sampler.stop.set()
    report["compare"] = {"seconds": round(seconds, 1), "host_peak_mb": host_peak, **sampler.summary()}
    comparison = json.loads(next(out.glob("*.json")).read_text())
    rows = []
    for run in comparison["runs"]:
        row = {"strategy": run["strategy"], "status": run["status"], "accuracy": run.get("accuracy"),
               "images_per_second": run.get("throughput_ips"),
               "throughput_seconds": (run.get("extra", {}).get("throughput") or {}).get("seconds"),
               "host_peak_mb": run.get("peak_memory_mb"),
               "device_peak_mb": run.get("extra", {}).get("device_peak_memory_mb"),
               "precision": run.get("precision"), "device": run.get("device")}
        if run["status"] == "completed":
            predicted, _, _ = cli(["predict", "--run", run["run_id"], "--test-images"], env, 120)
            agreement = [line for line in predicted.splitlines() if "agree" in line.lower()]
            row["predict_test_images"] = agreement[-1].strip() if agreement else predicted.strip()[-200:]
        rows.append(row)
    report["runs"] = rows
    report["feed"] = feed_ratio(args.device)
    _, seconds, _ = cli(["sweep", "--device", args.device, "--sizes", "20", "--repeats", "1", "--strategies",
                         "feature-extraction,fine-tune", "--preset", "quick", "--no-progress"], env, 240)
    report["sweep_cell_seconds"] = round(seconds, 1)
    fe = next((r for r in comparison["runs"] if r["kind"] == "feature-extraction" and r["status"] == "completed"),
              None)
    if fe is not None:
        try:
            cli(["export", "--run", fe["run_id"], "--format", "onnx", "--out", str(Path(home) / "onnx")], env, 120)
            report["onnx"] = sorted(p.name for p in (Path(home) / "onnx").iterdir())
        except SystemExit as exc:
            report["onnx"] = f"failed: {exc}"
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
