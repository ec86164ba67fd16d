"""Transferability scores on constructed cases with known answers, the recommendation rules at their boundaries,
measured evidence outweighing the rules, and the validation arithmetic."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tlcore import BackboneSpec, DatasetSpec, make_strategy
from tlcore.data.load import load_dataset
from tlcore.core.errors import DataError
from tlcore.advice.calibration import CALIBRATION
from tlcore.advice.records import recommendation_from_record, save_recommendation
from tlcore.advice.rules import (DIFFERENT, FE, FEW_IMAGES, FT2, FT_ALL, MANY_IMAGES_DIFFERENT, SCRATCH, SCRATCH_IMAGES,
                                 SIMILAR, SOLVED, Recommendation, recommend, region)
from tlcore.advice.signals import describe, feature_lead_text, measure, similarity_score
from tlcore.records.store import MIGRATIONS, SCHEMA_VERSION, Store
from tlcore.advice.transferability import head_entropy, knn_accuracy, leep, logme
from tlcore.advice.validate import ValidationReport, score_case
from tlcore.data.load import parse_dataset


def _clusters(separation: float, n_per_class=30, classes=4, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * separation
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def test_separable_features_score_high_and_random_labels_low():
    x, y = _clusters(separation=6.0)
    shuffled = np.random.default_rng(1).permutation(y)
    assert knn_accuracy(x, y) > 0.95
    assert knn_accuracy(x, shuffled) < 0.5  # chance is 0.25
    assert logme(x, y) > logme(x, shuffled) + 0.2
    # more separation, more evidence
    assert logme(*_clusters(separation=6.0)) > logme(*_clusters(separation=0.5))


def test_leep_and_head_entropy_on_known_cases():
    y = np.repeat(np.arange(3), 20)
    exact = np.full((60, 10), 1e-6)
    exact[np.arange(60), y] = 1.0
    exact /= exact.sum(1, keepdims=True)
    assert leep(exact, y) == pytest.approx(0.0, abs=1e-3)  # the source head determines the label
    uniform = np.full((60, 10), 0.1)
    assert leep(uniform, y) == pytest.approx(np.log(1 / 3), abs=1e-6)  # it tells nothing
    assert head_entropy(np.zeros((5, 1000))) == pytest.approx(1.0)
    assert head_entropy(np.eye(1000)[:5] * 50) < 0.01


def test_similarity_combines_normalised_leep_and_feature_lead():
    assert similarity_score(-np.log(10) * 0.2, None, None, 10)[0] == pytest.approx(0.8)  # NLEEP alone
    assert similarity_score(None, 0.9, 0.7, 2)[0] == pytest.approx(1.0)  # features lead pixels by 20 of 50 points
    assert similarity_score(None, 0.7, 0.7, 2)[0] == pytest.approx(0.5)
    assert similarity_score(0.0, 0.5, 0.9, 2)[0] == pytest.approx(0.5)  # the head decides, but pixels beat features
    assert similarity_score(None, None, None, 10) == (0.5, "unknown (nothing measured)")


@pytest.mark.parametrize("n, similarity, expected", [
    (FEW_IMAGES, 0.0, (FT2, FE)), (5, 0.9, (FT2, FE)), (100, 0.2, (FT2, FE)),
    (MANY_IMAGES_DIFFERENT, DIFFERENT, (FT_ALL, FT2)), (MANY_IMAGES_DIFFERENT, SIMILAR, (FE, FT2)),
    (50, 0.6, (FE, FT2)), (100, 0.9, (FE, FT2)),
    (999, 0.0, (FT_ALL, FT2)), (SCRATCH_IMAGES, DIFFERENT - 0.01, (SCRATCH, FT_ALL)),
    (SCRATCH_IMAGES, DIFFERENT, (FT_ALL, FT2)), (SCRATCH_IMAGES, SIMILAR, (FT_ALL, FT2)),
])
def test_rules_at_their_boundaries(n, similarity, expected):
    assert region(n, similarity) == expected


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_feature_extraction_exactly_where_fine_tunes_expected_gain_is_under_a_point(classes):
    """Rules v3: below the deep fine-tune and scratch sizes, the cheaper strategy wherever fine-tune is expected to
    add less than COST_MARGIN; the map then has a feature-extraction area, and its legend lists only drawn areas."""
    from functools import partial

    from tlcore.advice.calibration import COST_MARGIN, expected_gain
    from tlcore.views.charts import strategy_map

    for n in (2, 5, 20, 50, 100, 299):
        for sim in np.linspace(0, 1, 11):
            gain = expected_gain(n, classes, None, sim)
            assert region(n, sim, classes)[0] == (FE if gain < COST_MARGIN else FT2), (n, sim, gain)
    for lp in (0.5, 0.8, 0.95):  # with a measured linear probe the gain comes from it
        gain = expected_gain(50, classes, lp, 0.5)
        assert region(50, 0.5, classes, lp)[0] == (FE if gain < COST_MARGIN else FT2)
    figure = strategy_map(partial(region, classes=classes))
    drawn = set(np.unique(figure.data[0].z))
    assert list(figure.data[0].colorbar.ticktext) == [name for i, name in enumerate(
        ["feature-extraction", "fine-tune (top 2 stages)", "fine-tune (all stages)", "scratch"]) if i in drawn]
    assert "feature-extraction" in figure.data[0].colorbar.ticktext  # similar data with enough images


def test_cost_rule_states_its_gain_and_the_time_range_its_estimate():
    s = describe(100, 10, 0.9)
    rec = recommend(s)
    assert rec.choice == FE and rec.runner_up == FT2
    reason = next(r for r in rec.reasons if r.signal.startswith("fine-tune's expected gain"))
    assert reason.rule == "< 1 point" and reason.value.endswith("points") and reason.source == "validation"
    s = describe(5, 10, 0.1)
    reason = next(r for r in recommend(s).reasons if r.signal.startswith("fine-tune's expected gain"))
    assert reason.rule == ">= 1 point" and float(reason.value.split()[0]) >= 1


def test_solved_features_override_and_reasons_quote_thresholds():
    s = describe(20, 5, 0.2)
    assert recommend(s).choice == FT2
    s.linear_probe_accuracy, s.pixel_accuracy = SOLVED, 0.5
    rec = recommend(s)
    assert rec.choice == FE and rec.runner_up == FT2
    text = " ".join(r.text() for r in rec.reasons)
    assert f">= {SOLVED}" in text and f"< {SOLVED}" not in text and f"< {DIFFERENT}" in text
    assert "images per class = 20" in text
    s = describe(200, 5, 0.8)  # the cost rule already picks feature extraction: the probe's reason still says why
    s.linear_probe_accuracy, s.pixel_accuracy = 0.98, 0.5
    text = " ".join(r.text() for r in recommend(s).reasons)
    assert f">= {SOLVED}" in text and f">= {SIMILAR}" in text and f"< {SOLVED}" not in text
    assert rec.confidence in ("high", "medium", "low") and all(r.source for r in rec.reasons)


def test_measured_evidence_outweighs_the_rules():
    s = describe(8, 10, 0.9)  # the rules say fine-tune the top stages
    assert recommend(s).choice == FT2
    evidence = [{"kind": "feature-extraction", "stages": None, "accuracy": 0.80, "train_seconds": 5},
                {"kind": "fine-tune", "stages": 2, "accuracy": 0.70, "train_seconds": 50},
                {"kind": "fine-tune", "stages": 2, "accuracy": 0.72, "train_seconds": 52}]
    rec = recommend(s, evidence)
    assert rec.choice == FE and rec.based_on == "measurements" and rec.runner_up == FT2
    assert "measured on this dataset" in rec.reasons[0].text() and "the rules alone said" in rec.reasons[0].text()
    assert {o.basis for o in rec.outlooks if o.strategy == "feature-extraction"} == {"measured (1 run)"}
    # within 1 point the cheaper strategy is recommended, even when fine-tuning's mean is higher
    close = [dict(e, accuracy=0.805) if e["kind"] == "feature-extraction" else dict(e, accuracy=0.81)
             for e in evidence]
    assert recommend(s, close).choice == FE
    # measurements that agree with the rules say so
    better_ft = [dict(e, accuracy=0.9) if e["kind"] == "fine-tune" else e for e in evidence]
    assert recommend(s, better_ft).choice == FT2 and "the rules agree" in recommend(s, better_ft).reasons[0].text()


def test_validation_arithmetic_on_known_outcomes():
    def rec(n, similarity):
        return recommend(describe(n, 10, similarity))

    report = ValidationReport()
    report.cases.append(score_case("a", 5, rec(5, 0.9), {"feature-extraction": 0.62, "fine-tune": 0.605,
                                                         "scratch": 0.2}))  # FT, 1.5 points behind: disagrees
    report.cases.append(score_case("a", 100, rec(100, 0.1), {"feature-extraction": 0.80, "fine-tune": 0.85,
                                                             "scratch": 0.6}))  # FT, the best: agrees
    report.cases.append(score_case("b", 20, rec(20, 0.1), {"feature-extraction": 0.755, "fine-tune": 0.75,
                                                           "scratch": 0.5}))  # FT, within 1 point: agrees
    report.cases.append(score_case("b", 2000, rec(2000, 0.1), {"feature-extraction": 0.70, "fine-tune": 0.90,
                                                               "scratch": 0.88}))  # scratch, 2 behind
    assert [c.agrees for c in report.cases] == [False, True, True, False]
    assert report.agreement == 0.5
    assert report.mean_regret == pytest.approx((0.015 + 0 + 0.005 + 0.02) / 4)
    assert list(report.to_frame()["recommended"]) == ["fine-tune", "fine-tune", "fine-tune", "scratch"]
    assert report.cases[3].note == ""  # scratch: nothing to note; all-stages fine-tuning would be noted


def test_parse_dataset_and_restrict_to_a_sub_task(image_folder):
    spec = parse_dataset("fashion-mnist:Sandal|Sneaker|Ankle boot")
    assert spec.source == "fashion-mnist" and spec.classes == ("Sandal", "Sneaker", "Ankle boot")
    assert parse_dataset(str(image_folder)).classes is None
    ds = load_dataset(spec)
    assert ds.classes == ["Sandal", "Sneaker", "Ankle boot"] and ds.num_classes == 3
    for split in ("train", "val", "test"):
        assert set(np.unique(ds.labels(split))) == {0, 1, 2}
    assert ds.summary()["sizes"]["test"] == 300  # 100 test images a class in the bundled subset
    full = load_dataset("fashion-mnist")
    assert ds.source_fingerprint() != full.source_fingerprint()
    with pytest.raises(DataError, match="not in 'fashion-mnist'"):
        load_dataset(DatasetSpec("fashion-mnist", classes=("Sandal", "Boots")))


@pytest.mark.slow
def test_measure_on_tiny_data_gives_scores_in_range(image_folder, tiny_weights):
    s = measure(DatasetSpec(str(image_folder)), BackboneSpec("test_efficientnet", str(tiny_weights)), image_size=32)
    assert s.classes == 3 and s.images_per_class == pytest.approx(s.train_images / 3)
    for value in (s.knn_accuracy, s.linear_probe_accuracy, s.pixel_accuracy, s.head_entropy, s.similarity):
        assert 0.0 <= value <= 1.0
    assert s.leep <= 0 and np.isfinite(s.logme)
    assert s.seconds_per_image["scratch"] > 0 and s.seconds_per_image["fine-tune"] > 0
    rec = recommend(s)
    assert {o.strategy for o in rec.outlooks} >= {"feature-extraction", "scratch"}
    assert all(o.accuracy_low <= o.accuracy_high for o in rec.outlooks)


@pytest.mark.slow
def test_stored_comparison_becomes_evidence(image_folder, tiny_weights, tmp_path):
    from tlcore import ExperimentConfig, compare
    from tlcore.advice.records import evidence_from_store

    store = Store(tmp_path / "s.db")
    spec = DatasetSpec(str(image_folder))
    backbone = BackboneSpec("test_efficientnet", str(tiny_weights))
    fast = {"epochs": 1, "batch_size": 8, "min_steps": 0}
    result = compare(ExperimentConfig(dataset=spec, backbone=backbone, image_size=32,
                                      strategies=[make_strategy("feature-extraction", head_max_iter=20),
                                                  make_strategy("scratch", **fast)]), store=store)
    s = measure(spec, backbone, image_size=32)
    evidence = evidence_from_store(s, store)
    assert sorted(e["kind"] for e in evidence) == ["feature-extraction", "scratch"]
    assert {e["record_id"] for e in evidence} == {result.record_id}
    rec = recommend(s, evidence)
    assert rec.based_on == "measurements"
    best = max(result.runs, key=lambda r: r.accuracy)
    assert rec.choice.kind == best.kind or abs(result.runs[0].accuracy - result.runs[1].accuracy) <= 0.01


def test_store_migrates_from_schema_1(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO records (id, kind, status, created_at, updated_at, config) VALUES "
                 "('r1', 'sweep', 'completed', 0, 0, '{}')")
    conn.execute("INSERT INTO runs (record_id, run_id, strategy, kind, seed, status, created_at, payload) VALUES "
                 "('r1', 'x', 'scratch', 'scratch', 0, 'completed', 0, "
                 "'{\"run_id\": \"x\", \"strategy\": \"scratch\", \"kind\": \"scratch\", \"status\": \"completed\", "
                 "\"backbone\": \"b\", \"dataset\": {\"fingerprint\": \"fp\"}}')")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION == 4  # v1 -> v2 -> v3 -> v4 (the trash)
    rows = store.runs_for_data("fp", "b")
    assert len(rows) == 1 and rows[0]["run"].run_id == "x" and store.record("r1")["status"] == "completed"


@pytest.mark.slow
def test_validate_scores_recommendations_against_a_real_sweep(image_folder, tiny_weights, tmp_path):
    from tlcore.advice.validate import validate

    store = Store(tmp_path / "v.db")
    report = validate([DatasetSpec(str(image_folder))], sizes=[3, 6], preset="quick",
                      backbone=BackboneSpec("test_efficientnet", str(tiny_weights)), store=store)
    assert [c.per_class for c in report.cases] == [3, 6] and len(report.sweeps) == 1
    for case in report.cases:
        assert set(case.accuracies) == {"feature-extraction", "fine-tune", "scratch"}
        assert case.best_accuracy == max(case.accuracies.values())
        assert case.recommended_accuracy == case.accuracies[case.recommended]
        assert case.agrees == (case.regret <= 0.01)
    again = validate([DatasetSpec(str(image_folder))], sizes=[3, 6], preset="quick",
                     backbone=BackboneSpec("test_efficientnet", str(tiny_weights)), store=store)
    assert [c.accuracies for c in again.cases] == [c.accuracies for c in report.cases]  # sweeps came from the store


# ------------------------------------------------------------------------------------ issue #12: the Recommend page
@pytest.mark.parametrize("n", [1, 5, 20, 100, 1000, 1_000_000])
@pytest.mark.parametrize("classes", [2, 10, 1000])
@pytest.mark.parametrize("similarity", [0.0, 0.5, 1.0])
def test_described_ranges_are_calibrated_not_0_to_1(n, classes, similarity):
    rec = recommend(describe(n, classes, similarity))
    assert {o.kind for o in rec.outlooks} == {"feature-extraction", "fine-tune", "scratch"}
    for o in rec.outlooks:
        assert 0.0 <= o.accuracy_low <= o.accuracy_high <= 1.0, o
        assert (o.accuracy_low, o.accuracy_high) != (0.0, 1.0) and o.accuracy_high - o.accuracy_low < 0.9, o
        assert o.accuracy_low >= np.floor(100 / classes) / 100  # never below chance (rounded down to 2 decimals)
        assert "not estimated" not in o.basis and "validation" in o.basis


@pytest.mark.parametrize("lp, n, classes", [(0.723, 20, 10), (0.596, 5, 10), (0.955, 100, 10), (0.486, 5, 4),
                                            (0.30, 1000, 100), (0.999, 10, 2)])
def test_measured_ranges_ordered_and_bounded(lp, n, classes):
    s = describe(n, classes, 0.5)
    s.described, s.linear_probe_accuracy, s.pixel_accuracy = False, lp, 0.5
    ranges = {o.kind: (o.accuracy_low, o.accuracy_high) for o in recommend(s).outlooks}
    for low, high in ranges.values():
        assert 0.0 <= low <= high <= 1.0 and high - low < 0.6


def test_calibration_constants_say_where_they_came_from():
    assert "recommend --validate" in CALIBRATION["source"] and CALIBRATION["cases"] >= 10
    assert set(CALIBRATION["strategies"]) == {"feature-extraction", "fine-tune", "scratch"}
    for m in CALIBRATION["strategies"].values():
        assert m["measured"][0] <= 0 <= m["measured"][1] and m["described"][0] <= 0 <= m["described"][1]
    for kind, band in CALIBRATION["seconds"].items():
        assert 0 < band[0] <= 1 <= band[1], kind


VALIDATION_JSON = Path(__file__).resolve().parents[1] / "docs" / "validation" / "recommend-validate.json"


def _flat(value, prefix="") -> dict:
    """A nested dict or list as {path: leaf}, so pytest.approx can compare it."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}/{i}").items()}
    return {prefix: value}


