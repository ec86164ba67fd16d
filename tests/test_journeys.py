"""Journeys a person takes through the dashboard, in headless Chromium against a real `streamlit run app.py`: each
test asserts what the page shows, and saves a screenshot (tests/artifacts/, and *-FAILED.png when it fails).

    upload a zip, open its dataset card, run it          hostile uploads through the page, each with its message
    a second job cancelled                               a read-only demo: nothing to run, measure or type a path in
    a server on the LAN asks for its token
"""

from __future__ import annotations

import io
import re
import zipfile
from contextlib import contextmanager

import pytest

from test_browser import ARTIFACTS, CHROMIUM, _launch, _serve

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM or not __import__("pathlib").Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed; .ci/run installs it")]


@contextmanager
def browser_page(name: str, width: int = 1400, height: int = 1600):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            yield page
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"{name}-FAILED.png"), full_page=True)
            raise
        finally:
            browser.close()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _dataset_zip(folder) -> bytes:
    return _zip({f"flowers/{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(folder.rglob("*.png"))})


def _bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("data/cat/big.png", "w", force_zip64=True) as out:
            zero = bytes(1 << 20)
            for _ in range(200):  # 200 MiB of zeros in about 200 kB
                out.write(zero)
    return buffer.getvalue()


def _open_compare_with_upload(page, url: str, name: str, data: bytes) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/Compare", wait_until="networkidle")
    expect(page.get_by_text("Compare strategies")).to_be_visible(timeout=30_000)
    page.get_by_text("Upload a .zip").click()
    page.locator("input[type='file']").set_input_files({"name": name, "mimeType": "application/zip", "buffer": data})
    expect(page.get_by_text(name).first).to_be_visible(timeout=20_000)


@pytest.fixture
def server(tmp_path):
    yield from _serve(tmp_path / "home")


def _choose_tiny_model(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("combobox", name="Backbone (type to search timm's models)").click()
    page.keyboard.type("test_efficientnet")
    page.get_by_role("option", name="test_efficientnet ").first.click()
    page.get_by_text("none (random init)").click()
    expect(page.get_by_text("Random weights:")).to_be_visible(timeout=10_000)


def test_upload_a_zip_open_its_card_and_run_it(server, image_folder):
    from playwright.sync_api import expect

    with browser_page("journey-upload") as page:
        _open_compare_with_upload(page, server, "flowers.zip", _dataset_zip(image_folder))
        page.get_by_text("Show the dataset card").click()
        expect(page.get_by_text("3 classes").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("In training and in val/test: none")).to_be_visible()
        _choose_tiny_model(page)
        page.get_by_role("button", name="Run").click()
        expect(page.get_by_text("Results", exact=True)).to_be_visible(timeout=240_000)
        expect(page.get_by_text(re.compile(r"^flowers\.zip: 3 classes, \d+ training images"))).to_be_visible(
            timeout=30_000)
        assert "/uploads/" not in page.locator("body").inner_text()  # the server's paths stay private


@pytest.mark.parametrize("name, data, message", [
    ("bomb.zip", None, "looks like a zip bomb"),
    ("traversal.zip", _zip({"../evil/cat/a.png": b"x"}), "would be written outside the dataset folder"),
    ("notazip.zip", b"this is not a zip file at all" * 10, "is not a readable .zip archive"),
], ids=["ratio-bomb", "traversal", "not-a-zip"])
def test_hostile_uploads_get_their_message(server, name, data, message):
    from playwright.sync_api import expect

    with browser_page(f"journey-hostile-{name[:-4]}") as page:
        _open_compare_with_upload(page, server, name, data if data is not None else _bomb())
        page.get_by_text("Show the dataset card").click()
        expect(page.get_by_text(message)).to_be_visible(timeout=60_000)


def test_a_second_job_is_cancelled_and_says_so(server):
    from playwright.sync_api import expect

    with browser_page("journey-cancel") as page:
        page.goto(server + "/Compare", wait_until="networkidle")
        expect(page.get_by_text("Compare strategies")).to_be_visible(timeout=30_000)
        page.get_by_text("Default", exact=True).click()  # scratch for 20 epochs: long enough to cancel
        _choose_tiny_model(page)
        page.get_by_role("button", name="Run").click()
        expect(page.get_by_text(re.compile(r"^Job \w+: (queued|running)"))).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_text(re.compile(r"This comparison was cancelled\..*What finished is kept below\."))
               ).to_be_visible(timeout=120_000)


@pytest.fixture
def read_only_server(tmp_path, image_folder, tiny_weights, monkeypatch):
    from tlcore import build_config, compare

    home = tmp_path / "demo-home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    record = compare(build_config("quick", dataset=str(image_folder), backbone="test_efficientnet",
                                  weights=str(tiny_weights), strategies=["feature-extraction"], per_class="all",
                                  image_size=32)).record_id
    for url in _serve(home, TLCORE_READ_ONLY="1"):
        yield url, record


