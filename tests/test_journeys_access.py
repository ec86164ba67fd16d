"""Who gets in, in headless Chromium against a real `streamlit run app.py`: a server bound to 127.0.0.1 (as behind a
reverse proxy or a tunnel) with TLCORE_TOKEN set asks every visitor for the token, says when it is wrong, takes a
wrong one off the address bar, and opens with the right one. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_browser import ARTIFACTS, CHROMIUM, _serve
from test_journeys import browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM or not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed; .ci/run installs it")]

TOKEN = "proxy-journey-token"
HOME_TITLE = "Feature extraction, fine-tuning or training from scratch?"


@pytest.fixture
def proxied_server(tmp_path):
    """Bound to the loopback interface, as a reverse proxy or a tunnel reaches it, with the token set."""
    yield from _serve(tmp_path / "home", TLCORE_TOKEN=TOKEN, _ADDRESS="127.0.0.1")


def test_a_localhost_server_with_a_token_asks_for_it_says_wrong_and_opens_with_it(proxied_server):
    from playwright.sync_api import expect

    url = proxied_server
    with browser_page("journey-token-localhost") as page:
        for path in ("/", "/Compare"):
            page.goto(url + path, wait_until="networkidle")
            expect(page.get_by_text("Access token needed")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(HOME_TITLE)).to_have_count(0)
            assert page.get_by_role("button", name="Run").count() == 0, path

        page.goto(url + "/Compare?token=wrong", wait_until="networkidle")
        expect(page.get_by_text(re.compile("^Wrong token"))).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Compare strategies")).to_have_count(0)
        page.wait_for_url(re.compile(r"/Compare$"), timeout=10_000)  # the wrong token is off the address bar
        page.screenshot(path=str(ARTIFACTS / "journey-token-localhost-wrong.png"), full_page=True)

        typed = page.get_by_label("Access token", exact=True)
        typed.fill("also-wrong")
        typed.press("Enter")
        expect(page.get_by_text(re.compile("^Wrong token: the token typed"))).to_be_visible(timeout=30_000)
        typed.fill(TOKEN)
        typed.press("Enter")
        expect(page.get_by_text("Compare strategies")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("combobox", name=re.compile("^Backbone"))).to_be_visible(timeout=60_000)
        for gone in (page.get_by_text("Access token needed"), page.get_by_text(re.compile("^Wrong token")),
                     page.get_by_label("Access token", exact=True)):
            expect(gone).to_have_count(0, timeout=30_000)  # the gate is gone once the page has run

    with browser_page("journey-token-localhost-link") as page:  # a new browser session, with the tokened link
        page.goto(url + f"/?token={TOKEN}", wait_until="networkidle")
        expect(page.get_by_text(HOME_TITLE)).to_be_visible(timeout=30_000)
        assert "token=" not in page.url
        page.get_by_role("link", name=re.compile("Compare$")).first.click()
        expect(page.get_by_text("Compare strategies")).to_be_visible(timeout=30_000)  # kept for the session
        expect(page.get_by_role("combobox", name=re.compile("^Backbone"))).to_be_visible(timeout=60_000)
