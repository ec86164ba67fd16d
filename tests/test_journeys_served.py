"""Journeys on a served dashboard that several visitors share: History deletes exactly what was ticked, once, and
can undo it; side by side works for every pair of kinds; a fresh server opened in six tabs at once; a failing page
shows an incident id and no server path; hostile Anatomy links cannot make a read-only demo build big models.
Each asserts what the page shows and saves a screenshot (tests/artifacts/)."""

from __future__ import annotations

import re
import time

import pytest

from test_browser import ARTIFACTS, CHROMIUM, _launch, _serve
from test_journeys import _tiny_run, browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM or not __import__("pathlib").Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed; .ci/run installs it")]
ROW_HEIGHT = 35  # st.dataframe's rows and header, in px


def _comparisons(image_folder, tiny_weights, count: int) -> list[str]:
    from tlcore import build_config, compare

    config = build_config("quick", per_class="all", strategies=["feature-extraction"],
                          **_tiny_run(image_folder, tiny_weights))
    return [compare(config).record_id for _ in range(count)]


@pytest.fixture
def history_server(tmp_path, image_folder, tiny_weights, monkeypatch):
    """A writable server over three stored comparisons (newest first in History) and a probe."""
    from tlcore import build_config
    from tlcore.advice.probe import layer_probe, save_probe

    home = tmp_path / "history-home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    ids = _comparisons(image_folder, tiny_weights, 3)
    config = build_config("quick", per_class="all", strategies=["feature-extraction"],
                          **_tiny_run(image_folder, tiny_weights))
    probe = layer_probe(config, random_weights=False)
    save_probe(probe, config, False)
    for url in _serve(home):
        yield url, home, ids, probe.record_id


def _select_rows(page, rows: list[int]) -> None:
    """Tick rows of the History table by their row-marker checkboxes (the grid is drawn on a canvas)."""
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for(timeout=30_000)
    box = grid.bounding_box()
    for row in rows:
        page.mouse.click(box["x"] + 16, box["y"] + ROW_HEIGHT * (row + 1) + ROW_HEIGHT / 2)
        page.wait_for_timeout(800)


def _history_ids(home) -> tuple[set[str], set[str]]:
    from tlcore.records.store import Store

    store = Store(home / "tlcore.db")
    return {r["id"] for r in store.records()}, {r["id"] for r in store.trashed()}