def test_read_only_demo_offers_nothing_to_run_measure_or_type_a_path_into(read_only_server):
    from playwright.sync_api import expect

    url, record = read_only_server
    with browser_page("journey-read-only") as page:
        page.goto(url + f"/History?run={record}", wait_until="networkidle")
        expect(page.get_by_text(f"?run={record}").first).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="HTML report")).to_be_visible()
        for path in ("/Compare", "/Sweep", "/Recommend", "/History"):
            page.goto(url + path, wait_until="networkidle")
            page.wait_for_timeout(1500)
            text = page.locator("[data-testid='stMain']").inner_text()
            assert "Folder on this server" not in text and "local file" not in text, path
            assert page.get_by_role("button", name=re.compile(r"^(Run|Run sweep|Measure.*|Delete|Import)$")
                                    ).count() == 0, path
            assert page.locator("input[type='file']").count() == 0, path
            typed = [i for i in page.locator("input[type='text']").all() if i.is_visible()]
            labels = [i.get_attribute("aria-label") or "" for i in typed]
            assert not [lab for lab in labels if re.search(r"path|folder|file", lab, re.I)], (path, labels)
        page.goto(url + "/Compare", wait_until="networkidle")
        expect(page.get_by_text("This is a read-only demo")).to_be_visible(timeout=30_000)


@pytest.fixture
def lan_server(tmp_path):
    yield from _serve(tmp_path / "home", TLCORE_TOKEN="journey-token", _ADDRESS="0.0.0.0")


def test_a_lan_server_asks_for_its_token_then_keeps_it(lan_server):
    from playwright.sync_api import expect

    with browser_page("journey-token") as page:
        page.goto(lan_server + "/Compare", wait_until="networkidle")
        expect(page.get_by_text("Access token needed")).to_be_visible(timeout=30_000)
        assert page.get_by_role("button", name="Run").count() == 0
        page.goto(lan_server + "/Compare?token=wrong", wait_until="networkidle")
        expect(page.get_by_text("Access token needed")).to_be_visible(timeout=30_000)
        page.goto(lan_server + "/?token=journey-token", wait_until="networkidle")
        expect(page.get_by_text("Feature extraction, fine-tuning or training from scratch?")).to_be_visible(
            timeout=30_000)
        assert "token=" not in page.url  # taken off the address bar once accepted
        page.get_by_role("link", name=re.compile("Compare$")).first.click()
        expect(page.get_by_text("Compare strategies")).to_be_visible(timeout=30_000)  # kept for the session


def _tiny_run(image_folder, tiny_weights) -> dict:
    """The options of a stored record made in seconds: the tiny model at 32 px, one epoch of each network run."""
    fast = {"epochs": 1, "batch_size": 8, "min_steps": 0, "stages": 1}
    return {"dataset": str(image_folder), "backbone": "test_efficientnet", "weights": str(tiny_weights),
            "image_size": 32, "strategy_options": {"fine-tune": fast, "scratch": fast}}


@pytest.fixture
def stored_comparison_server(tmp_path, image_folder, tiny_weights, monkeypatch):
    from tlcore import build_config, compare

    home = tmp_path / "try-home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    config = build_config("quick", per_class="all", **_tiny_run(image_folder, tiny_weights))
    result = compare(config)
    from tlcore.advice.probe import layer_probe, save_probe

    probe = layer_probe(config)
    save_probe(probe, config, True)
    result.probe = probe
    for url in _serve(home, TLCORE_READ_ONLY="1"):
        yield url, result


def test_try_it_shows_three_predictions_and_three_maps_on_an_uploaded_image(stored_comparison_server, image_folder):
    from playwright.sync_api import expect

    url, result = stored_comparison_server
    photo = next((image_folder / "class_2").iterdir())
    with browser_page("journey-try-it", height=2600) as page:
        page.goto(url + f"/History?run={result.record_id}", wait_until="networkidle")
        expect(page.get_by_text("Try it", exact=True)).to_be_visible(timeout=60_000)
        page.get_by_text("Upload (up to 16)").click()
        page.locator("input[type='file']").last.set_input_files(str(photo))
        for strategy in ("feature-extraction", "fine-tune", "scratch"):
            expect(page.get_by_text(f"{strategy}: where it looks")).to_be_visible(timeout=60_000)
        maps = page.locator("[data-testid='stImage'] img")
        expect(maps).to_have_count(4, timeout=30_000)  # the image itself, then one map per strategy
        top3 = page.locator("li").filter(has_text=re.compile(r"^class_\d \d+\.\d%$"))
        expect(top3).to_have_count(9)  # three classes with probabilities for each of the three strategies


