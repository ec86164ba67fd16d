"""The Python API's verbs: each stores its result, `tlcore.load` gives back every kind of record as the class its verb
returned, and every result has a table, a self-contained report and its files in a folder."""

from __future__ import annotations

import json

import pytest

import tlcore
from tlcore.core.errors import ConfigError
from tlcore.data.load import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tiny(image_folder, tiny_weights) -> dict:
    return {"dataset": str(image_folder), "backbone": "test_efficientnet", "weights": str(tiny_weights),
            "image_size": 32}


def _files_of(result, tmp_path, stem: str, extra: tuple[str, ...] = ()) -> None:
    paths = result.save(tmp_path / stem)
    assert [p.name for p in paths] == [f"{stem}.json", *(extra or [f"{stem}.csv"]), f"{stem}.html"]
    assert json.loads(paths[0].read_text())["record_id"] == result.record_id
    html = paths[-1].read_text()
    assert html.startswith("<!doctype html>") and result.record_id in html and "report made" in html


@pytest.mark.slow
def test_every_verb_stores_and_load_gives_back_every_kind(image_folder, tiny_weights, tmp_path):
    tiny = _tiny(image_folder, tiny_weights)
    r = tlcore.compare(per_class="all", strategies=["feature-extraction"], **tiny)
    assert isinstance(r, tlcore.Comparison) and r.record_id and r.runs[0].status == "completed"
    assert list(r.to_frame()["strategy"]) == ["feature-extraction"]
    s = tlcore.sweep(preset="quick", sizes="2,4", repeats=1, strategies="feature-extraction", **tiny)
    assert isinstance(s, tlcore.Sweep) and len(s.cells) == 2
    assert list(s.to_frame()["size"]) == ["2", "4"]
    p = tlcore.probe(per_class="all", random_weights=False, **tiny)
    assert isinstance(p, tlcore.Probe) and p.record_id and list(p.to_frame()["stage"]) == list(range(6))
    # the probe's last stage is the feature-extraction strategy on the same split
    assert p.curves["pretrained"].points[-1].test_accuracy == r.runs[0].accuracy
    rec = tlcore.recommend(**tiny)
    assert isinstance(rec, tlcore.Advice) and rec.record_id and rec.choice.label
    assert rec.to_frame()["recommended"].iloc[0] and rec.to_frame()["strategy"].iloc[0] == rec.choice.label

    cands = f"test_efficientnet@32@{tiny_weights},test_efficientnet@40@{tiny_weights}"
    ranking = tlcore.rank(dataset=str(image_folder), candidates=cands, per_class="all")
    assert ranking.record_id and len(ranking.completed) == 2
    both = tlcore.confirm(ranking, top=2, preset="quick", strategies=["feature-extraction"])
    assert [m.candidate.image_size for m in both.members] == [c.image_size for c in ranking.completed]
    assert list(both.to_frame()["best_val_accuracy"]) == [c.fe_val_accuracy for c in ranking.completed]

    report = tlcore.health(dataset=str(image_folder), backbone="test_efficientnet", weights=str(tiny_weights),
                           image_size=32)
    assert report.record_id and sum(report.checked_images.values()) == 36
    data = tlcore.load_dataset(str(image_folder))
    train = [data.item_name("train", int(data.indices["train"][0]))]  # a training image
    revised = tlcore.revise(str(image_folder), exclude=train, note="api")
    assert revised.startswith(f"{image_folder}@")
    after = tlcore.compare(dataset=revised, per_class="all", strategies=["feature-extraction"],
                           backbone="test_efficientnet", weights=str(tiny_weights), image_size=32)
    assert after.dataset["sizes"]["train"] == r.dataset["sizes"]["train"] - 1
    assert tlcore.load(report.record_id).to_dict() == report.to_dict()

    for made in (r, s, p, rec, ranking, both):
        loaded = tlcore.load(made.record_id)
        assert type(loaded) is type(made)
        assert loaded.to_frame().equals(made.to_frame()), type(made)
    assert tlcore.load(r.record_id).runs[0].accuracy == r.runs[0].accuracy
    model, preprocessing = tlcore.load_model(r.runs[0].run_id)
    assert model.tlcore_config.classes and callable(preprocessing)

    _files_of(r, tmp_path, "comparison")
    _files_of(s, tmp_path, "sweep", ("sweep_cells.csv", "sweep_summary.csv"))
    _files_of(p, tmp_path, "probe")
    _files_of(rec, tmp_path, "recommendation")
    assert tlcore.ComparisonResult.load(tmp_path / "comparison" / "comparison.json").runs[0].accuracy == \
        r.runs[0].accuracy


def test_load_says_what_is_missing():
    with pytest.raises(ConfigError, match="No stored record 'nope'.*history list"):
        tlcore.load("nope")


def test_a_config_and_options_are_not_mixed_and_unknown_options_are_named():
    config = tlcore.build_config("quick", dataset="digits", per_class=5)
    with pytest.raises(ConfigError, match=r"Give a config or options \(per_class\)"):
        tlcore.compare(config, per_class=10)
    with pytest.raises(ConfigError, match="Unknown option epoch;"):
        tlcore.compare(dataset="digits", epoch=3)
    with pytest.raises(ConfigError, match="must be a SweepConfig"):
        tlcore.sweep(config)


def test_a_saved_config_runs_as_saved(image_folder, tiny_weights, tmp_path, monkeypatch):
    """`config=` takes a config, its dict or a saved JSON (the CLI's --config), each as it is."""
    import tlcore.experiments.compare as engine

    seen = []
    config = tlcore.build_config("quick", per_class=3, strategies=["feature-extraction"],
                                 **_tiny(image_folder, tiny_weights))
    (tmp_path / "c.json").write_text(json.dumps({"config": config.to_dict()}))
    monkeypatch.setattr(engine, "compare",
                        lambda cfg, **_: seen.append(cfg) or tlcore.ComparisonResult(cfg.to_dict(), {}, []))
    for given in (config, config.to_dict(), tmp_path / "c.json", str(tmp_path / "c.json")):
        assert isinstance(tlcore.compare(given), tlcore.Comparison)
    assert seen == [config] * 4


def test_load_dataset_reads_a_sub_task_as_the_cli_does():
    assert load_dataset("fashion-mnist:Sandal|Sneaker").classes == ["Sandal", "Sneaker"]
