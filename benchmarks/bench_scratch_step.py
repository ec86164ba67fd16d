"""What one scratch training step costs, and the levers on it, measured side by side in this one run (issue #15).

    python benchmarks/bench_scratch_step.py [--rounds 3] [--steps 25]

EfficientNet-Lite0 (random init, channels_last, training mode), batches of 64 at 48 px, on random data: the step the
default comparison's scratch run repeats 300 times. Variants are timed alternately, `--rounds` times each, and the
best round is kept (the machine is shared and noisy):

1. AdamW's implementations: the per-tensor loop (PyTorch's CPU default, what the engine uses), `foreach`, and
   `fused`; the optimizer step alone and the whole step.
2. The image size (for progressive resizing): 48 px against 32 px and 40 px.
3. The augmentation: torchvision's per-image RandomResizedCrop + flip against none.
4. Two threads in one process against two one-thread processes at once (how Ray workers would share the 2 vCPUs).
5. A val pass (700 images, eval mode, the engine's `predict` at batch 128) in fp32 against bf16 autocast, which the
   engine uses for val passes where `native_bf16` says the hardware has it (printed).

Prints images a second and ratios, and the CPU that ran it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_recipe import cpu  # benchmarks/, the script's own folder, is first on sys.path

ROOT = Path(__file__).resolve().parents[1]
BATCH, CLASSES = 64, 10


def make_model():
    import timm
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", num_classes=CLASSES).to(memory_format=torch.channels_last)


def train_rate(steps: int, size: int = 48, optimizer: dict | None = None, augment: bool = False) -> float:
    """Images a second over `steps` whole training steps (after 3 warm-up steps)."""
    from torchvision.transforms import v2
    model = make_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **(optimizer or {}))  # default: the engine's AdamW
    images = torch.randint(0, 256, (BATCH, 3, size, size), dtype=torch.uint8)
    labels = torch.randint(0, CLASSES, (BATCH,))
    aug = v2.Compose([v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True), v2.RandomHorizontalFlip()])

    def step():
        x = torch.stack([aug(im) for im in images]) if augment else images
        x = (x.float() / 255).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def optimizer_ms(variant: dict, repeats: int = 30) -> float:
    """Milliseconds of one AdamW step over Lite0's parameters (gradients present)."""
    model = make_model().train()
    x = torch.randn(BATCH, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    F.cross_entropy(model(x), torch.randint(0, CLASSES, (BATCH,))).backward()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **variant)
    for _ in range(3):
        opt.step()
    start = time.perf_counter()
    for _ in range(repeats):
        opt.step()
    return (time.perf_counter() - start) / repeats * 1000


def val_pass_ms(bf16: bool, images: int = 700) -> float:
    """Milliseconds of one val pass through the engine's `predict` (uint8 images normalised per batch of 128)."""
    from types import SimpleNamespace

    from tlcore.engine.features import Normalizer
    from tlcore.engine.train import ImageInputs, predict
    model = make_model().eval()
    prepared = SimpleNamespace(images=torch.randint(0, 256, (images, 3, 48, 48), dtype=torch.uint8),
                               labels=torch.zeros(images, dtype=torch.long))
    cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    inputs = ImageInputs(prepared, Normalizer(cfg, torch.device("cpu"), True))
    predict(model, inputs, bf16=bf16)
    start = time.perf_counter()
    for _ in range(3):
        predict(model, inputs, bf16=bf16)
    return (time.perf_counter() - start) / 3 * 1000


def one_thread_pair(steps: int) -> float:
    """Two one-thread processes training at once: their images a second, summed."""
    code = (f"import sys, torch; torch.set_num_threads(1); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"import bench_scratch_step as b; print(b.train_rate({steps:d}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"CPU: {cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    optimizers = {"per-tensor loop": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    variants = {f"AdamW {name}": (lambda o=o: train_rate(args.steps, optimizer=o)) for name, o in optimizers.items()}
    variants |= {"32 px": lambda: train_rate(args.steps, size=32), "40 px": lambda: train_rate(args.steps, size=40),
                 "48 px + per-image augmentation": lambda: train_rate(args.steps, augment=True),
                 "2 processes x 1 thread (sum)": lambda: one_thread_pair(args.steps)}
    best: dict[str, float] = {}
    opt_ms: dict[str, float] = {}
    val_ms: dict[str, float] = {}
    for r in range(args.rounds):
        for name, o in optimizers.items():
            opt_ms[name] = min(opt_ms.get(name, float("inf")), optimizer_ms(o))
        for name, bf16 in (("fp32", False), ("bf16", True)):
            val_ms[name] = min(val_ms.get(name, float("inf")), val_pass_ms(bf16))
        for name, fn in variants.items():
            best[name] = max(best.get(name, 0.0), fn())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in best.items()), flush=True)
    base = best["AdamW per-tensor loop"]  # 48 px, no augmentation, the engine's AdamW: the reference step
    print("\noptimizer step alone (ms, best): " + ", ".join(f"{k} {v:.1f}" for k, v in opt_ms.items()))
    from tlcore.engine.precision import native_bf16
    print(f"val pass of 700 images (ms, best): fp32 {val_ms['fp32']:.0f}, bf16 {val_ms['bf16']:.0f} "
          f"({val_ms['fp32'] / val_ms['bf16']:.2f}x); native bf16 here, so the engine uses it: "
          f"{native_bf16(torch.device('cpu'))}")
    print("\nwhole training step, images a second (best of rounds), and the ratio to the engine's 48 px step:")
    for name, rate in best.items():
        print(f"  {name:34s} {rate:6.0f} img/s  {rate / base:.2f}x")
    print(json.dumps({"cpu": cpu(), "optimizer_ms": opt_ms, "val_pass_ms": val_ms, "img_per_s": best}))


if __name__ == "__main__":
    main()
