"""Issue 28 on the CPU: the process's shared template model is never changed by those who use it (device, memory
format, training mode), whatever entry point ran; one precision rule; the device resolved once, by the driver, and
GPUs asked of Ray for it; a training slot per device; the GPU's batch augmentation and feed. The tests marked `cuda`
run the same on a GPU, and skip here with the reason."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.engine import backbone as bb
from tlcore.engine.features import ExtractOptions, FeatureCache, extract_features
from tlcore.experiments.compare import compare


def _state(model: torch.nn.Module) -> tuple:
    tensors = [*model.parameters(), *model.buffers()]
    return ({t.device for t in tensors}, [t.is_contiguous() for t in model.parameters()],
            [m.training for m in model.modules()], [t.data_ptr() for t in tensors])


def test_the_template_is_unchanged_by_extraction_and_a_comparison(image_folder, tiny_weights, one_thread, tmp_path):
    spec = BackboneSpec("test_efficientnet", str(tiny_weights))
    template, _ = bb.load_template(spec)
    template.train()  # a mode the extraction must restore, not leave in eval
    before = _state(template)
    images = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    cfg = bb.data_config(template, 32)
    first = extract_features(template, images, cfg, torch.device("cpu"), ExtractOptions(channels_last=True))
    assert _state(template) == before
    again = extract_features(template, images, cfg, torch.device("cpu"), ExtractOptions(channels_last=False))
    assert torch.allclose(first, again, atol=1e-5) and _state(template) == before
    template.eval()
    before = _state(template)
    config = ExperimentConfig(dataset=DatasetSpec(str(image_folder), val_fraction=0.25), backbone=spec,
                              strategies=[make_strategy("feature-extraction"),
                                          make_strategy("fine-tune", epochs=1, batch_size=8)],
                              image_size=32, seed=0)
    result = compare(config, cache=FeatureCache(tmp_path / "f"))
    assert [r.status for r in result.runs] == ["completed", "completed"]
    assert bb.load_template(spec)[0] is template and _state(template) == before
    assert np.isfinite([r.accuracy for r in result.runs]).all()
    from tlcore.advice.health import health_check
    from tlcore.engine.anatomy import backbone_anatomy

    health_check(str(image_folder), backbone=spec.name, weights=spec.weights, image_size=32, save=False,
                 cache=FeatureCache(tmp_path / "h"))
    backbone_anatomy(spec, 32, num_classes=3)
    assert bb.load_template(spec)[0] is template and _state(template) == before


def test_features_computed_another_way_never_share_a_cache_entry():
    from tlcore.engine.features import FeatureCache as Cache
    from tlcore.engine.features import computed_as

    cpu = computed_as(ExtractOptions(bf16=False), torch.device("cpu"))
    assert cpu == "cpu|fp32" and computed_as(ExtractOptions(bf16=True), torch.device("cpu")) == "cpu|bf16"
    assert computed_as(ExtractOptions(), torch.device("cuda")) == "cuda|fp32"  # features that score: fp32 anywhere
    keys = {Cache.key("b", "w", "pool", "t", how) for how in ("cpu|fp32", "cpu|bf16", "cuda|bf16", "cuda|fp32")}
    assert len(keys) == 4
    assert Cache.key("b", "w", "pool", "t") == Cache.key("b", "w", "pool", "t", "cpu|fp32")


def test_out_of_memory_retries_at_half_the_batch_and_says_so(image_folder, tiny_weights, one_thread, tmp_path,
                                                             monkeypatch):
    """Simulated on the CPU: the training step raises torch.OutOfMemoryError above a batch of 4."""
    from tlcore.experiments import runner as runner_module

    real = runner_module.Runner._train

    def tight(self, model, spec, *args, **kwargs):
        if spec.batch_size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model, spec, *args, **kwargs)

    monkeypatch.setattr(runner_module.Runner, "_train", tight)
    config = ExperimentConfig(dataset=DatasetSpec(str(image_folder), val_fraction=0.25),
                              backbone=BackboneSpec("test_efficientnet", str(tiny_weights)),
                              strategies=[make_strategy("fine-tune", epochs=1, batch_size=16)], image_size=32, seed=0)
    run = compare(config, cache=FeatureCache(tmp_path / "f")).runs[0]
    assert run.status == "completed" and run.options["batch_size"] == 4
    assert run.extra["out_of_memory"] == {"batch_sizes": [16, 8], "ran_at": 4}
    monkeypatch.setattr(runner_module, "OOM_MIN_BATCH", 8)
    run = compare(config, cache=FeatureCache(tmp_path / "g")).runs[0]
    assert run.status == "failed" and "Out of memory at batch sizes 16, 8:" in run.error


def test_one_precision_rule_on_a_cpu(monkeypatch):
    """Scored passes are fp32 everywhere; bf16 trains only on a GPU that computes it natively."""
    from tlcore.engine import precision

    cpu = torch.device("cpu")
    assert not precision.train_bf16(cpu) and precision.run_precision(cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)  # a T4, a V100
    assert not precision.native_bf16(torch.device("cuda")) and not precision.train_bf16(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation
                        or True)
    assert precision.train_bf16(torch.device("cuda:1"))
    assert precision.run_precision(torch.device("cuda")) == "bf16 training steps, fp32 test"


def test_the_suite_runs_on_the_cpu_and_devices_are_named_or_refused(monkeypatch):
    from tlcore.cli import build_parser
    from tlcore.core.environment import resolve_device
    from tlcore.core.errors import ConfigError

    assert resolve_device("auto") == torch.device("cpu")  # TLCORE_DEVICE=cpu (conftest), on a GPU machine too
    parser = build_parser()
    assert parser.parse_args(["compare", "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--device", "gpu0"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'cuda:1' was asked for but no CUDA GPU is visible"):
            resolve_device("cuda:1")
        monkeypatch.setenv("TLCORE_DEVICE", "cuda")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("auto")


def test_ray_tasks_ask_for_the_gpus_of_the_device_the_driver_resolved(monkeypatch):
    from tlcore.experiments.executors import CellTask, gpus_for, on_ray_worker

    def task(device):
        return CellTask({"device": device}, {"kind": "fine-tune"}, 5, 0, "k", "label", "/home")

    assert gpus_for(task("cpu"), None) == 0.0 and gpus_for(task("cpu"), 1.0) == 0.0
    assert gpus_for(task("cuda"), None) == 1.0 and gpus_for(task("cuda:1"), 0.25) == 0.25
    monkeypatch.setenv("TLCORE_RAY_GPUS_PER_TASK", "0.5")  # the dashboard's jobs: from the environment
    assert gpus_for(task("cuda"), None) == 0.5
    assert on_ray_worker(task("cuda:3")).experiment["device"] == "cuda"  # Ray shows the worker only its GPU
    assert on_ray_worker(task("cpu")).experiment["device"] == "cpu"


def test_cells_carry_the_device_the_driver_resolved(image_folder, tiny_weights, one_thread, tmp_path):
    from tlcore.experiments.executors import LocalExecutor

    seen = []

    class Recording(LocalExecutor):
        def run(self, tasks, *args, **kwargs):
            seen.extend(tasks)
            return super().run(tasks, *args, **kwargs)

    config = ExperimentConfig(dataset=DatasetSpec(str(image_folder), val_fraction=0.25),
                              backbone=BackboneSpec("test_efficientnet", str(tiny_weights)),
                              strategies=[make_strategy("feature-extraction")], image_size=32, seed=0, device="auto")
    result = compare(config, cache=FeatureCache(tmp_path / "f"), executor=Recording())
    assert result.runs[0].status == "completed"
    assert [t.experiment["device"] for t in seen] == ["cpu"]


def test_each_device_has_its_own_training_slot(tmp_path):
    from tlcore.records.slot import slot_of, training_slot

    assert [slot_of(d) for d in ("", "cpu", "mps", "cuda", "cuda:0", "cuda:1")] == ["", "", "", "cuda0", "cuda0",
                                                                                   "cuda1"]
    waited = {}

    def other(device):
        with training_slot("other", home=tmp_path, device=device, poll=0.02) as w:
            waited[device] = w

    with training_slot("first", home=tmp_path, device="cuda:0"):
        threads = [threading.Thread(target=other, args=(d,)) for d in ("cuda:1", "cpu")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert waited == {"cuda:1": False, "cpu": False}  # other devices did not wait for cuda:0
        same = threading.Thread(target=other, args=("cuda",))
        same.start()
        time.sleep(0.3)
        assert "cuda" not in waited  # plain cuda is cuda:0: it waits
    same.join(5)
    assert waited["cuda"] is True


def test_the_gpu_batch_augmentation_crops_and_flips_each_image():
    from tlcore.engine.train import batch_crop_flip

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    same = batch_crop_flip(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    for out, img in zip(same, x):  # the whole image: itself or its mirror, per image
        assert torch.allclose(out, img, atol=1e-4) or torch.allclose(out, img.flip(-1), atol=1e-4)
    flips = {bool(torch.allclose(o, i.flip(-1), atol=1e-4))
             for o, i in zip(batch_crop_flip(x.repeat(16, 1, 1, 1), (1.0, 1.0), (1.0, 1.0)), x.repeat(16, 1, 1, 1))}
    assert flips == {True, False}
    crop = batch_crop_flip(x, scale=(0.5, 0.5), generator=torch.Generator().manual_seed(1))
    assert crop.shape == x.shape and not torch.allclose(crop, x) and crop.min() >= x.min() and crop.max() <= x.max()


def test_host_and_device_peaks_are_apart():
    from tlcore.engine.metrics import PeakMemory

    with PeakMemory(torch.device("cpu")) as memory:
        _ = torch.ones(1000, 1000)
    assert memory.peak_mb > 0 and memory.device_peak_mb is None


def test_a_recommendation_is_measured_where_its_confirmation_runs(image_folder, tiny_weights, monkeypatch, tmp_path):
    """The signals' image size and rates are those of the device the comparisons run on, and the one-click
    confirmation runs at that size on that device (not a CPU measurement confirmed at the GPU's size)."""
    from tlcore.advice import signals as signals_module
    from tlcore.advice.records import advise
    from tlcore.advice.rules import Recommendation, confirmation_config
    from tlcore.cli import build_parser
    from tlcore.experiments.prepare import auto_image_size
    from tlcore.records.store import Store

    asked = []
    real_prepare = signals_module.prepare
    monkeypatch.setattr(signals_module, "prepare", lambda config: asked.append(config.device) or real_prepare(config))
    spec, backbone = DatasetSpec(str(image_folder)), BackboneSpec("test_efficientnet", str(tiny_weights))
    rec = advise(spec, backbone, store=Store(tmp_path / "s.db"))  # auto, as a comparison: TLCORE_DEVICE=cpu here
    assert asked == ["auto"] and rec.signals.device == "cpu"
    assert rec.signals.image_size == auto_image_size(rec.signals.native_size, "cpu")
    config = confirmation_config(rec, spec, backbone)
    assert (config.image_size, config.device) == (rec.signals.image_size, "cpu")
    assert confirmation_config(rec, spec, backbone, image_size=48).image_size == 48  # the user's size wins
    old = rec.to_dict()
    old["signals"].pop("device")  # a recommendation stored before the device was recorded: measured on the CPU
    assert Recommendation.from_dict(old).signals.device == "cpu"
    assert build_parser().parse_args(["recommend", "--device", "cuda:1"]).device == "cuda:1"


# -- on a GPU ------------------------------------------------------------------------------------------------------

def _tiny_config(image_folder, tiny_weights, device, strategies):
    return ExperimentConfig(dataset=DatasetSpec(str(image_folder), val_fraction=0.25),
                            backbone=BackboneSpec("test_efficientnet", str(tiny_weights)),
                            strategies=strategies, image_size=32, seed=0, device=device)


@pytest.mark.cuda
def test_cuda_resolves_configured_and_a_gpu_run_predicts_the_same_on_the_cpu(image_folder, tiny_weights, tmp_path):
    """The device, its settings, both precisions, the cache key, and `predict` on the CPU reproducing a GPU run's
    stored test predictions (fp32 test pass on both)."""
    from tlcore.core.environment import resolve_device
    from tlcore.deploy.predict import predict_test_images
    from tlcore.engine.features import computed_as
    from tlcore.engine.precision import native_bf16

    device = resolve_device("cuda")
    assert device.type == "cuda" and torch.backends.cudnn.deterministic and not torch.backends.cudnn.allow_tf32
    assert computed_as(ExtractOptions(), device) == "cuda|fp32"
    config = _tiny_config(image_folder, tiny_weights, "cuda",
                          [make_strategy("feature-extraction"), make_strategy("fine-tune", epochs=2, batch_size=8),
                           make_strategy("scratch", epochs=2, batch_size=8)])
    result = compare(config, cache=FeatureCache(tmp_path / "f"))
    for run in result.runs:
        assert run.status == "completed", run.error
        assert run.device == "cuda" and "device_peak_memory_mb" in run.extra
        assert run.precision == ("bf16 training steps, fp32 test" if native_bf16(device) else "fp32")
        assert run.extra["throughput"]["seconds"] >= 1.0  # timed for a second with CUDA events
        _, agreement = predict_test_images(run.run_id)  # the saved model, on the CPU, fp32
        assert agreement >= 0.99, run.strategy


@pytest.mark.cuda
def test_a_gpu_out_of_memory_is_caught_and_retried(image_folder, tiny_weights, tmp_path, monkeypatch):
    from tlcore.experiments import runner as runner_module

    real = runner_module.Runner._train

    def tight(self, model, spec, *args, **kwargs):
        if spec.batch_size > 4:
            torch.empty(2**50, device="cuda")  # a real allocation the GPU refuses
        return real(self, model, spec, *args, **kwargs)

    monkeypatch.setattr(runner_module.Runner, "_train", tight)
    config = _tiny_config(image_folder, tiny_weights, "cuda", [make_strategy("fine-tune", epochs=1, batch_size=8)])
    run = compare(config, cache=FeatureCache(tmp_path / "f")).runs[0]
    assert run.status == "completed" and run.extra["out_of_memory"] == {"batch_sizes": [8], "ran_at": 4}


@pytest.mark.cuda
def test_a_recommendation_on_a_gpu_measures_at_the_gpu_size(image_folder, tiny_weights, tmp_path):
    from tlcore.advice.records import advise
    from tlcore.advice.rules import confirmation_config
    from tlcore.experiments.prepare import auto_image_size
    from tlcore.records.store import Store

    spec, backbone = DatasetSpec(str(image_folder)), BackboneSpec("test_efficientnet", str(tiny_weights))
    rec = advise(spec, backbone, store=Store(tmp_path / "s.db"), device="cuda")
    assert rec.signals.device == "cuda"
    assert rec.signals.image_size == auto_image_size(rec.signals.native_size, "cuda")
    assert rec.signals.seconds_per_image["fine-tune"] > 0
    config = confirmation_config(rec, spec, backbone)
    assert (config.image_size, config.device) == (rec.signals.image_size, "cuda")
