"""The dashboard, headless with streamlit's AppTest: every page renders, and a comparison run from the Compare page
with a tiny timm model on tiny data completes with one row per strategy."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p for p in (ROOT / "pages").glob("*.py") if not p.name.startswith("_"))


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


def _wait_for_results(at: AppTest, timeout: float = 240.0, done=lambda at: bool(at.dataframe)) -> AppTest:
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        _no_exceptions(at)
        if done(at):
            return at
        time.sleep(0.5)
    raise AssertionError("no results table appeared")


@pytest.mark.slow
def test_compare_page_runs_three_strategies(image_folder, tiny_weights):
    at = AppTest.from_file(str(ROOT / "pages" / "1_Compare.py"), default_timeout=60).run()
    at.radio(key="preset").set_value("quick").run()
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
    from tlcore.records.store import default_store

    # what the page ran is the preset's strategies, the epochs changed above aside (the CLI runs the same)
    ran = {s["kind"]: s for s in default_store().record(job)["config"]["strategies"]}
    assert ran["scratch"]["augment"] is True and ran["scratch"]["batch_size"] == 64 and ran["scratch"]["epochs"] == 1
    assert ran["fine-tune"]["augment"] is False and ran["fine-tune"]["batch_size"] == 32


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


@pytest.mark.slow
def test_sweep_page_runs_a_tiny_sweep(image_folder, tiny_weights):
    at = AppTest.from_file(str(ROOT / "pages" / "2_Sweep.py"), default_timeout=60).run()
    at.radio(key="sw_preset").set_value("quick").run()
    at.radio(key="sw_source_kind").set_value("Folder on this server").run()
    at.text_input(key="sw_folder").set_value(str(image_folder))
    at.text_input(key="sw_sizes_quick").set_value("2,all")
    at.number_input(key="sw_repeats_quick").set_value(2)
    at.selectbox(key="sw_backbone").set_value("test_efficientnet")
    at.radio(key="sw_weights").set_value("local file").run()
    at.text_input(key="sw_weights_path").set_value(str(tiny_weights))
    at.number_input(key="sw_image_size").set_value(32)
    at.number_input(key="sw_ft_ep_quick").set_value(1)
    at.number_input(key="sw_sc_ep_quick").set_value(1)
    at.run()
    assert any("12 cells" in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="sw_run").click().run()
    _no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    job = at.query_params["sweep"]
    at = _wait_for_results(at, done=lambda at: any(b.label.startswith("Download summary") for b in
                                                   at.get("download_button")))
    table = at.dataframe[0].value
    assert sorted(set(table["strategy"])) == ["feature-extraction", "fine-tune", "scratch"]
    assert list(table["repeats"]) == [2] * 6 and table["accuracy"].between(0, 1).all()
    statements = " ".join(i.value for i in at.info)
    assert "fine-tuning" in statements.lower() and "scratch" in statements.lower()
    assert at.query_params["sweep"] == job


def test_sweep_page_submits_the_presets_schedules_when_untouched(image_folder, tiny_weights):
    """The default sweep preset runs scratch only from 50 a class, on its full schedule; the page says so, counts
    the cells it will run, and submits what the CLI runs (the epochs field's starting value changes nothing)."""
    from tlcore.experiments.config import ALL, SweepConfig, build_sweep_config
    from tlcore.records.store import default_store

    at = AppTest.from_file(str(ROOT / "pages" / "2_Sweep.py"), default_timeout=60).run()
    at.radio(key="sw_preset").set_value("default").run()
    assert any(n.label == "Scratch: max epochs (it runs from 50 a class only)" and n.value == 20
               for n in at.number_input)
    captions = [c.value for c in at.caption]
    assert "5 sizes x 2 repeats x 3 strategies, less 6 not run = 24 cells." in captions
    assert any(c.startswith("scratch runs only from 50 images a class") and "(5, 10, 25 a class)" in c
               for c in captions)
    at.radio(key="sw_source_kind").set_value("Folder on this server").run()
    at.text_input(key="sw_folder").set_value(str(image_folder))
    at.selectbox(key="sw_backbone").set_value("test_efficientnet")
    at.radio(key="sw_weights").set_value("local file").run()
    at.text_input(key="sw_weights_path").set_value(str(tiny_weights))
    at.button(key="sw_run").click().run()
    _no_exceptions(at)
    job = at.query_params["sweep"]
    config = SweepConfig.from_dict(default_store().record(job)["config"])
    cli = build_sweep_config("default", dataset=str(image_folder), backbone="test_efficientnet",
                             weights=str(tiny_weights))
    assert config.strategies_at(5) == cli.strategies_at(5) and config.strategies_at(ALL) == cli.strategies_at(ALL)
    assert config.experiment.strategies == cli.experiment.strategies and config.long_only == ("scratch",)
    assert {s.kind: s.epochs for s in config.strategies_at(100)}["scratch"] == 20
    assert "scratch" not in {s.kind for s in config.strategies_at(25)} and config.cells_total == 24
    from ui.widgets import job_queue
    job_queue().cancel(job)  # the point was what it submitted, not running 24 cells


@pytest.mark.slow
def test_recommend_page_from_a_description_and_from_measured_data(image_folder, tiny_weights):
    at = AppTest.from_file(str(ROOT / "pages" / "3_Recommend.py"), default_timeout=120).run()
    at.radio(key="rc_mode").set_value("only a description of it").run()
    at.number_input(key="rc_desc_n").set_value(5).run()
    _no_exceptions(at)
    card = next(m.value for m in at.markdown if m.value.startswith("#### Recommended:"))
    assert card.startswith("#### Recommended: fine-tune (top 2 stages)") and "**Runner-up:** feature-extraction" in card
    at.number_input(key="rc_desc_n").set_value(5000)
    at.slider(key="rc_desc_sim").set_value(0.1).run()
    card = next(m.value for m in at.markdown if m.value.startswith("#### Recommended:"))
    assert card.startswith("#### Recommended: scratch") and "**Runner-up:** fine-tune (all stages)" in card
    assert any("images per class = 5000" in m.value for m in at.markdown)
    at.number_input(key="rc_desc_n").set_value(100)
    at.slider(key="rc_desc_sim").set_value(0.9).run()  # similar data, enough of it: the cost-aware rule (v3)
    card = next(m.value for m in at.markdown if m.value.startswith("#### Recommended:"))
    assert card.startswith("#### Recommended: feature-extraction") and "fine-tune (top 2 stages)" in card
    assert any("expected gain is under 1 point" in c.value for c in at.caption)

    at.radio(key="rc_mode").set_value("the dataset").run()
    at.radio(key="rc_source_kind").set_value("Folder on this server").run()
    at.text_input(key="rc_folder").set_value(str(image_folder))
    at.selectbox(key="rc_backbone").set_value("test_efficientnet")
    at.radio(key="rc_weights").set_value("local file").run()
    at.text_input(key="rc_weights_path").set_value(str(tiny_weights))
    at.number_input(key="rc_image_size").set_value(32)
    at.button(key="rc_measure").click().run()
    _no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    signals = next(d.value for d in at.dataframe if "signal" in d.value.columns)
    assert "k-NN accuracy, frozen features" in list(signals["signal"])
    assert signals["value"].notna().sum() >= 10
    assert any(c.value.startswith("Measured at 32 px on the CPU; the time estimates are this device's")
               for c in at.caption)
    card = next(m.value for m in at.markdown if m.value.startswith("#### Recommended:"))
    assert card.split("\n")[0].removeprefix("#### Recommended: ") in (
        "feature-extraction", "fine-tune (top 2 stages)", "fine-tune (all stages)", "scratch")
    assert at.button(key="rc_confirm").label.startswith("Confirm on the Compare page")


@pytest.mark.slow
def test_share_link_opens_a_stored_run_read_only(image_folder, tiny_weights, monkeypatch):
    from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, compare, make_strategy

    result = compare(ExperimentConfig(dataset=DatasetSpec(str(image_folder)),
                                      backbone=BackboneSpec("test_efficientnet", str(tiny_weights)), image_size=32,
                                      strategies=[make_strategy("feature-extraction", head_max_iter=20)]),
                     label="shared run")
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    at = AppTest.from_file(str(ROOT / "pages" / "4_History.py"), default_timeout=60)
    at.query_params["run"] = result.record_id
    at.run()
    _no_exceptions(at)
    assert result.record_id in at.title[0].value and "completed" in at.title[0].value
    table = at.dataframe[0].value
    assert list(table["strategy"]) == ["feature-extraction"]
    assert table["accuracy"].iloc[0] == pytest.approx(result.runs[0].accuracy)
    labels = [b.label for b in at.get("download_button")]
    assert "HTML report" in labels and "Results bundle (.zip)" in labels
    assert not any(b.label == "Delete" for b in at.button)
    through_app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)  # the link to Anatomy, with its size
    through_app.query_params["run"] = result.record_id
    through_app.run()
    link = next(e.proto for e in through_app.get("page_link") if "in Anatomy" in e.proto.label)
    assert link.page == "Anatomy" and "backbone=test_efficientnet" in link.query_string
    assert "image_size=32" in link.query_string and "strategy=feature-extraction" in link.query_string

    listing = AppTest.from_file(str(ROOT / "pages" / "4_History.py"), default_timeout=60).run()
    _no_exceptions(listing)
    assert result.record_id in list(listing.dataframe[0].value["id"])
    compare_page = AppTest.from_file(str(ROOT / "pages" / "1_Compare.py"), default_timeout=60).run()
    assert not [b for b in compare_page.button if b.key == "run"]  # read-only: no set-up, no Run
    assert "read-only demo" in compare_page.info[0].value
    assert not [r for r in compare_page.radio if r.label == "Dataset source"]


