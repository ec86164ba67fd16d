"""Prediction benchmark: a saved run's `predict` speed against the evaluation throughput the run recorded (same
model, same image size, same batches), measured in this one process; and the exactness checks of issue #13 on the
built-in default: every strategy's predictions on its own test images against the stored ones, and the ONNX export
against torch.

    python benchmarks/bench_predict.py                 # runs the default comparison first (a few minutes)
    python benchmarks/bench_predict.py --record <id>   # an existing comparison in $TLCORE_HOME

Prints the CPU, images per second of predict (model time, preprocessing excluded, as evaluation measures it) and of
the run's evaluation, their ratio, the top-1 agreement, and the largest ONNX logit difference.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            flags = Path("/proc/cpuinfo").read_text()
            isa = "AMX" if " amx_tile" in flags else "AVX-512" if " avx512f" in flags else "AVX2"
            return f"{line.split(':', 1)[1].strip()} ({isa})"
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    import torch

    from tlcore import build_config, compare, load_comparison
    from tlcore.deploy.export import export_model
    from tlcore.deploy.load import load_model
    from tlcore.deploy.predict import predict_test_images

    print(f"machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = load_comparison(args.record) if args.record else compare(build_config("default"))
    print(f"comparison {result.record_id}: " + ", ".join(f"{r.strategy} {r.accuracy:.3f}" for r in result.runs
                                                          if r.accuracy is not None))
    for run in result.runs:
        if run.status != "completed":
            print(f"{run.strategy:20} {run.status}: no saved model")
            continue
        predictions, agreement = predict_test_images(run.run_id)
        same_time = _side_by_side(run)
        ratio = predictions.images_per_second / run.throughput_ips
        print(f"{run.strategy:20} predict {predictions.images_per_second:7.0f} img/s | evaluation recorded "
              f"{run.throughput_ips:7.0f} img/s | ratio {ratio:.2f} | top-1 agreement {agreement:.1%} "
              f"({len(predictions.paths)} test images)")
        print(f"{'':20} side by side now (best of 3, alternating): predict {same_time[0]:.0f} img/s, the engine's "
              f"evaluation path {same_time[1]:.0f} img/s, ratio {same_time[0] / same_time[1]:.2f}")
        try:
            import onnxruntime as ort
        except ImportError:
            continue
        out = Path(tempfile.mkdtemp()) / run.run_id
        export_model(run.run_id, "onnx", out)
        model, preprocessing = load_model(run.run_id)
        x = torch.cat([preprocessing.normalize(preprocessing.pixels(img).unsqueeze(0)) for img in
                       _test_images(run)])
        with torch.inference_mode():
            expected = model(x)
        got = torch.from_numpy(ort.InferenceSession(str(out / "model.onnx")).run(None, {"image": x.numpy()})[0])
        same = (got.argmax(1) == expected.argmax(1)).float().mean().item()
        print(f"{'':20} onnx: top-1 same as torch {same:.1%}, max |logit difference| "
              f"{(got - expected).abs().max().item():.2e} (logits up to {expected.abs().max().item():.1f})")


def _side_by_side(run) -> tuple[float, float]:
    """deploy's predict and the engine's evaluation (tlcore.engine.train.predict on ImageInputs, as the run scored its
    test images) on the same model and images, alternating, best of 3 each: this machine is shared and noisy."""
    import torch

    from tlcore.deploy.load import load_model
    from tlcore.deploy.predict import predict_images
    from tlcore.data.dataset import PreparedImages
    from tlcore.engine.train import ImageInputs, predict

    model, preprocessing = load_model(run.run_id)
    images = _test_images(run)
    pixels = torch.stack([preprocessing.pixels(img) for img in images])
    inputs = ImageInputs(PreparedImages(pixels, torch.zeros(len(pixels), dtype=torch.long), None),
                         preprocessing.normalize)
    ours, engine = [], []
    for _ in range(3):
        ours.append(predict_images(model, preprocessing, images, model.tlcore_config.classes).images_per_second)
        engine.append(predict(model, inputs)[1])
    return max(ours), max(engine)


def _test_images(run):
    from tlcore.data.dataset import DatasetSpec
    from tlcore.data.load import load_dataset

    spec = DatasetSpec(**{k: v for k, v in run.dataset.items() if k in DatasetSpec.__dataclass_fields__})
    ds = load_dataset(spec, seed=run.seed)
    return [ds.pools["test"].load(int(i)) for i in ds.indices["test"]]


if __name__ == "__main__":
    main()
