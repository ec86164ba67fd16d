"""The probe's proposed fine-tune depth and its check against measured fine-tunes; probes stored as records."""

from __future__ import annotations

import pytest

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.advice.depth import DEPTHS, depth_name, score_depth, validate_depth
from tlcore.advice.probe import ProbeCurve, ProbePoint, layer_probe, probe_from_record, propose_stages, save_probe
from tlcore.engine.features import FeatureCache
from tlcore.records.store import default_store
from tlcore.views.report import probe_report_html


def _curve(vals: list[float]) -> ProbeCurve:
    return ProbeCurve("pretrained", "w", [ProbePoint(i, f"s{i}", 8, v, v, 1e-3) for i, v in enumerate(vals)], 0, 0, 0)


def test_the_proposal_is_the_stages_after_the_peak():
    assert propose_stages(_curve([0.3, 0.5, 0.6, 0.7, 0.8])) == 1  # best at the top: the top stage only
    assert propose_stages(_curve([0.3, 0.5, 0.8, 0.7, 0.6])) == 2  # peak at stage 2 of 0..4: the 2 after it
    assert propose_stages(_curve([0.3, 0.5, 0.8, 0.8, 0.6])) == 1  # a tie goes to the later stage
    assert propose_stages(_curve([0.9, 0.5, 0.6, 0.7, 0.8])) == "all"  # the stem peaks: every stage


def test_scoring_counts_points_lost_against_the_best_depth():
    case = score_depth("d", 20, _curve([0.3, 0.5, 0.8, 0.7, 0.6]),  # proposes K=2
                       {1: 0.70, 2: 0.72, 3: 0.74, "all": 0.745})
    assert case.best == "all" and case.proposed == 2
    assert case.proposed_regret == pytest.approx(0.025) and not case.proposed_agrees
    tie = score_depth("d", 20, _curve([0.3, 0.5, 0.6, 0.7, 0.8]), {1: 0.74, 2: 0.74, 3: 0.70, "all": 0.70})
    assert tie.best == "1" and tie.proposed_agrees and tie.baseline_agrees  # a tie goes to the shallower K


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_validate_depth_measures_every_k_and_the_proposal(image_folder, tiny_weights):
    backbone = BackboneSpec("test_efficientnet", str(tiny_weights))
    spec = DatasetSpec(str(image_folder))
    report = validate_depth([spec], sizes=[6], preset="quick", backbone=backbone)
    assert len(report.cases) == 1 and len(report.sweeps) == 1
    case = report.cases[0]
    record = default_store().record(report.sweeps[0])
    strategies = {s["name"]: s["stages"] for s in record["config"]["experiment"]["strategies"]}
    assert {depth_name(k): k for k in DEPTHS}.items() <= strategies.items()
    assert set(case.accuracies) >= {"1", "2", "3", "all"} and str(case.proposed) in case.accuracies
    runs = {r["run"].strategy: r["run"].accuracy for r in default_store().runs(report.sweeps[0])}
    assert all(case.accuracies[str(k)] == pytest.approx(runs[depth_name(k)], abs=1e-4) for k in DEPTHS)
    assert 0 <= report.agreement(True) <= 1 and report.summary_lines()[0].startswith("fine-tune depth")
    again = validate_depth([spec], sizes=[6], preset="quick", backbone=backbone)  # cells reused, none trained
    assert again.cases[0].accuracies == case.accuracies
    assert all(r["resumed"] for r in default_store().runs(again.sweeps[0]))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_probe_is_a_record_with_a_report(image_folder, tiny_weights, tmp_path, monkeypatch):
    config = ExperimentConfig(dataset=DatasetSpec(str(image_folder)),
                              backbone=BackboneSpec("test_efficientnet", str(tiny_weights)),
                              strategies=(make_strategy("feature-extraction", head_max_iter=30),), image_size=32)
    result = layer_probe(config, random_weights=False, cache=FeatureCache(tmp_path / "c"))
    record_id = save_probe(result, config, False)
    assert record_id and result.record_id == record_id
    record = default_store().record(record_id)
    assert record["kind"] == "probe" and record["backbone"] == "test_efficientnet"
    back = probe_from_record(record)
    assert back.to_dict() == result.to_dict()
    assert "--image-size 32" in back.command and "--no-random" in back.command
    assert save_probe(layer_probe(config, random_weights=False, cache=FeatureCache(tmp_path / "c")), config,
                      False) == record_id  # the same inputs keep one record
    assert len(default_store().records(kind="probe")) == 1
    page = probe_report_html(back)
    assert record_id in page and result.statement().split(":")[0] in page and "plotly" in page
    assert all(f"<td>{p.label}</td>" in page for p in result.curves["pretrained"].points)  # a row per stage
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    assert save_probe(result, config, True) == ""  # read-only: nothing stored
    assert len(default_store().records(kind="probe")) == 1
