"""Saved models: every completed run keeps its network; load_model and predict reproduce the run's own test
predictions exactly; exports (safetensors, TorchScript, ONNX) agree with torch; bad input gets a clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tlcore import build_config, compare
from tlcore.core.errors import ConfigError, DataError
from tlcore.deploy.export import export_model
from tlcore.deploy.load import load_model
from tlcore.deploy.predict import predict
from tlcore.records.models import ModelUnavailable, find_model, models_dir
from tlcore.records.store import default_store

FAST = {"epochs": 2, "batch_size": 8, "min_steps": 0, "stages": 1}


@pytest.fixture
def comparison(image_folder, tiny_weights):
    config = build_config("quick", dataset=str(image_folder), backbone="test_efficientnet", weights=str(tiny_weights),
                          per_class="all", image_size=32,
                          strategy_options={"fine-tune": FAST, "scratch": FAST,
                                            "feature-extraction": {"head_max_iter": 40}})
    return compare(config)


def _test_files(result) -> list:
    """The run's own test images, as files, in the order the run scored them."""
    from tlcore.data.load import load_dataset

    ds = load_dataset(result.config["dataset"]["source"])
    pool = ds.pools["test"]
    return [pool.paths[i] for i in result.test_indices]


def test_each_strategy_keeps_its_model_and_predict_reproduces_its_test_predictions(comparison):
    files = _test_files(comparison)
    for run in comparison.runs:
        assert run.status == "completed" and run.extra["model_sha256"]
        folder = find_model(run.run_id)
        config = json.loads((folder / "model.json").read_text())
        assert config["timm_name"] == "test_efficientnet" and config["classes"] == ["class_0", "class_1", "class_2"]
        assert config["preprocessing"]["mean"] and config["image_size"] == 32 and config["run_id"] == run.run_id
        predictions = predict(run.run_id, files)
        assert predictions.top1 == run.test_predictions, run.strategy  # exactly, every image
        frame = predictions.frame(top_k=3)
        assert list(frame.columns[:3]) == ["image", "class_1", "probability_1"]
        assert np.allclose(frame[["probability_1", "probability_2", "probability_3"]].sum(1), 1, atol=1e-4)
    fe = find_model(comparison.runs[0].run_id) / "model.safetensors"
    ft = find_model(comparison.runs[1].run_id) / "model.safetensors"
    assert fe.stat().st_size < ft.stat().st_size / 20  # feature extraction keeps its head, not a backbone copy


@pytest.mark.slow
def test_deleting_the_record_trashes_its_models_until_restored_or_purged(comparison):
    from tlcore.records.models import trash_dir

    run_id, store = comparison.runs[1].run_id, default_store()
    assert find_model(run_id).exists()
    store.delete_record(comparison.record_id)
    with pytest.raises(ModelUnavailable, match="No saved model"):
        load_model(run_id)
    assert not (models_dir() / comparison.record_id).exists() and (trash_dir() / comparison.record_id).is_dir()
    store.restore_record(comparison.record_id)
    assert load_model(run_id) is not None and not (trash_dir() / comparison.record_id).exists()
    store.delete_record(comparison.record_id)
    store.purge_trash(now=__import__("time").time() + 30 * 86400)
    assert not (trash_dir() / comparison.record_id).exists() and not (models_dir() / comparison.record_id).exists()


@pytest.mark.slow
def test_the_models_quota_counts_the_trash_and_empties_it_first(comparison, monkeypatch):
    from tlcore.records.models import enforce_quota, trash_dir

    import shutil

    live = models_dir() / "kept" / comparison.runs[1].run_id
    shutil.copytree(find_model(comparison.runs[1].run_id), live)  # a model outside the trash, as big as the largest
    default_store().delete_record(comparison.record_id)
    assert len(list(trash_dir().glob("*/*/model.json"))) == 3
    monkeypatch.setenv("TLCORE_MODELS_QUOTA", str(sum(p.stat().st_size for p in live.iterdir())))
    removed = enforce_quota()  # the trash pushes the total over the quota, and goes first
    assert len(removed) == 3 and all(trash_dir() in p.parents for p in removed) and live.is_dir()