def test_history_deletes_exactly_the_ticked_record_once_and_undo_brings_it_back(history_server):
    from playwright.sync_api import expect

    url, home, ids, probe = history_server
    listed = [probe] + ids[::-1]  # newest first
    with browser_page("journey-history-delete", height=1800) as page:
        page.goto(url + "/History", wait_until="networkidle")
        expect(page.get_by_text("4 of 4 records.")).to_be_visible(timeout=30_000)
        _select_rows(page, [1])
        target = listed[1]
        expect(page.get_by_role("button", name=f"Open {target}")).to_be_visible(timeout=10_000)
        page.get_by_text("Yes, delete 1 record(s) and their runs").click()
        page.get_by_role("button", name="Delete").dblclick()
        expect(page.get_by_text(re.compile(rf"Deleted comparison {target} \(.*, 1 run\)\. Kept in the trash for 7 "
                                           r"days"))).to_be_visible(timeout=30_000)
        page.wait_for_timeout(2000)  # whatever a second click would do, it has done now
        live, trashed = _history_ids(home)
        assert trashed == {target} and live == set(listed) - {target}
        expect(page.get_by_text("3 of 3 records.")).to_be_visible()
        expect(page.get_by_role("button", name="Delete")).to_have_count(0)  # selection and tick are cleared
        page.screenshot(path=str(ARTIFACTS / "journey-history-deleted.png"), full_page=True)
        page.get_by_role("button", name="Undo").click()
        expect(page.get_by_text(f"Restored {target} from the trash.")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("4 of 4 records.")).to_be_visible()
        assert _history_ids(home) == (set(listed), set())
        # everything deleted: the empty History still renders, and says so
        _select_rows(page, [0, 1, 2, 3])
        page.get_by_text("Yes, delete 4 record(s) and their runs").click()
        page.get_by_role("button", name="Delete").click()
        expect(page.get_by_text("Nothing stored yet.")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Trash: 4 record(s)")).to_be_visible()
        main = page.locator("[data-testid='stMain']").inner_text()
        assert "Error" not in main and "Traceback" not in main, main[:500]


def test_side_by_side_draws_comparisons_and_names_what_does_not_compare(history_server):
    from playwright.sync_api import expect

    url, home, ids, probe = history_server
    with browser_page("journey-history-side-by-side", height=2000) as page:
        page.goto(url + "/History", wait_until="networkidle")
        expect(page.get_by_text("4 of 4 records.")).to_be_visible(timeout=30_000)
        _select_rows(page, [1, 2])
        page.get_by_text("Compare the selected side by side").click()
        chart = page.locator(".js-plotly-plot").filter(has_text="Test accuracy (95% interval)")
        expect(chart).to_be_visible(timeout=30_000)
        expect(chart).to_contain_text(f"{ids[2]} · feature-extraction")
        _select_rows(page, [0])  # the probe joins two comparisons
        expect(page.get_by_text(re.compile(rf"Probe {probe} is not shown: it is the only one of the layer-wise "
                                           r"probes selected"))).to_be_visible(timeout=30_000)
        expect(chart).to_be_visible()
        _select_rows(page, [2])  # a comparison and a probe alone
        expect(page.get_by_text(re.compile(rf"Comparison {ids[2]} is not shown"))).to_be_visible(timeout=30_000)
        main = page.locator("[data-testid='stMain']").inner_text()
        assert "Error" not in main and "Traceback" not in main, main[:500]


def test_a_fresh_server_opened_in_six_tabs_at_once_shows_every_page_whole(tmp_path):
    """Streamlit runs each session in its own thread: the first imports of six sessions at once must not deadlock or
    see a module half-imported."""
    from playwright.sync_api import sync_playwright

    paths = ["/", "/Compare", "/Sweep", "/Recommend", "/History", "/Anatomy"]
    titles = ["Feature extraction, fine-tuning or training from scratch?", "Compare strategies",
              "Accuracy vs images per class", "Which strategy for this data?", "History",
              "Anatomy: what each strategy trains"]
    for url in _serve(tmp_path / "home"):
        with sync_playwright() as p:
            browser = _launch(p)
            try:
                tabs = [browser.new_page(viewport={"width": 1200, "height": 1400}) for _ in paths]
                for tab, path in zip(tabs, paths):  # all six sessions start before the first page has rendered
                    tab.goto(url + path, wait_until="commit")
                deadline = time.time() + 120
                for tab, path, title in zip(tabs, paths, titles):
                    while title not in tab.locator("body").inner_text() and time.time() < deadline:
                        tab.wait_for_timeout(500)
                    tab.wait_for_timeout(1000)
                    text = tab.locator("body").inner_text()
                    tab.screenshot(path=str(ARTIFACTS / f"journey-six-tabs{path.replace('/', '-') or '-home'}.png"))
                    assert title in text, (path, text[:300])
                    assert not re.search(r"Error|Traceback|deadlock|cannot import", text), (path, text[:600])
            finally:
                browser.close()


def _server_rss_mb(url: str) -> float:
    import psutil

    port = int(url.rsplit(":", 1)[1])
    pid = next(c.pid for c in psutil.net_connections(kind="tcp") if c.laddr and c.laddr.port == port
               and c.status == psutil.CONN_LISTEN)
    return psutil.Process(pid).memory_info().rss / 2**20


HOSTILE_ANATOMY_LINKS = [
    ("backbone=tf_efficientnet_lite0&image_size=1008&classes=99999", ["image_size='1008'", "classes='99999'"]),
    ("backbone=vit_huge_patch14_224&image_size=448", ["backbone='vit_huge_patch14_224'", "image_size='448'"]),
    ("backbone=tf_efficientnet_lite2&image_size=2048", ["image_size='2048'"]),
    ("backbone=eva02_enormous_patch14_224&classes=1e308&stages=-5&strategy=%3Cscript%3E",
     ["backbone='eva02_enormous_patch14_224'", "classes='1e308'", "stages='-5'", "strategy='<script>'"]),
]


def test_hostile_anatomy_links_cannot_grow_a_read_only_demo(tmp_path):
    """A plain visit to Anatomy adds less than 100 MB to the server; links asking for huge networks, sizes and
    heads are named and answered with the defaults, add less than 100 MB more, and every page still answers."""
    from playwright.sync_api import expect

    diagram_title = "tf_efficientnet_lite0 at 48 px"
    for url in _serve(tmp_path / "home", TLCORE_READ_ONLY="1"):
        with browser_page("journey-anatomy-hostile-links", height=1800) as page:
            page.goto(url + "/", wait_until="networkidle")
            expect(page.get_by_text("Feature extraction, fine-tuning or training from scratch?")).to_be_visible(
                timeout=60_000)
            before = _server_rss_mb(url)
            page.goto(url + "/Anatomy", wait_until="networkidle")
            expect(page.locator(".js-plotly-plot").first).to_contain_text(diagram_title, timeout=120_000)
            expect(page.locator(".js-plotly-plot").nth(1)).to_contain_text("What each stage sees", timeout=60_000)
            plain = _server_rss_mb(url)
            for query, named in HOSTILE_ANATOMY_LINKS:
                fresh = page.context.browser.new_page()  # a new session, as a visitor opening the link
                fresh.goto(url + "/Anatomy?" + query, wait_until="networkidle")
                expect(fresh.locator(".js-plotly-plot").first).to_contain_text(
                    "at 48 px" if "lite2" not in query else "tf_efficientnet_lite2 at 48 px", timeout=120_000)
                for value in named:
                    expect(fresh.get_by_text(f"The link's {value} is not served here")).to_be_visible()
                fresh.screenshot(path=str(ARTIFACTS / "journey-anatomy-hostile-link.png"), full_page=True)
                fresh.close()
            after = _server_rss_mb(url)
            for path, title in (("/Compare", "Compare strategies"), ("/History", "History"),
                                ("/Recommend", "Which strategy for this data?"), ("/Sweep", "Accuracy vs images")):
                page.goto(url + path, wait_until="networkidle")
                expect(page.get_by_text(title).first).to_be_visible(timeout=30_000)
        print(f"server RSS: {before:.0f} MB after home, {plain:.0f} MB after Anatomy, {after:.0f} MB after "
              f"{len(HOSTILE_ANATOMY_LINKS)} hostile links")
        assert plain - before < 100, (before, plain)
        assert after - plain < 100, (plain, after)


def test_a_page_that_fails_on_a_shared_server_shows_an_incident_id_and_no_server_path(tmp_path, monkeypatch):
    """A read-only demo's visitor whose page raises sees a short message with an incident id; the traceback, with
    the server's paths, goes to the server's log under the same id."""
    from playwright.sync_api import expect

    from tlcore.records.store import Store

    home = tmp_path / "incident-home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    store = Store(home / "tlcore.db")
    broken = store.create_record("probe", {}, dataset="digits", status="completed")
    store.update_record(broken, summary={"not": "a probe"})  # written by hand: opening it raises
    for url in _serve(home, TLCORE_READ_ONLY="1"):
        with browser_page("journey-incident") as page:
            page.goto(url + f"/History?run={broken}", wait_until="networkidle")
            message = page.get_by_text(re.compile(r"Something went wrong on this page \(incident [0-9a-f]{8}\)"))
            expect(message).to_be_visible(timeout=60_000)
            text = page.locator("body").inner_text()
            assert "Traceback" not in text and str(home) not in text and "site-packages" not in text, text[:800]
            assert str(__import__("pathlib").Path(__file__).resolve().parents[1]) not in text