def _validation_cases():
    from tlcore.advice.validate import Case

    return [Case(**c) for c in json.loads(VALIDATION_JSON.read_text())["cases"]]


def test_calibration_is_the_fit_of_the_recorded_validation_and_covers_each_strategy():
    """Issue 23.9: the ranges and times are fitted on the validation run kept in docs/validation (the comparison's
    default schedules), and each strategy's coverage, refitted without each dataset, is at least 80%."""
    from tlcore.advice.validate import calibrate

    cases = _validation_cases()
    assert len(cases) == 15 and all(set(c.accuracies) == {"feature-extraction", "fine-tune", "scratch"}
                                    for c in cases)
    fitted = calibrate(cases)
    for key in ("linear_probe", "strategies", "seconds", "fitted_on", "sizes", "similarities", "cases"):
        assert _flat(fitted[key]) == pytest.approx(_flat(CALIBRATION[key]), abs=1e-3), key
    for mode in ("in_sample", "leave_one_dataset_out"):
        for kind, share in fitted["coverage"][mode]["measured"].items():
            assert share == pytest.approx(CALIBRATION["coverage"][mode]["measured"][kind], abs=1e-3)
            assert share >= 0.8, (mode, kind, share)
    # the stated time ranges cover the measured seconds of at least 80% of the cases for every strategy
    for kind, (low, high) in CALIBRATION["seconds"].items():
        inside = [low <= c.measured_seconds[kind] / c.predicted_seconds[kind] <= high for c in cases]
        assert sum(inside) / len(inside) >= 0.8, kind


