"""Frozen BatchNorm benchmark: a feature-extraction model as a comparison deploys it (every backbone stage frozen),
with timm's FrozenBatchNormAct2d (four elementwise passes a layer) against tlcore's FrozenBatchNormAct2dFused (one
eval-mode batch_norm kernel), timed alternately in one process by the protocol every img/s figure uses
(tlcore.engine.throughput), and the largest logit difference between the two.

    python benchmarks/bench_frozen_bn.py                          # tf_efficientnet_lite0 at 96 and 224 px
    python benchmarks/bench_frozen_bn.py --backbone tf_efficientnet_lite2 --sizes 96,260

Prints the CPU, threads, and for each size the img/s of both (median of the rounds) and their ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys

from bench_predict import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--sizes", default="96,224")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    import torch
    from timm.layers import FrozenBatchNormAct2d
    from torchvision.ops.misc import FrozenBatchNorm2d

    from tlcore.engine import backbone as bb
    from tlcore.engine.throughput import THROUGHPUT_IMAGES, WARMUP_IMAGES, timed_pass

    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    fused, _ = bb.for_run(bb.BackboneSpec(args.backbone, "pretrained"), 10)
    bb.freeze_for_strategy(fused, "feature-extraction")
    plain = copy.deepcopy(fused)
    unfuse = {bb.FrozenBatchNormAct2dFused: FrozenBatchNormAct2d, bb.FrozenBatchNorm2dFused: FrozenBatchNorm2d}
    for module in plain.modules():
        if type(module) in unfuse:
            module.__class__ = unfuse[type(module)]
    models = {name: m.eval().to(memory_format=torch.channels_last) for name, m in (("timm", plain),
                                                                                   ("fused", fused))}
    count = THROUGHPUT_IMAGES + WARMUP_IMAGES
    for size in (int(s) for s in args.sizes.split(",")):
        images = torch.randn(count, 3, size, size).contiguous(memory_format=torch.channels_last)
        speeds = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                _, measured = timed_pass(model, lambda s: images[s], count)
                speeds[name].append(measured.images_per_second)
        with torch.inference_mode():
            diff = (models["timm"](images[:16]) - models["fused"](images[:16])).abs().max().item()
        timm_ips, fused_ips = (statistics.median(speeds[n]) for n in ("timm", "fused"))
        print(f"{args.backbone} at {size} px: timm FrozenBatchNormAct2d {timm_ips:.1f} img/s, fused "
              f"{fused_ips:.1f} img/s: {fused_ips / timm_ips:.2f}x; max logit difference {diff:.2e}")


if __name__ == "__main__":
    main()
