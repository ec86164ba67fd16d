"""Integration with the real packaged ImageNet weights and the bundled Fashion-MNIST subset."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.engine.backbone import data_config, load_template
from tlcore.engine.weights import PACKAGED_WEIGHTS, file_sha256, packaged_weights_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_packaged_lite0_weights_are_real_imagenet_weights():
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo, create_transform

    model, info = load_template(BackboneSpec("tf_efficientnet_lite0"))
    assert info.source == "packaged" and info.sha256 == PACKAGED_WEIGHTS["tf_efficientnet_lite0"].sha256
    assert file_sha256(packaged_weights_path("tf_efficientnet_lite0")) == info.sha256
    china = Image.fromarray(load_sample_images().images[0])
    x = create_transform(**data_config(model, 224), is_training=False)(china).unsqueeze(0)
    with torch.no_grad():
        top5 = model.eval()(x).softmax(-1).topk(5).indices[0].tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top5]
    assert "palace" in names, names


def test_pretraining_matters_more_at_5_than_at_50_a_class(tmp_path):
    """The seed's rule of thumb on real data, with a short scratch schedule (5 epochs, batch 32, no augmentation: the
    sweep's small-size schedule before issue #15): the gap between feature extraction and scratch shrinks as
    labelled images grow. (With scratch's current defaults, 10 epochs and augmentation at 32 px, scratch came within
    a point of feature extraction already at 5 a class, 0.527 vs 0.534: the rule of thumb is tested, not assumed.)"""
    from tlcore.records.store import Store
    from tlcore.experiments.config import SweepConfig
    from tlcore.experiments.sweep import run_sweep

    exp = ExperimentConfig(dataset=DatasetSpec("fashion-mnist"),
                           strategies=[make_strategy("feature-extraction"),
                                       make_strategy("scratch", epochs=5, min_steps=40, batch_size=32, lr=3e-3,
                                                     augment=False)], image_size=32, seed=0)
    result = run_sweep(SweepConfig(exp, sizes=[5, 50], repeats=1), store=Store(tmp_path / "s.db"))
    acc = {(c.kind, c.size): c.run.accuracy for c in result.cells}
    assert all(c.run.status == "completed" for c in result.cells)
    fe = next(c.run for c in result.cells if c.kind == "feature-extraction")
    assert fe.weights["source"] == "packaged" and next(c.run for c in result.cells if c.kind == "scratch").weights[
        "source"] == "none"
    gap5 = acc[("feature-extraction", 5)] - acc[("scratch", 5)]
    gap50 = acc[("feature-extraction", 50)] - acc[("scratch", 50)]
    assert gap5 > gap50 + 0.03, acc
    assert gap5 > 0.2 and acc[("feature-extraction", 5)] > 0.45  # ten classes: chance is 0.1
    assert acc[("scratch", 50)] > acc[("scratch", 5)] and acc[("feature-extraction", 50)] > acc[
        ("feature-extraction", 5)]
