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


# ------------------------------------------------------------------------------------- predicting many images at once
@pytest.fixture
def head_only(image_folder, tiny_weights):
    """A stored comparison of feature extraction alone: a saved model in seconds."""
    config = build_config("quick", dataset=str(image_folder), backbone="test_efficientnet", weights=str(tiny_weights),
                          per_class="all", image_size=32, strategies=["feature-extraction"],
                          strategy_options={"feature-extraction": {"head_max_iter": 40}})
    return compare(config)


def test_predict_decodes_batch_by_batch_reports_progress_and_gives_the_same_logits(head_only, image_folder):
    from tlcore.deploy.predict import predict_images

    model, preprocessing = load_model(head_only.runs[0].run_id)
    files = sorted(image_folder.rglob("*.png"))  # 36 images: 9 batches of 4
    reference = [preprocessing.pixels(preprocessing.open(f)) for f in files]
    with torch.inference_mode():  # the former way: every image decoded first, then the batches
        expected = torch.cat([model(preprocessing.normalize(torch.stack(reference[i:i + 4]))).float()
                              for i in range(0, len(reference), 4)])
    decoded, decoded_at_forward, reports = [0], [], []
    pixels = preprocessing.pixels

    def counting_pixels(image):
        decoded[0] += 1
        return pixels(image)

    preprocessing.pixels = counting_pixels
    model.register_forward_pre_hook(lambda module, args: decoded_at_forward.append(decoded[0]))
    result = predict_images(model, preprocessing, files, model.tlcore_config.classes, batch_size=4,
                            progress=lambda done, total, seconds: reports.append((done, total, seconds)))
    assert torch.equal(result.logits, expected) and result.paths == [str(f) for f in files]
    # each batch reaches the model as soon as it is decoded: never more than one batch of images waits
    assert decoded_at_forward[:9] == [4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert [done for done, _, _ in reports] == [4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert {total for _, total, _ in reports} == {36}
    seconds = [s for _, _, s in reports]
    assert seconds == sorted(seconds) and seconds[0] > 0


def test_progress_reaches_the_total_when_the_last_files_are_skipped(head_only, image_folder, tmp_path):
    from tlcore.deploy.predict import predict_images

    model, preprocessing = load_model(head_only.runs[0].run_id)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    reports = []
    files = sorted(image_folder.rglob("*.png"))[:5] + [broken]
    result = predict_images(model, preprocessing, files, model.tlcore_config.classes, batch_size=4,
                            progress=lambda done, total, seconds: reports.append((done, total)))
    assert len(result.paths) == 5 and result.skipped[0][0] == str(broken)
    assert reports == [(4, 6), (6, 6)]


def _zip(files: dict) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_and_the_folder_it_holds_give_the_same_rows_named_inside_them(head_only, image_folder, tmp_path):
    """The dashboard's zip and `tlcore predict` on the folder: the same CSV, files named by their path inside the
    folder (the zip's single top folder left out), the same files left out; no server path in either."""
    from tlcore.deploy.images import zip_images
    from tlcore.deploy.predict import predict_named

    (image_folder / "class_0" / "notes.txt").write_text("not an image")
    (image_folder / "class_1" / "a-b.png").write_bytes((image_folder / "class_1" / "img_000.png").read_bytes())
    (image_folder / ".hidden.png").write_bytes(b"ignored")
    data = _zip({f"photos/{p.relative_to(image_folder).as_posix()}": p.read_bytes()
                 for p in image_folder.rglob("*") if p.is_file()})
    model, preprocessing = load_model(head_only.runs[0].run_id)
    images, skipped = zip_images(data, "photos.zip", max_images=200)
    from_zip = predict_named(model, preprocessing, images, skipped, "'photos.zip'")
    from_folder = predict(head_only.runs[0].run_id, [image_folder])
    assert from_zip.frame(3).to_csv(index=False) == from_folder.frame(3).to_csv(index=False)
    assert from_zip.paths[:2] == ["class_0/img_000.png", "class_0/img_001.png"] and len(from_zip.paths) == 37
    assert from_zip.skipped == from_folder.skipped == [("class_0/notes.txt", "not an image file (by extension)")]
    assert str(tmp_path) not in from_folder.frame(3).to_csv(index=False)


@pytest.mark.parametrize("entries, message", [
    ({"../evil/a.png": b"x"}, "'bad.zip' contains the entry '../evil/a.png', which points outside the archive"),
    ({"/etc/a.png": b"x"}, "'bad.zip' contains the entry '/etc/a.png', which points outside the archive"),
    ({"a.png": b"x", "b.png": b"x", "c.png": b"x"}, "'bad.zip' holds 3 images; at most 2 are predicted at once"),
    ({"bomb.png": bytes(2**20)}, "'bad.zip' contains 'bomb.png', which looks like a zip bomb"),
    ({"notes.txt": b"x"}, "'bad.zip' holds no image files (1 other files). Zip JPEG, PNG"),
    (None, "'bad.zip' is not a readable .zip archive"),
], ids=["dot-dot", "absolute", "too-many", "bomb", "no-images", "not-a-zip"])
def test_a_hostile_or_unusable_zip_is_refused_naming_the_archive_and_the_entry(entries, message):
    from tlcore.deploy.images import zip_images

    data = _zip(entries) if entries is not None else b"this is not a zip" * 10
    with pytest.raises(DataError) as exc:
        zip_images(data, "bad.zip", max_images=2)
    assert str(exc.value).startswith(message)


def test_a_symbolic_link_in_a_zip_refuses_it():
    import io
    import stat
    import zipfile

    from tlcore.deploy.images import zip_images

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("photos/a.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match="contains a symbolic link 'photos/a.png'; links are refused"):
        zip_images(buffer.getvalue(), "links.zip", max_images=10)


def _gif(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF whose screen is small and whose first frame claims `frame`: Pillow runs its decompression-bomb check
    while reading the header (a warning from 89 megapixels, an error from 179)."""
    import struct

    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return head + b"," + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x4c\x01\x00;"


@pytest.mark.parametrize("side", [12_000, 30_000], ids=["pillow-warns", "pillow-refuses"])
def test_pillows_decompression_bomb_check_becomes_the_pixel_rule(side):
    import io
    import warnings

    import timm

    from tlcore.deploy.load import Preprocessing
    from tlcore.engine.backbone import data_config

    upload = io.BytesIO(_gif((100, 100), (side, side)))
    upload.name = "frames.gif"
    preprocessing = Preprocessing(data_config(timm.create_model("test_efficientnet"), 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping would fail here
        with pytest.raises(DataError) as exc:
            preprocessing.open(upload)
    size = f"{side} x {side} = " if side == 12_000 else ""  # above Pillow's error only the count is known
    assert str(exc.value) == (f"'frames.gif' is {size}{side * side // 1_000_000} megapixels; the limit is 50 "
                              "megapixels an image. Downscale it first.")


@pytest.mark.slow
def test_the_export_download_holds_what_tlcore_export_writes(head_only):
    import io
    import zipfile

    onnx = pytest.importorskip("onnx")
    from tlcore.deploy.export import export_archive

    with zipfile.ZipFile(io.BytesIO(export_archive(head_only.runs[0].run_id, "onnx"))) as zf:
        assert sorted(zf.namelist()) == ["MODEL_CARD.md", "export.json", "model.json", "model.onnx"]
        onnx.checker.check_model(onnx.load_from_string(zf.read("model.onnx")))
        assert json.loads(zf.read("model.json"))["run_id"] == head_only.runs[0].run_id


@pytest.mark.slow
def test_the_page_says_which_install_line_adds_onnx_export_when_its_packages_are_missing(head_only, monkeypatch):
    import importlib.util
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnx", "onnxscript") else real(name, *a))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "4_History.py"), default_timeout=120)
    at.query_params["run"] = head_only.record_id
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    labels = [b.label for b in at.get("download_button")]
    assert "TorchScript (.zip)" in labels and "safetensors (.zip)" in labels and "ONNX (.zip)" not in labels
    said = " ".join(i.value for i in at.info)
    assert "ONNX export needs onnx and onnxscript" in said and "pip install -r requirements-export.txt" in said


@pytest.mark.slow
def test_a_writable_server_predicts_a_folder_under_its_data_roots_and_refuses_one_outside(head_only, image_folder,
                                                                                          monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TLCORE_SERVING", "1")  # as app.py marks the dashboard's process: paths come from visitors
    key = f"shared_{head_only.record_id}"
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "4_History.py"), default_timeout=120)
    at.query_params["run"] = head_only.record_id
    at.run()
    at.radio(key=f"try_src_{key}").set_value("Many images: a .zip or a folder").run()
    at.radio(key=f"bulk_source_{key}").set_value("Folder on this server").run()
    assert any("Up to 20,000 images, sub-folders included" in c.value for c in at.caption)
    at.text_input(key=f"bulk_folder_{key}").set_value("/etc").run()
    at.button(key=f"bulk_go_{key}").click().run()
    assert "The folder '/etc' is outside the folders this server may read" in at.error[0].value
    at.text_input(key=f"bulk_folder_{key}").set_value(str(image_folder)).run()
    at.button(key=f"bulk_go_{key}").click().run()
    assert not at.exception and not at.error
    assert any(s.value.startswith(f"36 images of '{image_folder}' predicted by feature-extraction") for s in at.success)
    table = at.dataframe[-1].value
    assert len(table) == 36 and table["image"].iloc[0] == "class_0/img_000.png"
    assert "Download the predictions (CSV)" in [b.label for b in at.get("download_button")]