def test_cost_aware_rule_against_always_fine_tuning_on_the_recorded_validation():
    """Issue 23.12: both rules scored on the suite, the cost-aware one with calibrations refitted without each
    dataset; the figures are those docs/benchmarks.md reports."""
    from tlcore.advice.validate import ValidationReport

    rules = ValidationReport(cases=_validation_cases()).rules()
    v2, v3 = rules["v2"], rules["cost-aware"]
    assert (v2["agreement"], v3["agreement"]) == (pytest.approx(0.6), pytest.approx(0.6))
    assert v2["mean_regret_points"] == pytest.approx(1.276, abs=1e-3)
    assert v3["mean_regret_points"] == pytest.approx(1.511, abs=1e-3)
    assert v2["mean_regret_seconds"] == pytest.approx(3.212, abs=1e-3)
    assert v3["mean_regret_seconds"] == pytest.approx(0.65, abs=1e-3)
    assert sum(r["kind"] == "feature-extraction" for r in v3["cases"]) == 6


def test_validation_runs_the_comparisons_default_schedules(monkeypatch):
    """The cases that fit the ranges are trained with what Compare runs (COMPARE_PRESET), not the sweep's short
    schedules."""
    from tlcore.advice import validate as validation
    from tlcore.advice.calibration import COMPARE_PRESET
    from tlcore.experiments.config import build_config

    seen = []

    def capture(config, **_):
        seen.append(config)
        raise RuntimeError("captured")

    monkeypatch.setattr(validation, "run_sweep", capture)
    with pytest.raises(RuntimeError, match="captured"):
        validation.validate([DatasetSpec("digits")], [5])
    expected = build_config(COMPARE_PRESET, dataset=DatasetSpec("digits")).strategies
    assert seen[0].experiment.strategies == expected and seen[0].max_repeats == 0
    assert seen[0].long_only == () and not seen[0].long_strategies