@pytest.mark.slow
def test_interrupted_job_is_shown_and_re_run_with_one_click(image_folder, tiny_weights):
    from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
    from tlcore.records.store import default_store

    config = ExperimentConfig(dataset=DatasetSpec(str(image_folder)), image_size=32,
                              backbone=BackboneSpec("test_efficientnet", str(tiny_weights)),
                              strategies=[make_strategy("feature-extraction", head_max_iter=20)])
    store = default_store()
    old = store.create_record("comparison", config.to_dict(), status="queued")
    store.update_record(old, status="interrupted", error="the process running it stopped (server restart or kill)")
    at = AppTest.from_file(str(ROOT / "pages" / "1_Compare.py"), default_timeout=60)
    at.query_params["job"] = old
    at.run()
    _no_exceptions(at)
    assert any("interrupted" in w.value for w in at.warning)
    at.button(key=f"rerun_{old}").click().run()
    new = at.query_params["job"]
    assert new and new != old
    at = _wait_for_results(at)
    assert list(at.dataframe[0].value["status"]) == ["completed"]
    assert store.record(new)["status"] == "completed" and store.record(old)["status"] == "interrupted"


def test_the_served_dashboard_does_not_collect_garbage_after_every_rerun():
    """Streamlit's default full gc.collect() after each rerun, with a running job's progress rerunning the page,
    starved the job's training thread (docs/benchmarks.md, "The dashboard's own garbage collection"): the config
    beside app.py, which `tlcore dashboard` and `streamlit run app.py` apply, turns it off."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    assert tomllib.loads((root / ".streamlit" / "config.toml").read_text())["runner"]["postScriptGC"] is False
