"""Issue 26 in a real browser (headless Debian Chromium against `streamlit run app.py` on a fresh store): on the Data
page, open the card of built-in digits, check its health, look at the likely label errors as pictures, exclude
three training images, store the revision (the files untouched: built-in arrays), double-click "Compare before and
after" (two jobs, not four), and read the change per strategy; the revision is then a version of digits on the
Compare page; hostile link values are refused without echoing them. Screenshots: tests/artifacts/journey-health-*.png.
"""

from __future__ import annotations

import re

import pytest

from test_browser import CHROMIUM, _serve
from test_journeys import browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM or not __import__("pathlib").Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed; .ci/run installs it")]


@pytest.fixture
def served(tmp_path):
    home = tmp_path / "health-home"
    for url in _serve(home):
        yield url, home


def test_check_the_data_exclude_three_images_and_compare_before_and_after(served, monkeypatch):
    from playwright.sync_api import expect

    from tlcore.advice.health import health_from_record
    from tlcore.data.revision import load_revision
    from tlcore.records.store import Store

    url, home = served
    with browser_page("journey-health-gallery", height=2600) as page:
        page.goto(url + "/Data", wait_until="networkidle")
        expect(page.get_by_text("Data: card and health").first).to_be_visible(timeout=60_000)
        page.locator("[data-testid='stSelectbox']").filter(has_text="Built-in dataset").click()
        page.get_by_role("option", name=re.compile("^digits")).click()
        page.get_by_text("Show the dataset card").click()
        expect(page.get_by_text(re.compile(r"^digits: 10 classes"))).to_be_visible(timeout=120_000)
        page.get_by_role("button", name="Check data health").dblclick()  # one job
        done = page.get_by_text(re.compile(r"^Data health \w+: completed$"))
        expect(done).to_be_visible(timeout=300_000)
        health_id = re.search(r"Data health (\w+):", done.inner_text()).group(1)
        store = Store(home / "tlcore.db")
        assert [r["kind"] for r in store.records()].count("health") == 1
        report = health_from_record(store.record(health_id))
        listed = report.label_issues[:24] + report.label_doubts[:24]  # the first page of each gallery
        tab = f"Likely label errors ({len(report.label_issues)}, {len(report.label_doubts)} more worth a look)"
        expect(page.get_by_text(tab)).to_be_visible()
        expect(page.get_by_text(f"Worth a look ({len(report.label_doubts)})")).to_be_visible()
        expect(page.get_by_role("tab", name=re.compile(r"^Image issues \(\d+\)$"))).to_be_visible()
        expect(page.get_by_role("tab", name=re.compile(r"^Duplicates \(\d+ groups, \d+ across splits\)$")))\
            .to_be_visible()
        first = listed[0]
        expect(page.get_by_text(f"{first.name} · {first.split}").first).to_be_visible()
        gallery = page.get_by_role("tabpanel", name=tab)
        expect(gallery.locator("[data-testid='stImage']").first).to_be_visible()  # pictures, read back
        assert gallery.locator("[data-testid='stImage']").count() == len(listed)
        chosen = [f.name for f in listed if f.split == "train"][:3]
        assert len(chosen) == 3
        for name in chosen:
            page.get_by_label(f"Action for {name}").click()
            page.get_by_role("option", name="exclude", exact=True).click()
            page.wait_for_timeout(300)
        expect(page.get_by_text("Chosen: 3 to exclude, 0 to relabel")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Store as a revision").click()
        stored = page.get_by_text(re.compile(r"^Stored revision \w+: 3 image\(s\) excluded, 0 relabelled"))
        expect(stored).to_be_visible(timeout=60_000)
        revision_id = re.search(r"Stored revision (\w+):", stored.inner_text()).group(1)
    monkeypatch.setenv("TLCORE_HOME", str(home))  # the server's store and revisions
    revision = load_revision(revision_id)
    assert sorted(revision.exclude) == sorted(chosen) and revision.source == "digits"

    with browser_page("journey-health-before-after", height=3400) as page:
        page.goto(url + f"/Data?health={health_id}&revision={revision_id}", wait_until="networkidle")
        expect(page.get_by_text("Before and after").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Chosen: 3 to exclude, 0 to relabel")).to_be_visible()  # the link's revision
        page.get_by_role("button", name="Remove fine-tune").click()
        page.get_by_role("button", name="Compare before and after").dblclick()  # two jobs, not four
        expect(page.get_by_text("What the revision changed")).to_be_visible(timeout=400_000)
        statement = page.get_by_text(re.compile(rf"^Revision {revision_id}, on the same test images: "
                                                r"feature-extraction [+-]\d+\.\d points"))
        expect(statement).to_be_visible()
        expect(page.locator("[data-testid='stDataFrame']").last).to_contain_text("paired")
        comparisons = [r for r in Store(home / "tlcore.db").records() if r["kind"] == "comparison"]
        assert len(comparisons) == 2, [r["label"] for r in comparisons]
        sizes = sorted(r["summary"]["dataset"]["sizes"]["train"] for r in map(Store(home / "tlcore.db").record,
                                                                                 [c["id"] for c in comparisons]))
        assert sizes[1] - sizes[0] == 3  # the same subset, less the three excluded images

    with browser_page("journey-health-version", height=1400) as page:
        page.goto(url + "/Compare", wait_until="networkidle")
        page.locator("[data-testid='stSelectbox']").filter(has_text="Built-in dataset").click()
        page.get_by_role("option", name=re.compile("^digits")).click()
        expect(page.get_by_text("Version")).to_be_visible(timeout=30_000)
        page.locator("[data-testid='stSelectbox']").filter(has_text="Version").click()
        expect(page.get_by_role("option", name=re.compile(rf"^revision {revision_id}: 3 excluded, 0 relabelled")))\
            .to_be_visible()
        page.keyboard.press("Escape")
        # what the run will need, said before it is queued (issue 27): time, memory at its peak, disk
        expect(page.get_by_text(re.compile(r"Needs about [\d.]+ (MB|GB) of memory at its peak")).first)\
            .to_be_visible(timeout=60_000)

    with browser_page("journey-sweep-estimate", height=1400) as page:
        page.goto(url + "/Sweep", wait_until="networkidle")
        expect(page.get_by_text(re.compile(r"Needs about [\d.]+ (MB|GB) of memory at its peak.*of disk for its "
                                           r"caches")).first).to_be_visible(timeout=120_000)

    with browser_page("journey-health-hostile", height=900) as page:
        page.goto(url + "/Data?health=../../etc/passwd&revision=%3Cscript%3E&before=x;y&after=1",
                  wait_until="networkidle")
        expect(page.get_by_text("The link's 'health' is not a record id").first).to_be_visible(timeout=60_000)
        body = page.locator("body").inner_text()
        assert "etc/passwd" not in body and "<script>" not in body and str(home) not in body
