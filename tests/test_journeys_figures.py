"""Issue 23 in a real browser (headless Debian Chromium against `streamlit run app.py`): a stored comparison says
which model to deploy and why, 'best 0' and its note where fine-tuning kept its start, its training times counted
alone; the sidebar and every page link draw Material icons (no emoji, which this Chromium has no font for); the
share page's subtitle names the backbone once; the gallery marks are text; a running job reads the same in the
sidebar as on the page; the dataset card's toggle label is whole; Anatomy says when it does not load a local
weights file. Screenshots: tests/artifacts/journey-figures-*.png."""

from __future__ import annotations

import re

import pytest

from test_browser import ARTIFACTS, CHROMIUM, _serve
from test_journeys import _choose_tiny_model, _tiny_run, browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM or not __import__("pathlib").Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed; .ci/run installs it")]

EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]")
LABEL = "data · test_efficientnet · all/class"  # what the Compare page names a job: the backbone is in it


@pytest.fixture
def kept_start_server(tmp_path, image_folder, tiny_weights, monkeypatch):
    """A stored comparison whose fine-tune kept its start: one epoch at a learning rate too small to move it."""
    from tlcore import build_config, compare

    home = tmp_path / "figures-home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    options = _tiny_run(image_folder, tiny_weights)
    options["strategy_options"]["fine-tune"] = options["strategy_options"]["fine-tune"] | {"lr": 1e-9}
    result = compare(build_config("quick", per_class="all", **options), label=LABEL)
    fine_tune = result.run("fine-tune")
    assert fine_tune.best_epoch == 0 and fine_tune.epochs_run == 1, fine_tune.curve
    for url in _serve(home):  # writable: the gallery reads the test images from the data folder
        yield url, result


def _sidebar_icons_are_material(page) -> None:
    from playwright.sync_api import expect

    links = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink']")
    expect(links).to_have_count(8, timeout=30_000)
    icons = links.locator("[data-testid='stIconMaterial']")
    expect(icons).to_have_count(8)
    assert icons.all_inner_texts() == ["home", "balance", "trending_up", "explore", "history", "layers",
                                       "view_module", "fact_check"]
    assert page.evaluate("document.fonts.check('24px \"Material Symbols Rounded\"')")  # the font is there to draw them
    assert not EMOJI.search(page.locator("[data-testid='stSidebar']").inner_text())


def test_a_stored_comparison_says_what_to_deploy_best_0_and_draws_icons_not_boxes(kept_start_server):
    from playwright.sync_api import expect

    url, result = kept_start_server
    with browser_page("journey-figures-verdict", height=2600) as page:
        page.goto(url + f"/History?run={result.record_id}", wait_until="networkidle")
        verdict = page.get_by_text(re.compile(r"^Deploy feature-extraction: as accurate as fine-tune \(\d\.\d{3} vs "
                                              r"\d\.\d{3}: fine-tune kept its start, the same model\)"))
        expect(verdict).to_be_visible(timeout=60_000)
        table = page.locator("[data-testid='stDataFrame']").first
        for text in ("1 (best 0)", "no fine-tuning epoch beat its start: the same model as feature extraction",
                     "shared with feature-extraction (features, head fit)"):
            expect(table).to_contain_text(text, timeout=30_000)
        subtitle = page.get_by_text(re.compile(r"· stored .* UTC · read-only view$"))
        expect(subtitle).to_be_visible(timeout=30_000)
        assert subtitle.inner_text().count("test_efficientnet") == 1, subtitle.inner_text()
        _sidebar_icons_are_material(page)
        anatomy = page.locator("[data-testid='stMain'] [data-testid='stPageLink']").filter(
            has_text="Open this backbone in Anatomy")
        expect(anatomy).to_be_visible(timeout=60_000)
        expect(anatomy.locator("[data-testid='stIconMaterial']")).to_have_text("layers")  # Anatomy's own icon
        page.get_by_text("Show test images (mistakes first)").click()
        marked = page.locator("[data-testid='stImageCaption']").filter(has_text=re.compile(r"^(right|WRONG): "))
        expect(marked.first).to_be_visible(timeout=60_000)
        assert marked.count() == len(result.test_labels), marked.all_inner_texts()  # one per test image, 6 here
        assert all(re.match(r"^(right: class_\d|WRONG: class_\d \(true: class_\d\))$", t)
                   for t in marked.all_inner_texts())
        assert not any(EMOJI.search(t) for t in page.locator("[data-testid='stImageCaption']").all_inner_texts())