def test_a_comparison_and_a_probe_open_in_anatomy(stored_comparison_server):
    """From a stored comparison's share link to Anatomy at its backbone, size and fine-tune depth, with what each
    stage sees; then a stored probe's share link, its curve, and on to Anatomy with the same probe."""
    from playwright.sync_api import expect

    url, result = stored_comparison_server
    with browser_page("journey-record-to-anatomy", height=2600) as page:
        page.goto(url + f"/History?run={result.record_id}", wait_until="networkidle")
        link = page.get_by_role("link", name=re.compile("Open this backbone in Anatomy"))
        expect(link).to_be_visible(timeout=60_000)
        # the curves say when val passes ran in bf16 (a CPU with AVX512-BF16 or AMX; fp32 elsewhere)
        curves = page.locator(".js-plotly-plot").filter(has_text="network training").first
        expect(curves).to_contain_text("val accuracy", timeout=60_000)
        if any(r.extra.get("val_precision") == "bf16" for r in result.runs):
            expect(curves).to_contain_text("val passes in bf16")
        else:
            expect(curves).not_to_contain_text("bf16")
        page.screenshot(path=str(ARTIFACTS / "journey-record-curves.png"), full_page=True)
        link.click()
        expect(page.get_by_text("Anatomy: what each strategy trains")).to_be_visible(timeout=30_000)
        diagram = page.locator(".js-plotly-plot").first
        expect(diagram).to_contain_text("test_efficientnet at 32 px: fine-tune, top 1 stage", timeout=60_000)
        seen = page.locator(".js-plotly-plot").nth(1)
        expect(seen).to_contain_text("What each stage sees in fashion-mnist test image #0", timeout=60_000)
        expect(seen).to_contain_text("(trainable)")  # the top stage, under fine-tune K=1
        expect(seen).to_contain_text("(frozen)")
    probe = result.probe
    with browser_page("journey-probe-share", height=2200) as page:
        page.goto(url + f"/History?run={probe.record_id}", wait_until="networkidle")
        expect(page.get_by_text(f"Layer-wise probe {probe.record_id}")).to_be_visible(timeout=60_000)
        expect(page.get_by_text(probe.statement()[:40])).to_be_visible()
        expect(page.locator(".js-plotly-plot").first).to_contain_text("Linear probe accuracy by depth")
        expect(page.get_by_role("button", name="HTML report")).to_be_visible()
        page.get_by_role("link", name=re.compile("Open in Anatomy")).click()
        expect(page.get_by_text(f"Stored probe {probe.record_id}")).to_be_visible(timeout=60_000)
        expect(page.locator(".js-plotly-plot").last).to_contain_text("Linear probe accuracy by depth")


def test_anatomy_switching_strategy_changes_the_frozen_part(server):
    from playwright.sync_api import expect

    with browser_page("journey-anatomy", height=2000) as page:
        page.goto(server + "/Anatomy", wait_until="networkidle")  # a link may not ask for test_efficientnet: the form
        expect(page.get_by_text("Anatomy: what each strategy trains")).to_be_visible(timeout=30_000)
        _choose_tiny_model(page)
        size = page.get_by_role("spinbutton", name="Image size (px)")
        size.fill("32")
        size.press("Enter")
        trains = page.get_by_text(re.compile(r"parameters, [\d,]+ multiply-adds an image"))
        expect(trains).to_be_visible(timeout=60_000)

        def counts() -> tuple[int, int]:
            """(trainable, total) from one reading of the caption: the page may still be redrawing the model."""
            text = trains.inner_text()
            return tuple(int(re.search(pattern, text).group(1).replace(",", ""))
                         for pattern in (r"([\d,]+) train under", r"^([\d,]+) parameters"))

        seen, total = {}, None
        for strategy in ("feature-extraction", "fine-tune", "scratch"):
            page.get_by_text(strategy, exact=True).first.click()
            expect(trains).to_contain_text("train under", timeout=30_000)
            page.wait_for_timeout(1500)
            seen[strategy], total = counts()
            stages = page.locator(".js-plotly-plot").nth(1)  # what each stage sees, titled by what trains
            expect(stages).to_contain_text("What each stage sees")
            if strategy == "feature-extraction":
                expect(stages).not_to_contain_text("(trainable)")
            if strategy == "scratch":
                expect(stages).not_to_contain_text("(frozen)")
        assert seen["feature-extraction"] < seen["fine-tune"] < seen["scratch"] == total, seen


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, "PNG")  # 1-bit zeros: a huge image in a few kB
    return buffer.getvalue()