@pytest.mark.slow
def test_models_quota_removes_the_oldest(comparison, monkeypatch, image_folder, tiny_weights):
    from tlcore.records.models import enforce_quota

    monkeypatch.setenv("TLCORE_MODELS_QUOTA", "1")
    removed = enforce_quota()
    assert len(removed) == 3 and not list(models_dir().glob("*/*/model.json"))


def test_bad_input_gets_a_clear_message(comparison, tmp_path):
    run_id = comparison.runs[2].run_id
    with pytest.raises(ModelUnavailable, match="No saved model for run 'abcdef123456'"):
        load_model("abcdef123456")
    with pytest.raises(ModelUnavailable, match="not a run id"):
        load_model("../../etc")
    folder = find_model(run_id)
    config = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(config | {"format": 99, "tlcore_version": "9.9.0"}))
    with pytest.raises(ModelUnavailable, match="saved by tlcore 9.9.0"):
        load_model(run_id)
    (folder / "model.json").write_text(json.dumps(config))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    result = predict(run_id, [text, _test_files(comparison)[0]])
    assert len(result.paths) == 1 and "is not an image" in result.skipped[0][1]
    with pytest.raises(DataError, match="does not exist"):
        predict(run_id, [tmp_path / "missing"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_grey_rgba_palette_and_16_bit_images_are_converted_as_in_training(comparison, tmp_path, mode):
    from tlcore.data.dataset import to_rgb

    model, preprocessing = load_model(comparison.runs[2].run_id)
    rgb = Image.open(_test_files(comparison)[0]).convert("RGB")
    image = rgb.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    path = tmp_path / f"x.{'png'}"
    image.save(path)
    assert torch.equal(preprocessing(path), preprocessing(to_rgb(Image.open(path))))


@pytest.mark.slow
def test_an_image_over_the_pixel_limit_is_refused(comparison, tmp_path):
    _, preprocessing = load_model(comparison.runs[0].run_id)
    preprocessing.max_pixels = 100
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(path)
    with pytest.raises(DataError, match="megapixels"):
        preprocessing(path)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx"])
def test_exports_agree_with_torch(comparison, tmp_path, fmt):
    run = comparison.runs[1]
    files = export_model(run.run_id, fmt, tmp_path / fmt)
    assert {p.name for p in files} >= {"model.json", "MODEL_CARD.md"}
    card = (tmp_path / fmt / "MODEL_CARD.md").read_text()
    assert f"{run.accuracy:.3f}" in card and "95% interval" in card and "Limitations" in card
    model, preprocessing = load_model(run.run_id)
    x = torch.cat([preprocessing(p) for p in _test_files(comparison)])
    with torch.inference_mode():
        expected = model(x)
    if fmt == "torchscript":
        got = torch.jit.load(str(tmp_path / fmt / "model.pt"))(x)
    elif fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(tmp_path / fmt / "model.onnx"))
        got = torch.from_numpy(session.run(None, {"image": x.contiguous().numpy()})[0])
    else:
        from safetensors.torch import load_file

        state = load_file(str(tmp_path / fmt / "model.safetensors"))
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        return
    assert got.argmax(1).tolist() == expected.argmax(1).tolist() == run.test_predictions
    # within 1e-4 of torch's logits, relative to their scale (this tiny model's logits reach about 50; the packaged
    # Lite0's are within 1e-4 absolute: tests/test_integration.py)
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


@pytest.mark.slow
def test_export_to_onnx_without_its_packages_says_what_to_install(comparison, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ConfigError, match="requirements-export.txt"):
        export_model(comparison.runs[0].run_id, "onnx", tmp_path / "x")
