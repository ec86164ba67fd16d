"""Transferability scores on constructed cases with known answers, the recommendation rules at their boundaries,
measured evidence outweighing the rules, and the validation arithmetic."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from tlcore import BackboneSpec, DatasetSpec, make_strategy
from tlcore.data.load import load_dataset
from tlcore.core.errors import DataError
from tlcore.advice.recommend import (DIFFERENT, FE, FEW_IMAGES, FT2, FT_ALL, MANY_IMAGES_DIFFERENT, SCRATCH, SCRATCH_IMAGES,
                              SIMILAR, SOLVED, describe, measure, recommend, region, similarity_score)
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
    (FEW_IMAGES, 0.0, (FT2, FE)), (5, 0.9, (FT2, FE)), (299, DIFFERENT, (FT2, FE)),
    (MANY_IMAGES_DIFFERENT, DIFFERENT, (FT_ALL, FT2)), (MANY_IMAGES_DIFFERENT, SIMILAR, (FT2, FE)),
    (999, 0.0, (FT_ALL, FT2)), (SCRATCH_IMAGES, DIFFERENT - 0.01, (SCRATCH, FT_ALL)),
    (SCRATCH_IMAGES, DIFFERENT, (FT_ALL, FT2)), (SCRATCH_IMAGES, SIMILAR, (FT_ALL, FT2)),
])
def test_rules_at_their_boundaries(n, similarity, expected):
    assert region(n, similarity) == expected


def test_solved_features_override_and_reasons_quote_thresholds():
    s = describe(200, 5, 0.8)
    assert recommend(s).choice == FT2
    s.linear_probe_accuracy, s.pixel_accuracy = SOLVED, 0.5
    rec = recommend(s)
    assert rec.choice == FE and rec.runner_up == FT2
    text = " ".join(r.text() for r in rec.reasons)
    assert f">= {SOLVED}" in text and f">= {SIMILAR}" in text and "images per class = 200" in text
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
    report.cases.append(score_case("a", 100, rec(100, 0.9), {"feature-extraction": 0.80, "fine-tune": 0.85,
                                                             "scratch": 0.6}))  # FT, the best: agrees
    report.cases.append(score_case("b", 20, rec(20, 0.9), {"feature-extraction": 0.755, "fine-tune": 0.75,
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


def test_stored_comparison_becomes_evidence(image_folder, tiny_weights, tmp_path):
    from tlcore import ExperimentConfig, compare
    from tlcore.advice.recommend import evidence_from_store

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
    assert store.schema_version == SCHEMA_VERSION == 3  # v1 -> v2 -> v3
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