def test_a_running_job_reads_the_same_in_the_sidebar_the_card_toggle_is_whole_anatomy_says_its_weights(tmp_path):
    from playwright.sync_api import expect

    for url in _serve(tmp_path / "home"):
        with browser_page("journey-figures-running", height=1800) as page:
            page.goto(url + "/Compare", wait_until="networkidle")
            expect(page.get_by_text("Compare strategies")).to_be_visible(timeout=30_000)
            _sidebar_icons_are_material(page)
            toggle = page.get_by_text("Show the dataset card", exact=True)
            expect(toggle).to_be_visible()
            assert toggle.evaluate("e => e.scrollWidth <= e.clientWidth"), "the toggle's label is cut off"
            page.screenshot(path=str(ARTIFACTS / "journey-figures-card-toggle.png"), full_page=True)
            page.get_by_text("Default", exact=True).click()  # scratch for 20 epochs: long enough to watch it run
            _choose_tiny_model(page)
            page.get_by_role("button", name="Run").click(timeout=180_000)  # after the form's time estimate
            heading = page.get_by_text(re.compile(r"^Job \w+: running$"))
            expect(heading).to_be_visible(timeout=120_000)
            job = re.match(r"^Job (\w+):", heading.inner_text())[1]
            sidebar = page.locator("[data-testid='stSidebar']")
            expect(sidebar).to_contain_text(f"{job} comparison running", timeout=5_000)
            assert f"{job} comparison queued" not in sidebar.inner_text()
            page.screenshot(path=str(ARTIFACTS / "journey-figures-job-running.png"), full_page=True)
            page.get_by_role("button", name="Cancel").click()
            expect(page.get_by_text(re.compile(r"This comparison was cancelled\."))).to_be_visible(timeout=120_000)
            expect(sidebar).to_contain_text("No jobs queued or running.", timeout=10_000)
        with browser_page("journey-figures-anatomy-local", height=1800) as page:
            page.goto(url + "/Anatomy?backbone=test_efficientnet&image_size=32", wait_until="networkidle")
            expect(page.get_by_text("Anatomy: what each strategy trains")).to_be_visible(timeout=30_000)
            page.get_by_text("local file", exact=True).click()
            page.get_by_label("Weights file on the server (.pth / .safetensors)").fill("/data/weights/mine.pth")
            page.keyboard.press("Enter")
            expect(page.get_by_text(re.compile(r"Weights: the local file mine\.pth is not loaded for the diagram"))
                   ).to_be_visible(timeout=30_000)


def test_recommend_draws_the_feature_extraction_area_it_recommends_by_measured_cost(tmp_path):
    """Issue 23.12 as a person meets it: described as similar data with 100 images a class, the page recommends
    feature extraction because fine-tune's expected gain is under a point, says so in the reasons, and the map draws
    (and its legend names) the area; at 5 a class it recommends fine-tuning, with its expected gain."""
    from playwright.sync_api import expect

    for url in _serve(tmp_path / "home"):
        with browser_page("journey-figures-recommend-map", height=2200) as page:
            page.goto(url + "/Recommend", wait_until="networkidle")
            expect(page.get_by_text("Which strategy for this data?")).to_be_visible(timeout=30_000)
            page.get_by_text("only a description of it", exact=True).click()
            size = page.get_by_label("Labelled images per class")
            size.fill("100")
            size.press("Enter")
            expect(page.get_by_text("Recommended: feature-extraction")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(re.compile(r"fine-tune's expected gain over feature extraction = [-+]\d+\.\d "
                                               r"points \(< 1 point\)"))).to_be_visible()
            legend = page.locator(".js-plotly-plot .colorbar")
            expect(legend).to_contain_text("feature-extraction", timeout=30_000)
            expect(page.get_by_text(re.compile("feature extraction's area is where fine-tune's expected gain is "
                                               "under 1 point"))).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "journey-figures-recommend-map.png"), full_page=True)
            size.fill("5")
            size.press("Enter")
            expect(page.get_by_text("Recommended: fine-tune (top 2 stages)")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(re.compile(r"expected gain over feature extraction = \+\d+\.\d points "
                                               r"\(>= 1 point\)"))).to_be_visible()


def test_a_measured_recommendation_says_where_it_was_measured_and_confirms_there(tmp_path):
    """Issue 28.6 as a person meets it: measuring the built-in data (10 a class, the packaged backbone) shows the
    signals and says at which size and on which device they were measured; the confirmation, double-clicked, queues
    one comparison at that size and opens it on the Compare page with its estimate."""
    from playwright.sync_api import expect

    from tlcore.records.store import Store

    home = tmp_path / "home"
    for url in _serve(home):
        with browser_page("journey-figures-recommend-confirmed", height=2600) as page:
            page.goto(url + "/Recommend", wait_until="networkidle")
            expect(page.get_by_text("Which strategy for this data?")).to_be_visible(timeout=30_000)
            size = page.get_by_label("Training images per class to consider (0 = all)")
            size.fill("10")
            size.press("Enter")
            page.get_by_role("button", name="Measure and recommend").click()
            where = page.get_by_text(re.compile(r"^Measured at (\d+) px on the CPU; the time estimates are this "
                                                r"device's and the confirmation runs there at this size\.$"))
            expect(where).to_be_visible(timeout=120_000)
            pixels = re.search(r"at (\d+) px", where.inner_text()).group(1)
            recommended = page.get_by_text(re.compile("^Recommended: ")).first
            expect(recommended).to_be_visible()
            choice = recommended.inner_text().removeprefix("Recommended: ").strip()
            page.screenshot(path=str(ARTIFACTS / "journey-figures-recommend-measured.png"), full_page=True)
            page.get_by_role("button", name=re.compile("^Confirm on the Compare page")).dblclick()
            expect(page.get_by_role("heading", name="Compare strategies")).to_be_visible(timeout=60_000)
            expect(page.get_by_text(re.compile(r"^Job \w+: (queued|running)"))).to_be_visible(timeout=60_000)
            # the job's own estimate (the form's, for the built-in default, is another), at the measured size
            job_estimate = re.compile(rf"^Estimated at most [^(]*\({re.escape(choice)} .* at {pixels} px")
            expect(page.get_by_text(job_estimate)).to_be_visible(timeout=30_000)
        comparisons = Store(home / "tlcore.db").records(kind="comparison")
        assert [r["label"] for r in comparisons] == ["confirm recommendation · fashion-mnist"]  # one, not two
        assert comparisons[0]["config"]["image_size"] == int(pixels) and comparisons[0]["config"]["device"] == "cpu"