def _case(dataset, n, measured, ranges, described_ranges=None):
    from tlcore.advice.validate import score_case

    rec = recommend(describe(n, 10, 0.5))
    for o in rec.outlooks:
        o.accuracy_low, o.accuracy_high = ranges[o.kind]
    described = None
    if described_ranges:
        described = recommend(describe(n, 10, 0.5))
        for o in described.outlooks:
            o.accuracy_low, o.accuracy_high = described_ranges[o.kind]
    return score_case(dataset, n, rec, measured, described)


def test_coverage_on_a_hand_made_report():
    measured = {"feature-extraction": 0.70, "fine-tune": 0.75, "scratch": 0.40}
    report = ValidationReport()
    # inside, inside (on the edge counts), outside
    report.cases.append(_case("a", 5, measured, {"feature-extraction": (0.6, 0.8), "fine-tune": (0.7, 0.75),
                                                 "scratch": (0.5, 0.6)},
                              {"feature-extraction": (0.1, 0.9), "fine-tune": (0.1, 0.9), "scratch": (0.1, 0.9)}))
    # outside, inside, inside
    report.cases.append(_case("b", 20, measured, {"feature-extraction": (0.71, 0.8), "fine-tune": (0.6, 0.8),
                                                  "scratch": (0.3, 0.45)},
                              {"feature-extraction": (0.1, 0.2), "fine-tune": (0.1, 0.9), "scratch": (0.1, 0.9)}))
    assert report.cases[0].ranges == {"feature-extraction": [0.6, 0.8], "fine-tune": [0.7, 0.75],
                                      "scratch": [0.5, 0.6]}
    assert report.coverage() == pytest.approx(4 / 6)
    assert report.coverage(kind="scratch") == pytest.approx(1 / 2)
    assert report.coverage(kind="fine-tune") == 1.0
    assert report.coverage(described=True) == pytest.approx(5 / 6)
    summary = report.to_dict()["coverage"]
    assert summary["measured"] == pytest.approx(4 / 6) and summary["pairs"] == 6
    assert summary["by_strategy"]["feature-extraction"] == {"measured": 0.5, "described": 0.5}
    assert summary["in_sample"] is False  # "a" and "b" are not datasets the ranges were fitted on
    assert "leave_one_dataset_out" not in summary  # one case a dataset: too few to refit without either
    assert any("coverage" in line and "67%" in line for line in report.summary_lines())
    assert ValidationReport().coverage() is None


