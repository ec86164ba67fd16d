"""Journeys with a comparison's models on the dashboard, in headless Chromium against a real `streamlit run app.py`
serving a stored comparison read-only (the tiny test_efficientnet at 32 px; one server for the module). Each test
asserts what the page shows and saves a screenshot (tests/artifacts/).

    predict a .zip of 50 images: the CSV downloaded is the one `python -m tlcore predict` writes for its folder
    download a model exported to ONNX: a valid ONNX model with model.json and MODEL_CARD.md
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

from conftest import make_image_folder
from test_browser import CHROMIUM, _serve
from test_journeys import _tiny_run, browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM or not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed; .ci/run installs it")]


@pytest.fixture(scope="module")
def deploy_server(tmp_path_factory, tiny_weights):
    """A stored comparison (feature extraction and fine-tune) behind a read-only server: (url, result, home)."""
    from tlcore import build_config, compare
    from tlcore.engine import features

    home = tmp_path_factory.mktemp("deploy-home")
    data = make_image_folder(tmp_path_factory.mktemp("deploy-data") / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLCORE_HOME", str(home))
        patch.setenv("TLCORE_OFFLINE", "1")
        patch.setattr(features, "_DEFAULT_CACHE", None)
        result = compare(build_config("quick", per_class="all", strategies=["feature-extraction", "fine-tune"],
                                      **_tiny_run(data, tiny_weights)))
    roots = str(tmp_path_factory.getbasetemp())  # the tiny weights file lies there: feature extraction needs it
    for url in _serve(home, TLCORE_READ_ONLY="1", TLCORE_DATA_ROOTS=roots):
        yield url, result, home


def _zip_of(folder: Path, top: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def _open_record(page, url: str, record_id: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + f"/History?run={record_id}", wait_until="networkidle")
    expect(page.get_by_text("Try it", exact=True)).to_be_visible(timeout=60_000)


def test_predict_a_zip_of_50_images_and_download_the_csv_the_cli_writes(deploy_server, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    from tlcore.cli import main

    url, result, home = deploy_server
    photos = make_image_folder(tmp_path / "photos", classes=5, per_class=10, seed=3)  # 50 images, 5 sub-folders
    (photos / "class_0" / "broken.png").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("not an image either")
    fine_tune = result.run("fine-tune")
    with browser_page("journey-predict-zip", height=3800) as page:
        _open_record(page, url, result.record_id)
        page.get_by_text("Many images: a .zip", exact=True).click()
        expect(page.get_by_text(re.compile(r"^Up to 200 images a \.zip \(this read-only demo"))).to_be_visible(
            timeout=30_000)
        assert page.get_by_text("Folder on this server").count() == 0  # a read-only demo reads no server folder
        page.get_by_role("combobox", name="Model", exact=True).click()
        page.get_by_role("option", name=re.compile(r"^fine-tune \(test accuracy")).click()
        page.locator("[class*='st-key-bulk_zip_'] input[type='file']").set_input_files(
            {"name": "photos.zip", "mimeType": "application/zip", "buffer": _zip_of(photos, "photos")})
        uploader = page.locator("[class*='st-key-bulk_zip_']")
        expect(uploader.get_by_text("photos.zip")).to_be_visible(timeout=20_000)
        expect(uploader.get_by_test_id("stFileChipIconSpinner")).to_have_count(0, timeout=30_000)  # uploaded
        page.get_by_role("button", name="Predict", exact=True).click()
        expect(page.get_by_text(re.compile(r"^50 images of 'photos\.zip' predicted by fine-tune"))).to_be_visible(
            timeout=60_000)
        expect(page.get_by_text(re.compile(r"^2 file\(s\) could not be used: 1 not an image file \(notes\.txt\), "
                                           r"1 not readable by Pillow \(class_0/broken\.png\)"))).to_be_visible()
        # the comparison's table, then the predictions and the files not used
        expect(page.locator("[data-testid='stDataFrame']")).to_have_count(3)
        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name="Download the predictions (CSV)").click()
        downloaded = Path(download.value.path()).read_text()
    monkeypatch.setenv("TLCORE_HOME", str(home))
    assert main(["predict", "--run", fine_tune.run_id, str(photos), "--out", str(tmp_path / "cli.csv")]) == 0
    assert downloaded == (tmp_path / "cli.csv").read_text()
    rows = downloaded.splitlines()
    assert len(rows) == 51 and rows[1].startswith("class_0/img_000.png,") and str(tmp_path) not in downloaded


def test_download_a_model_exported_to_onnx(deploy_server):
    from playwright.sync_api import expect

    onnx = pytest.importorskip("onnx")
    url, result, _ = deploy_server
    fine_tune = result.run("fine-tune")
    with browser_page("journey-export-onnx", height=3000) as page:
        _open_record(page, url, result.record_id)
        page.get_by_text("Download the models").click()
        button = page.locator(f"[class*='st-key-export_onnx_'][class*='{fine_tune.run_id}']").get_by_role(
            "button", name="ONNX (.zip)")
        expect(button).to_be_visible(timeout=30_000)
        expect(page.get_by_text(f"fine-tune (run {fine_tune.run_id})")).to_be_visible()
        with page.expect_download(timeout=120_000) as download:
            button.click()
        archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
        assert download.value.suggested_filename == f"tlcore-{fine_tune.run_id}-onnx.zip"
    assert {"model.onnx", "model.json", "MODEL_CARD.md"} <= set(archive.namelist())
    onnx.checker.check_model(onnx.load(io.BytesIO(archive.read("model.onnx"))))
    assert f"Run `{fine_tune.run_id}`" in archive.read("MODEL_CARD.md").decode()
