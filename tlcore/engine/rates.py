"""How fast this machine runs a backbone: seconds per image for a frozen forward pass (feature extraction, val and
test passes) and for a training step of fine-tune (top 2 stages) and scratch (every layer), timed with a few real
batches on random inputs. Measured once per backbone, image size, device, thread count and CPU, and kept in
$TLCORE_HOME/calibration.json, so estimates before a run cost nothing after the first."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from tlcore.core.environment import data_home, resolve_device
from tlcore.engine import backbone as bb
from tlcore.engine.precision import train_bf16
from tlcore.engine.strategies import make_strategy
from tlcore.engine.throughput import LoadWindow, is_busy

CALIBRATION_FILE = "calibration.json"
FORWARD_BATCH = 128  # as evaluation runs
_LOCK = threading.Lock()


@dataclass(frozen=True)
class MachineRates:
    """Seconds per image on this machine, and what they were measured with."""

    forward: float  # eval forward pass, no gradients
    fine_tune: float  # a training step with the top 2 stage groups trainable (an upper bound for fewer)
    scratch: float  # a training step with every layer trainable
    key: str
    measured_at: float
    busy: str = ""  # what else ran while they were measured ('' on a quiet machine)

    def train(self, kind: str) -> float:
        return self.scratch if kind == "scratch" else self.fine_tune


def machine_busy(window: float = 0.3) -> str:
    """'' on a quiet machine, else what other processes use over `window` seconds, judged as a timing is
    (tlcore.engine.throughput: more than half a core of other work is busy)."""
    with LoadWindow() as load:
        time.sleep(window)
    if not is_busy(load.other_seconds, load.wall):
        return ""
    text = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"other work is using {load.other_seconds / load.wall:.1f} of {len(load.cpus)} cores{text}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(backbone: bb.BackboneSpec, image_size: int, device: torch.device) -> str:
    return f"{backbone.name}|{image_size}|{device.type}|{torch.get_num_threads()} threads|{cpu_name()}"


def _timed(step, repeats: int = 3, device: torch.device = torch.device("cpu")) -> float:
    """The best of `repeats` timed calls after one warm-up call. On a GPU each call is waited for (the host returns
    before the kernels finish) and training steps run as the training loop runs them (tlcore.engine.precision)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    step()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def training_rates(backbone: bb.BackboneSpec, classes: int, image_size: int, device: torch.device) -> dict[str, float]:
    """Seconds per training image for scratch (every layer) and fine-tune (top 2 stages, an upper bound: the engine
    also skips the frozen bottom), each timed with a few real optimizer steps at its default batch size on random
    inputs (per-image cost falls with the batch: a smaller one overstates it)."""
    model, _ = bb.for_run(replace(backbone, weights="none"), classes, pretrained=False)
    model.to(device).to(memory_format=torch.channels_last).train()

    def per_image(kind: str) -> float:
        batch = make_strategy(kind).batch_size
        x = torch.randn(batch, 3, image_size, image_size, device=device).to(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (batch,), device=device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=train_bf16(device)):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return _timed(step, 2, device) / batch

    rates = {"scratch": per_image("scratch")}
    groups = bb.stage_groups(model)
    bb.freeze_groups(model, groups[:-2])
    rates["fine-tune"] = per_image("fine-tune")
    return {k: round(v, 6) for k, v in rates.items()}


def forward_rate(backbone: bb.BackboneSpec, image_size: int, device: torch.device, batch: int = FORWARD_BATCH) -> float:
    """Seconds per image of an eval forward pass without gradients."""
    model, _ = bb.for_run(replace(backbone, weights="none"), 10, pretrained=False)
    model.to(device).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, image_size, image_size, device=device).to(memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return round(_timed(step, device=device) / batch, 7)


def machine_rates(backbone: bb.BackboneSpec, image_size: int, device: str | torch.device = "auto") -> MachineRates:
    """This machine's rates for the backbone at this size: from $TLCORE_HOME/calibration.json, or measured now (a
    second or two for a small backbone) and kept there."""
    device = resolve_device(device) if isinstance(device, str) else device
    key = _key(backbone, image_size, device)
    path = data_home() / CALIBRATION_FILE
    with _LOCK:
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if key in stored:
            return MachineRates(**stored[key])
        busy = machine_busy()
        train = training_rates(backbone, 10, image_size, device)
        rates = MachineRates(forward_rate(backbone, image_size, device), train["fine-tune"], train["scratch"], key,
                             round(time.time(), 1), busy)
        if busy:  # slower than this machine is: used now, measured again next time
            return rates
        stored[key] = asdict(rates)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored, indent=1))
        os.replace(tmp, path)
        return rates