def test_fit_calibration_covers_its_cases_and_states_ordered_ranges():
    from tlcore.advice.validate import fit_calibration, leave_one_dataset_out, ranges_from

    rng = np.random.default_rng(0)
    cases = []
    for d in range(4):
        for n in (5, 20, 100):
            lp = 0.5 + 0.1 * np.log10(n) + rng.normal(0, 0.03)
            measured = {"feature-extraction": lp - 0.02 + rng.normal(0, 0.02),
                        "fine-tune": lp + 0.01 + rng.normal(0, 0.02),
                        "scratch": 0.2 + 0.15 * np.log10(n) + rng.normal(0, 0.05)}
            case = _case(f"d{d}", n, measured, {k: (0, 1) for k in measured})
            case.linear_probe_accuracy, case.images_per_class, case.similarity = float(lp), n, 0.3 + 0.1 * d
            cases.append(case)
    cal = fit_calibration(cases, target=0.8)
    assert cal["cases"] == 12 and cal["fitted_on"] == ["d0", "d1", "d2", "d3"]
    assert cal["linear_probe"]["similarity"] >= 0
    assert cal["linear_probe"]["log10_n"] > 0 and cal["strategies"]["scratch"]["log10_n"] > 0
    hits = total = 0
    for case in cases:
        measured_ranges, described_ranges = ranges_from(cal, case)
        for kind, (low, high) in measured_ranges.items():
            assert 0 <= low <= high <= 1 and described_ranges[kind][0] <= described_ranges[kind][1]
            hits += low <= case.accuracies[kind] <= high
            total += 1
    assert hits / total == 1.0  # 12 cases: the rank used is the most extreme residual on each side
    lodo = leave_one_dataset_out(cases, target=0.8)
    assert 0.5 <= lodo["measured"] <= 1 and 0.5 <= lodo["described"] <= 1
    assert leave_one_dataset_out(cases[:3]) is None  # one dataset: nothing to hold out


