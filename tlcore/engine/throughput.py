"""Inference throughput, one protocol for every images-a-second figure tlcore reports (a comparison's table and
`tlcore predict`): the deployed model in eval mode, a warm-up on the first WARMUP_IMAGES inputs, then the first
THROUGHPUT_IMAGES inputs in batches of BATCH_SIZE, timed from normalised-input batches to logits (decoding and
resizing are not timed). The machine's load over the timed window is recorded with the figure, so a figure taken
while other processes used the CPU says so.

On a CUDA GPU two batches take milliseconds, too short to time: there the warm-up is a whole batch of the timed shape,
and the timed pass is repeated until it has run for at least CUDA_SECONDS, timed with CUDA events (the GPU's own
clock, not the host's, which returns before the kernels finish)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import psutil
import torch

THROUGHPUT_IMAGES = 256
WARMUP_IMAGES = 32  # the first batch pays one-off costs (allocations, kernel choice): not timed
BATCH_SIZE = 128  # as evaluation (tlcore.engine.train.predict)
BUSY_CORES = 0.5  # other processes using more than half a core on average during the timing: a busy machine
CLOCK_TICKS = 3  # ... and more than this many of the kernel's CPU-time ticks, so rounding alone never flags it
SHORTEST = 0.1  # seconds: a timing shorter than this (a handful of test images) is too noisy to rank models by
CUDA_SECONDS = 1.0  # on a GPU the timed pass repeats until it has run this long
CUDA_MAX_REPEATS = 200


@dataclass
class Throughput:
    """Images a second of one timed pass, and what the machine was doing meanwhile."""

    images_per_second: float
    images: int
    seconds: float
    threads: int  # torch's intra-op threads
    cpus: int  # the CPUs this process may run on
    load_1min: Optional[float] = None  # os.getloadavg()[0] at the end of the window
    machine_cpu_percent: Optional[float] = None  # the CPUs above, busy share over the window (100: all busy)
    other_cores: Optional[float] = None  # CPU used by other processes over the window, in cores
    busy: bool = False  # other processes used more than BUSY_CORES: the figure is low by an unknown amount

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> Optional["Throughput"]:
        if not data:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def comparable(self) -> bool:
        """Fit to rank models by: long enough to outlast timing noise, on a machine nothing else was using."""
        return not self.busy and self.seconds >= SHORTEST

    def short_text(self) -> str:
        """'timed on only 6 images (0.004 s): too short to compare' for a timing under SHORTEST, else ''."""
        if self.seconds >= SHORTEST:
            return ""
        return f"timed on only {self.images} images ({self.seconds:.3f} s): too short to compare"

    def busy_text(self) -> str:
        """'measured while the machine was busy (other processes used 1.3 of 2 cores)', or '' when it was not."""
        if not self.busy:
            return ""
        return (f"measured while the machine was busy (other processes used {self.other_cores:.1f} of {self.cpus} "
                "cores)")


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: every CPU
        return list(range(psutil.cpu_count() or 1))


def _busy_seconds(cpus: list[int]) -> float:
    """CPU seconds spent working (not idle, not waiting for I/O) on `cpus` since boot, by every process."""
    times = psutil.cpu_times(percpu=True)
    total = 0.0
    for i in cpus:
        if i < len(times):
            t = times[i]
            total += sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
    return total


def _own_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def is_busy(other_seconds: float, wall_seconds: float) -> bool:
    """Whether other processes' CPU time over a window of `wall_seconds` means a busy machine: more than BUSY_CORES
    on average, and more than CLOCK_TICKS of the kernel's accounting (a short window's rounding is not load)."""
    tick = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
    return other_seconds > max(BUSY_CORES * wall_seconds, CLOCK_TICKS * tick)


class LoadWindow:
    """The machine's CPU use over a `with` block: this process's, every process's on this process's CPUs, and so the
    other processes'."""

    def __enter__(self) -> "LoadWindow":
        self.cpus = _cpus()
        self.machine, self.own, self.started = _busy_seconds(self.cpus), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.started
        machine = _busy_seconds(self.cpus) - self.machine
        own = _own_seconds() - self.own
        self.other_seconds = max(0.0, machine - own)
        self.machine_percent = 100.0 * machine / max(self.wall * len(self.cpus), 1e-9)

    def measured(self, images: int, seconds: float) -> Throughput:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return Throughput(images_per_second=images / max(seconds, 1e-9), images=images, seconds=seconds,
                          threads=torch.get_num_threads(), cpus=len(self.cpus),
                          load_1min=None if load is None else round(load, 2),
                          machine_cpu_percent=round(min(100.0, self.machine_percent), 1),
                          other_cores=round(self.other_seconds / max(self.wall, 1e-9), 2),
                          busy=is_busy(self.other_seconds, self.wall))


def _device(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _forward(model: torch.nn.Module, batches: Callable[[slice], torch.Tensor], count: int,
             check: Optional[Callable[[], None]]) -> list[torch.Tensor]:
    outs = []
    for start in range(0, count, BATCH_SIZE):
        if check:
            check()
        outs.append(model(batches(slice(start, min(start + BATCH_SIZE, count)))).float().cpu())
    return outs


def timed_pass(model: torch.nn.Module, batches: Callable[[slice], torch.Tensor], count: int,
               check: Optional[Callable[[], None]] = None) -> tuple[torch.Tensor, Throughput]:
    """The protocol: logits for the first min(count, THROUGHPUT_IMAGES) inputs and its Throughput. `batches(slice)`
    gives the model's input for those positions (normalised, on the model's device); `check` runs before each batch
    (a cancel check). The pass is fp32, as the test pass is (tlcore.engine.precision)."""
    images = min(count, THROUGHPUT_IMAGES)
    if images <= 0:
        raise ValueError("timed_pass needs at least one input")
    device = _device(model)
    model.eval()
    with torch.inference_mode():
        if device.type == "cuda":
            return _timed_on_cuda(model, batches, images, check, device)
        _forward(model, batches, min(images, WARMUP_IMAGES), check)
        with LoadWindow() as window:
            started = time.perf_counter()
            outs = _forward(model, batches, images, check)
            seconds = time.perf_counter() - started
    return torch.cat(outs), window.measured(images, seconds)


def _timed_on_cuda(model, batches, images: int, check, device: torch.device) -> tuple[torch.Tensor, Throughput]:
    """The GPU's timing: a warm-up of the timed batch's shape, then the pass repeated for CUDA_SECONDS (CUDA events)."""
    _forward(model, batches, min(images, BATCH_SIZE), check)
    torch.cuda.synchronize(device)
    inputs = [batches(slice(s, min(s + BATCH_SIZE, images))) for s in range(0, images, BATCH_SIZE)]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    outs, repeats, seconds = [], 0, 0.0
    with LoadWindow() as window:
        while seconds < CUDA_SECONDS and repeats < CUDA_MAX_REPEATS:
            if check:
                check()
            start.record()
            logits = [model(x) for x in inputs]
            end.record()
            end.synchronize()
            seconds += start.elapsed_time(end) / 1000
            outs = outs or [t.float().cpu() for t in logits]
            repeats += 1
    return torch.cat(outs), window.measured(images * repeats, seconds)


def pixels_throughput(model: torch.nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor],
                      pixels: Sequence[torch.Tensor]) -> Optional[Throughput]:
    """The protocol on decoded images (uint8 C x H x W tensors, as `Preprocessing.pixels` gives them), normalised
    per batch by `normalize`, as predictions are; None without images."""
    if not len(pixels):
        return None
    return timed_pass(model, lambda s: normalize(torch.stack(list(pixels[s]))), len(pixels))[1]
