"""Issue 25 in a real browser (headless Debian Chromium against `streamlit run app.py` on a fresh store): rank
candidate backbones on built-in digits (one unknown name among them), read the answer, the chart and the reason the
unknown one was not measured; confirm the top 2 with a double click (one job); read strategy x backbone side by side
with the prediction checked against the confirmed runs; open a member's comparison and the share link; a hostile
link value is refused without echoing it. Screenshots: tests/artifacts/journey-backbones-*.png."""

from __future__ import annotations

import re

import pytest

from test_browser import ARTIFACTS, CHROMIUM, _serve
from test_journeys import browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM or not __import__("pathlib").Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed; .ci/run installs it")]

CANDIDATES = "tf_efficientnet_lite0@32, tf_efficientnet_lite0@48, nosuchnet@32"


@pytest.fixture
def served(tmp_path):
    home = tmp_path / "backbones-home"
    for url in _serve(home):
        yield url, home


def _rank(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/Backbones", wait_until="networkidle")
    expect(page.get_by_text("Which backbone, at which image size?").first).to_be_visible(timeout=60_000)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Built-in dataset").click()
    page.get_by_role("option", name=re.compile("^digits")).click()
    page.get_by_role("spinbutton", name="Training images per class (0 = all)").fill("5")
    page.keyboard.press("Enter")
    chips = page.get_by_role("button", name=re.compile(r"^Remove tf_efficientnet_lite\d at \d+ px$"))
    expect(chips.first).to_be_visible(timeout=120_000)  # the default candidates: every installed backbone's sizes
    page.get_by_role("button", name="Clear all").click()
    expect(chips).to_have_count(0)
    page.get_by_role("textbox", name="More candidates: name@size, comma-separated").fill(CANDIDATES)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Rank").click()


def test_rank_look_at_the_chart_confirm_the_top_two_and_open_them_side_by_side(served):
    from playwright.sync_api import expect

    from tlcore.advice.candidates import check_confirmation, ranking_from_record
    from tlcore.experiments.backbones import load_backbones
    from tlcore.records.store import Store

    url, home = served
    with browser_page("journey-backbones-ranked", height=1800) as page:
        _rank(page, url)
        statement = page.get_by_text(re.compile(r"^tf_efficientnet_lite0 at (32|48) px (is the best|is within 1 point|"
                                                r"is as accurate as)"))
        expect(statement).to_be_visible(timeout=240_000)
        expect(page.get_by_text("nosuchnet at 32 px was not measured: 'nosuchnet' is not a timm model name"))\
            .to_be_visible()
        expect(page.get_by_text("Predicted accuracy against inference cost (ringed: Pareto front)")).to_be_visible(
            timeout=30_000)
        table = page.locator("[data-testid='stDataFrame']").first
        expect(table).to_contain_text("nosuchnet", timeout=30_000)
        ranking_id = re.search(r"Ranking (\w+): completed", page.locator("body").inner_text()).group(1)
        shown = statement.inner_text()
    store = Store(home / "tlcore.db")
    ranking = ranking_from_record(store.record(ranking_id))
    assert [c.label for c in ranking.completed] and ranking.candidates[-1].status == "failed"
    assert shown.strip() == ranking.statement

    with browser_page("journey-backbones-confirmed", height=2600) as page:
        page.goto(url + f"/Backbones?ranking={ranking_id}", wait_until="networkidle")
        expect(page.get_by_text("Confirm the top candidates")).to_be_visible(timeout=60_000)
        page.get_by_text("Quick", exact=True).click()
        page.get_by_role("button", name="Confirm the top 2").dblclick()
        expect(page.get_by_text(re.compile(r"^Most accurate: "))).to_be_visible(timeout=400_000)
        expect(page.get_by_text("Test accuracy against inference time per image (ringed: Pareto front)"))\
            .to_be_visible(timeout=30_000)
        expect(page.get_by_text(re.compile(r"^Predicted against confirmed"))).to_be_visible()
        links = page.locator("[data-testid='stMain'] [data-testid='stPageLink']").filter(has_text="its comparison")
        expect(links).to_have_count(2, timeout=30_000)
        confirm_id = re.search(r"Backbones side by side (\w+): completed", page.locator("body").inner_text()).group(1)
        page.screenshot(path=str(ARTIFACTS / "journey-backbones-side-by-side.png"), full_page=True)
        links.first.click()
        expect(page.get_by_text("Results", exact=True)).to_be_visible(timeout=60_000)
        first = ranking.completed[0]  # the best-ranked candidate's comparison, at its own size
        expect(page.get_by_text(re.compile(rf"^digits: 10 classes, 50 training images .* · {first.backbone} · "
                                           rf"{first.image_size} px"))).to_be_visible(timeout=30_000)
        assert "/Compare" in page.url

    backbones = [r for r in store.records() if r["kind"] == "backbones"]
    assert len(backbones) == 1, "a double click queued one confirmation"
    result = load_backbones(confirm_id, store)
    assert result.status == "completed" and len(result.members) == 2
    assert [m.candidate.label for m in result.members] == [c.label for c in ranking.completed[:2]]
    assert len(result.to_frame()) == 6  # 3 strategies x 2 backbones
    for check in check_confirmation(ranking, result):
        assert check.same_head and check.within_interval, check  # the same head on the same cached features

    with browser_page("journey-backbones-shared", height=2200) as page:
        page.goto(url + f"/?run={confirm_id}", wait_until="networkidle")
        expect(page.get_by_text(f"Backbones side by side {confirm_id}: completed")).to_be_visible(timeout=60_000)
        expect(page.get_by_text(re.compile(r"^Most accurate: "))).to_be_visible(timeout=30_000)
        expect(page.get_by_text(re.compile(r"^Predicted against confirmed"))).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "journey-backbones-share-link.png"), full_page=True)
        hostile = "/Backbones?ranking=..%2F..%2Fetc%2Fpasswd&confirm=%5Bx%5D(http://evil)"
        page.goto(url + hostile, wait_until="networkidle")
        expect(page.get_by_text("The link's 'ranking' is not a record id").first).to_be_visible(timeout=60_000)
        body = page.locator("body").inner_text()
        assert "passwd" not in body and "evil" not in body and str(home) not in body