def test_negative_feature_lead_is_worded_the_right_way_round():
    assert feature_lead_text(0.024) == "features lead raw pixels by 2.4 points"
    assert feature_lead_text(-0.024) == "raw pixels lead the features by 2.4 points"
    assert feature_lead_text(0.0) == "features and raw pixels score the same"
    basis = similarity_score(None, 0.676, 0.70, 3)[1]
    assert "raw pixels lead the features by 2.4 points" in basis and "-" not in basis


def test_recommendation_round_trips_through_its_stored_summary(tmp_path):
    s = describe(8, 10, 0.9)
    s.described, s.linear_probe_accuracy, s.pixel_accuracy, s.knn_accuracy = False, 0.7, 0.5, 0.65
    evidence = [{"kind": "feature-extraction", "stages": None, "accuracy": 0.80, "train_seconds": 5},
                {"kind": "fine-tune", "stages": 2, "accuracy": 0.70, "train_seconds": 50}]
    for rec in (recommend(describe(50, 10, 0.5)), recommend(s), recommend(s, evidence)):
        again = Recommendation.from_dict(rec.to_dict())
        assert again == rec and again.to_dict() == rec.to_dict()
    # from a stored record, as History and share links read it
    store = Store(tmp_path / "r.db")
    rec = recommend(s, evidence)
    record_id = save_recommendation(rec, DatasetSpec("fashion-mnist"), BackboneSpec(), 8, store=store)
    opened = recommendation_from_record(store.record(record_id))
    assert opened == rec and opened.record_id == record_id
    assert opened.choice.label == rec.choice.label and [r.text() for r in opened.reasons] == \
        [r.text() for r in rec.reasons]
    # an older summary with fewer keys (and an extra one) still opens
    old = rec.to_dict()
    for key in ("record_id", "rules_version", "evidence"):
        old.pop(key)
    old["outlooks"] = [{k: v for k, v in o.items() if k != "kind"} for o in old["outlooks"]]
    old["signals"]["something_new"] = 1
    assert Recommendation.from_dict(old).outlooks == rec.outlooks