@pytest.mark.parametrize("name, data, message", [
    ("bomb.png", None, "'bomb.png' is 10000 x 10000 = 100 megapixels; the limit is"),
    ("notes.png", b"this is not an image" * 20, "'notes.png' is not an image Pillow can read"),
], ids=["pixel-bomb", "not-an-image"])
def test_anatomy_sample_upload_refuses_hostile_files(server, name, data, message):
    """The Anatomy page's sample-image upload: a 10,000 x 10,000 PNG of a few kB and a text file named .png each get
    their message; the page keeps working (the diagram stays)."""
    from playwright.sync_api import expect

    with browser_page(f"journey-anatomy-upload-{name[:-4]}", height=1800) as page:
        page.goto(server + "/Anatomy?backbone=tf_efficientnet_lite0&image_size=32", wait_until="networkidle")
        expect(page.get_by_text("Anatomy: what each strategy trains")).to_be_visible(timeout=30_000)
        page.get_by_text("Upload an image").click()
        payload = data if data is not None else _png(10_000, 10_000)
        page.locator("input[type='file']").first.set_input_files({"name": name, "mimeType": "image/png",
                                                                   "buffer": payload})
        expect(page.get_by_text(message)).to_be_visible(timeout=60_000)
        expect(page.locator(".js-plotly-plot").first).to_contain_text("tf_efficientnet_lite0 at 32 px")


@pytest.fixture
def stored_sweep_server(tmp_path, image_folder, tiny_weights, monkeypatch):
    """A finished sweep whose preset runs scratch only from its long schedule's size (as the default sweep does)."""
    from tlcore import run_sweep
    from tlcore.experiments.config import SweepConfig, build_sweep_config

    home = tmp_path / "sweep-home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    base = build_sweep_config("quick", **_tiny_run(image_folder, tiny_weights))
    config = SweepConfig(base.experiment, sizes=(2, 4, 6), repeats=1, long_from=4,
                         long_strategies=base.experiment.strategies, long_only=("scratch",))
    sweep = run_sweep(config)
    for url in _serve(home, TLCORE_READ_ONLY="1"):
        yield url, sweep


def test_a_sweep_says_which_cells_it_does_not_run(stored_sweep_server, server):
    """The default sweep preset runs scratch only from 50 a class: the form counts the cells it will run and says
    why scratch is not run below; a stored sweep like it says the same above its charts, and its learning curves
    draw scratch only where it ran."""
    from playwright.sync_api import expect

    with browser_page("journey-sweep-form", height=1800) as page:
        page.goto(server + "/Sweep", wait_until="networkidle")
        expect(page.get_by_text("Accuracy vs images per class")).to_be_visible(timeout=30_000)
        page.get_by_text("Default", exact=True).click()
        expect(page.get_by_text("5 sizes x 2 repeats x 3 strategies, less 6 not run = 24 cells.")).to_be_visible(
            timeout=30_000)
        expect(page.get_by_text(re.compile(r"^scratch runs only from 50 images a class in this sweep.*"
                                           r"\(5, 10, 25 a class\)"))).to_be_visible()
        expect(page.get_by_text("Scratch: max epochs (it runs from 50 a class only)")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "journey-sweep-form-default.png"), full_page=True)
        page.get_by_text("Quick", exact=True).click()  # the quick preset runs every strategy everywhere
        expect(page.get_by_text("4 sizes x 1 repeats x 3 strategies = 12 cells.")).to_be_visible(timeout=30_000)
        # the old caption stays on the page, faded, until the rerun ends, and the rerun estimates the time (seconds)
        expect(page.get_by_text(re.compile("^scratch runs only from"))).to_have_count(0, timeout=60_000)
    url, sweep = stored_sweep_server
    with browser_page("journey-sweep-not-run", height=2600) as page:
        page.goto(url + f"/History?run={sweep.record_id}", wait_until="networkidle")
        expect(page.get_by_text(re.compile(r"^scratch runs only from 4 images a class in this sweep.*\(2 a class\)"))
               ).to_be_visible(timeout=60_000)
        curves = page.locator(".js-plotly-plot").first
        expect(curves).to_contain_text("scratch", timeout=60_000)
        expect(page.get_by_text(re.compile(r"Training from scratch did not come within 1 point .* anywhere between "
                                           r"4 images a class and 6 images a class|From 4 images a class, training "
                                           r"from scratch"))).to_be_visible()
