"""The dashboard, headless with streamlit's AppTest: every page renders, and a comparison run from the Compare page
with a tiny timm model on tiny data completes with one row per strategy."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "pages").glob("*.py"))


def _no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def test_home_page_renders():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    _no_exceptions(at)
    text = " ".join(m.value for m in at.markdown)
    assert "Feature extraction" in " ".join(s.value for s in at.subheader) and "frozen" in text


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_page_renders(page):
    at = AppTest.from_file(str(page), default_timeout=60).run()
    _no_exceptions(at)


def _wait_for_results(at: AppTest, timeout: float = 240.0) -> AppTest:
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        _no_exceptions(at)
        if at.dataframe:
            return at
        time.sleep(0.5)
    raise AssertionError("no results table appeared")


def test_compare_page_runs_three_strategies(image_folder, tiny_weights):
    at = AppTest.from_file(str(ROOT / "pages" / "1_Compare.py"), default_timeout=60).run()
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input(key="folder").set_value(str(image_folder))
    at.selectbox(key="backbone").set_value("test_efficientnet")
    at.radio(key="weights").set_value("local file").run()
    at.text_input(key="weights_path").set_value(str(tiny_weights))
    at.number_input(key="per_class_quick").set_value(0)
    at.number_input(key="image_size").set_value(32)
    at.number_input(key="ft_ep_quick").set_value(1)
    at.number_input(key="sc_ep_quick").set_value(1)
    at.button(key="run").click().run()
    _no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    job = at.query_params["job"]
    at = _wait_for_results(at)
    table = at.dataframe[0].value
    assert list(table["strategy"]) == ["feature-extraction", "fine-tune", "scratch"]
    assert list(table["status"]) == ["completed"] * 3
    assert table["accuracy"].between(0, 1).all()
    assert job and at.query_params["job"] == job


def test_compare_page_reports_bad_folder_as_message(tmp_path):
    at = AppTest.from_file(str(ROOT / "pages" / "1_Compare.py"), default_timeout=60).run()
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input(key="folder").set_value(str(tmp_path / "no_such_folder"))
    at.button(key="run").click().run()
    deadline = time.time() + 60
    while time.time() < deadline and not at.error:
        time.sleep(0.3)
        at.run()
    _no_exceptions(at)
    assert at.error and "does not exist" in at.error[0].value