@pytest.mark.slow
def test_same_inputs_twice_make_one_recommendation_record(image_folder, tiny_weights, tmp_path):
    from tlcore.advice.records import advise

    store = Store(tmp_path / "s.db")
    spec, backbone = DatasetSpec(str(image_folder)), BackboneSpec("test_efficientnet", str(tiny_weights))
    first = advise(spec, backbone, image_size=32, store=store)
    second = advise(spec, backbone, image_size=32, store=store)  # measured again: timings differ, signals do not
    assert second.record_id == first.record_id
    assert len(store.records(kind="recommendation")) == 1
    assert store.record(first.record_id)["summary"]["signals"]["seconds"] == second.signals.seconds  # updated
    # other inputs, or the same inputs with other signals, are another record
    assert advise(spec, backbone, image_size=32, seed=1, store=store).record_id != first.record_id
    changed = recommend(replace_signals(second.signals, linear_probe_accuracy=0.123))
    assert save_recommendation(changed, spec, backbone, None, 0, 32, store) != first.record_id
    assert len(store.records(kind="recommendation")) == 3
    # per_class spelled differently (the CLI passes text) is the same input
    a = save_recommendation(recommend(describe(20, 10, 0.5)), spec, backbone, "20", store=store)
    assert save_recommendation(recommend(describe(20, 10, 0.5)), spec, backbone, 20, store=store) == a



