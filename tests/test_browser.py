"""End to end in a real browser: `streamlit run app.py`, headless Chromium (Debian's, driven by Playwright), the
quick preset with a tiny timm model, Run, and the results table. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed; .ci/run "
                                 "installs it (apt-get install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    yield from _serve(tmp_path / "home")


def _serve(home: Path, _ADDRESS: str = "127.0.0.1", **env_vars):
    """A fresh `streamlit run app.py` on a free port over `home` (bound to `_ADDRESS`; the tests only ever connect
    to 127.0.0.1); yields its URL, stops it afterwards."""
    port = _free_port()
    env = dict(os.environ, TLCORE_HOME=str(home), TLCORE_OFFLINE="1", **env_vars)
    env.pop("TLCORE_SERVING", None)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", _ADDRESS, "--server.headless", "true"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    try:
        yield url
    finally:  # also when a test fails inside `for url in _serve(...)`: no server outlives its test
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_quick_preset_with_tiny_model_in_chromium(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="networkidle")
        expect(page.get_by_text("Feature extraction, fine-tuning or training from scratch?")).to_be_visible(
            timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

        page.goto(server + "/Compare", wait_until="networkidle")
        expect(page.get_by_text("Compare strategies")).to_be_visible(timeout=30_000)
        page.get_by_text("Quick", exact=True).click()
        dataset = page.get_by_role("combobox", name="Built-in dataset")
        dataset.click()
        page.keyboard.type("digits")
        page.keyboard.press("Enter")
        backbone = page.get_by_role("combobox", name="Backbone (type to search timm's models)")
        backbone.click()
        page.keyboard.type("test_efficientnet")
        page.get_by_role("option", name="test_efficientnet ").first.click()
        page.get_by_text("none (random init)").click()
        expect(page.get_by_text("Random weights:")).to_be_visible(timeout=10_000)
        page.get_by_role("button", name="Run").click()
        expect(page.get_by_text(re.compile(r"^Job \w+: (queued|running)"))).to_be_visible(timeout=30_000)
        page.set_viewport_size({"width": 1400, "height": 2400})
        page.screenshot(path=str(ARTIFACTS / "compare-running.png"))
        expect(page.get_by_text("Results", exact=True)).to_be_visible(timeout=240_000)
        table = page.locator("[data-testid='stDataFrame']").first
        expect(table).to_be_visible(timeout=30_000)
        page.set_viewport_size({"width": 1400, "height": 4200})  # streamlit scrolls inside its own container
        page.wait_for_timeout(2500)
        page.screenshot(path=str(ARTIFACTS / "compare-results.png"))
        assert "job=" in page.url
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.reload(wait_until="networkidle")  # a refresh keeps the job: its id is in the link
        expect(page.get_by_text("Results", exact=True)).to_be_visible(timeout=30_000)
        expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible(timeout=30_000)
        browser.close()


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def test_first_request_a_share_link_shows_exactly_the_pages(tmp_path, image_folder, tiny_weights, monkeypatch):
    """Helpers outside pages/: a fresh server whose first request is /History?run=<id> lists exactly the seven pages
    (Streamlit serves every .py in pages/ as a page on a deep link, before app.py has run)."""
    from playwright.sync_api import expect, sync_playwright

    from tlcore import build_config, compare

    home = tmp_path / "shared-home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    fast = {"epochs": 1, "batch_size": 8, "min_steps": 0}
    config = build_config("quick", dataset=str(image_folder), backbone="test_efficientnet", weights=str(tiny_weights),
                          strategies=["feature-extraction", "scratch"], per_class="all", image_size=32,
                          strategy_options={"scratch": fast})
    record_id = compare(config).record_id
    ARTIFACTS.mkdir(exist_ok=True)
    for url in _serve(home):
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            try:
                page.goto(f"{url}/History?run={record_id}", wait_until="networkidle")
                expect(page.get_by_text(f"?run={record_id}").first).to_be_visible(timeout=30_000)
                nav = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink'] a")
                expect(nav).to_have_count(8, timeout=10_000)
                titles = [text.split()[-1] for text in nav.all_inner_texts()]  # after the icon
                assert titles == ["Home", "Compare", "Sweep", "Recommend", "History", "Anatomy", "Backbones", "Data"], \
                    nav.all_inner_texts()
                expect(page.get_by_text("test_efficientnet").first).to_be_visible()  # the record's headline
                page.screenshot(path=str(ARTIFACTS / "share-link-first.png"), full_page=True)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "share-link-first-FAILED.png"), full_page=True)
                raise
            finally:
                browser.close()
