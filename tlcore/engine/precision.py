"""The one precision rule, on every device, and what a GPU run repeats.

bf16 (autocast) runs only where it cannot change a figure that is scored:
- training steps, on a CUDA GPU that computes bf16 natively (`torch.cuda.is_bf16_supported()`: Ampere or newer; a
  T4 or V100 would emulate it slowly, so they train in fp32). CPU training steps stay fp32;
- val passes, which only rank epochs, where the device computes bf16 natively (such a GPU, or a CPU with AVX512-BF16
  or AMX); recorded per run as `val_precision`.

Everything scored is fp32 everywhere: the test pass, the frozen features (their test rows score feature extraction),
fine-tune's frozen-prefix activations, the timed sample, `tlcore predict`, Try it and the exports. On CUDA, TF32 is
off for convolutions and matrix products, so a GPU's fp32 is the CPU's fp32 up to the kernels' rounding and `tlcore
predict --test-images` on a CPU reproduces a GPU run's stored accuracy.

Determinism: on a CPU, one seed gives bit-identical numbers run after run (and across executors with the same torch
thread count). On CUDA, `resolve_device` (tlcore.core.environment.configure_cuda) asks cuDNN for deterministic
algorithms and sets CUBLAS_WORKSPACE_CONFIG, so feature extraction and every forward pass are set to repeat exactly on
the same GPU model, driver and library versions; training can still differ in the last bits between two runs,
because some backward kernels (adaptive average pooling's) add with atomics, and a last-bit difference can move a
few predictions. A GPU run is not bit-identical to a CPU run. (Not yet measured on a GPU: benchmarks/gpu_check.py.)
"""

from __future__ import annotations

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX. There a
    bf16 pass is faster than fp32; elsewhere it is emulated, which is slower."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def train_bf16(device: torch.device) -> bool:
    """Whether training steps run under bf16 autocast: on a CUDA GPU that computes bf16 natively, nowhere else."""
    return device.type == "cuda" and native_bf16(device)


def run_precision(device: torch.device) -> str:
    """What a run records as its precision: 'fp32', or 'bf16 training steps' (its test pass is fp32 either way)."""
    return "bf16 training steps, fp32 test" if train_bf16(device) else "fp32"