@pytest.mark.slow
def test_advise_measures_and_stores_a_sub_task_given_as_text(tiny_weights, tmp_path):
    from tlcore.advice.records import advise

    store = Store(tmp_path / "s.db")
    backbone = BackboneSpec("test_efficientnet", str(tiny_weights))
    rec = advise("fashion-mnist:Sandal|Sneaker", backbone, per_class=5, image_size=32, store=store)
    assert rec.signals.classes == 2 and rec.signals.train_images == 10
    stored = store.record(rec.record_id)["config"]["dataset"]
    assert stored["source"] == "fashion-mnist" and stored["classes"] == ["Sandal", "Sneaker"]
    # the same sub-task given as a spec is the same input, so the same record
    spec = DatasetSpec("fashion-mnist", classes=("Sandal", "Sneaker"))
    assert save_recommendation(rec, spec, backbone, 5, 0, 32, store) == rec.record_id

def replace_signals(signals, **changes):
    from dataclasses import replace

    return replace(signals, **changes)


def test_read_only_refuses_to_measure(image_folder, tiny_weights, monkeypatch):
    from tlcore.advice.records import advise
    from tlcore.core.errors import ReadOnlyError

    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    spec, backbone = DatasetSpec(str(image_folder)), BackboneSpec("test_efficientnet", str(tiny_weights))
    with pytest.raises(ReadOnlyError, match="read-only"):
        measure(spec, backbone, image_size=32)
    with pytest.raises(ReadOnlyError, match="read-only"):
        advise(spec, backbone, image_size=32)
    # describing computes only the rules, which a demo may do
    assert recommend(describe(20, 10, 0.5)).choice == FT2


def test_recommend_page_shows_full_labels_and_hides_measuring_when_read_only(monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = str(Path(__file__).resolve().parents[1] / "pages" / "3_Recommend.py")
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert list(at.radio(key="rc_mode").options) == ["only a description of it"]  # no measuring in a demo
    at.number_input(key="rc_desc_n").set_value(5).run()
    card = next(m.value for m in at.markdown if m.value.startswith("#### Recommended:"))
    assert "fine-tune (top 2 stages)" in card and "**Runner-up:** feature-extraction" in card  # in full, not cut
    outlook = next(d.value for d in at.dataframe if "accuracy from" in d.value.columns)
    assert (outlook["accuracy from"] > 0).all() and (outlook["accuracy to"] < 1).all()
    assert not at.button  # nothing to confirm or run
