"""Issue 28 on the CPU: the process's shared template model is never changed by those who use it (device, memory
format, training mode), whatever entry point ran; the same checks hold on a GPU machine, where a change would move
the template under another thread's feet."""

from __future__ import annotations

import numpy as np
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
    assert computed_as(ExtractOptions(), torch.device("cuda")) == "cuda|bf16"
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
