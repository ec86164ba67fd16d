"""The layer-wise probe: one pass, every stage pooled, the feature-extraction head per stage; its last stage is the
feature-extraction strategy on the same split, and its features are cached by content."""

from __future__ import annotations

import pytest

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, build_config, compare, make_strategy
from tlcore.advice.probe import ProbeResult, layer_probe, probe_table
from tlcore.engine.features import FeatureCache


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: tests/conftest.py


def _config(folder, weights, name="test_efficientnet", size=32) -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec(name, str(weights)),
                            strategies=(make_strategy("feature-extraction", head_max_iter=60),), image_size=size,
                            seed=0)


def test_last_stage_is_feature_extraction_and_features_are_cached(image_folder, tiny_weights, tmp_path):
    config = _config(image_folder, tiny_weights)
    cache = FeatureCache(tmp_path / "probe")
    result = layer_probe(config, cache=cache)
    fe = compare(config, cache=FeatureCache(tmp_path / "fe")).runs[0]
    curve = result.curves["pretrained"]
    assert [p.stage for p in curve.points] == list(range(6))  # stem + 5 stage groups of test_efficientnet
    assert curve.points[-1].dim == 256 and curve.points[-1].label.startswith("blocks.4")
    last = curve.points[-1]
    assert last.test_accuracy == fe.accuracy
    assert last.val_accuracy == fe.best_val_accuracy
    assert last.l2 == fe.extra["head_l2"]
    assert set(result.curves) == {"pretrained", "random"}
    assert result.curves["random"].weights_id != curve.weights_id
    assert all(0 <= p.val_accuracy <= 1 and 0 <= p.test_accuracy <= 1 for c in result.curves.values()
               for p in c.points)
    assert curve.rows_computed == sum(result.images.values())
    # a second probe reads every row from disk: no forward pass, the same curves
    again = layer_probe(config, cache=FeatureCache(tmp_path / "probe"))
    assert again.curves["pretrained"].rows_computed == 0 and again.curves["random"].rows_computed == 0
    assert [p.val_accuracy for p in again.curves["pretrained"].points] == [p.val_accuracy for p in curve.points]
    assert ProbeResult.from_dict(result.to_dict()).to_dict() == result.to_dict()
    assert len(probe_table(result)) == 6 and result.statement()


@pytest.mark.parametrize("name,size", [("test_resnet", 32), ("test_vit", 160)])
def test_probe_other_families(image_folder, tmp_path, name, size):
    config = ExperimentConfig(dataset=DatasetSpec(str(image_folder), per_class=6),
                              backbone=BackboneSpec(name, "none"),
                              strategies=(make_strategy("feature-extraction", head_max_iter=30),), image_size=size)
    result = layer_probe(config, cache=FeatureCache(tmp_path / "c"))
    assert list(result.curves) == ["random"]  # no pretrained weights: only the random curve
    points = result.curves["random"].points
    assert len(points) == {"test_resnet": 5, "test_vit": 7}[name]
    fe = compare(config, cache=FeatureCache(tmp_path / "fe")).runs[0]
    assert points[-1].test_accuracy == fe.accuracy


@pytest.mark.slow
@pytest.mark.integration
def test_on_the_built_in_default_last_stage_equals_feature_extraction(tmp_path):
    """The bundled Fashion-MNIST with the packaged Lite0 weights (small size to keep it short)."""
    config = build_config("quick", dataset="fashion-mnist", per_class=10, strategies=["feature-extraction"],
                          image_size=48)
    result = layer_probe(config, random_weights=False, cache=FeatureCache(tmp_path / "p"))
    fe = compare(config, cache=FeatureCache(tmp_path / "fe")).runs[0]
    last = result.curves["pretrained"].points[-1]
    assert len(result.curves["pretrained"].points) == 8
    assert (last.test_accuracy, last.val_accuracy) == (fe.accuracy, fe.best_val_accuracy)
