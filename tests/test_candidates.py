"""Ranking backbones at image sizes without training (tlcore.advice.candidates): H-score on constructed cases, the
order, the Pareto front and the statement from the numbers, the FE head's val accuracy equal to a comparison's on the
same features, the feature cache reused by a second ranking, failing candidates reported while the rest are ranked,
the CLI, and the record's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tlcore.advice.candidates import (CandidateResult, Ranking, candidate_sizes, fraction_text, mark_front,
                                      rank_candidates, ranking_from_record, statement, _order)
from tlcore.experiments.backbones import Candidate, parse_candidates
from tlcore.advice.transferability import h_score
from tlcore.core.errors import ConfigError
from tlcore.engine.features import FeatureCache
from tlcore.records.store import default_store
from conftest import make_image_folder


# -- H-score --------------------------------------------------------------------------------------------------------
def test_h_score_is_the_explained_share_of_variance_on_a_constructed_case():
    """1-D: class 0 at -1.5 and -0.5, class 1 at 0.5 and 1.5: between-class variance 1, total 1.25, so the original
    H-score is 0.8; scaling or shifting the features changes nothing."""
    f = np.array([[-1.5], [-0.5], [0.5], [1.5]])
    y = np.array([0, 0, 1, 1])
    assert h_score(f, y, shrinkage=False) == pytest.approx(0.8)
    assert h_score(7 * f + 3, y, shrinkage=False) == pytest.approx(0.8)
    # Two directions, one carrying the label: the same 0.8, the label-free direction adds nothing
    noise = np.array([[1.0], [-1.0], [-1.0], [1.0]])
    assert h_score(np.hstack([f, noise]), y, shrinkage=False) == pytest.approx(0.8)


def test_h_score_separates_separable_from_random_labels_with_more_dimensions_than_images():
    """100 images in 256 dimensions: the sample covariance is singular, so the unshrunk score over-fits (random labels
    reach the maximum too); the shrunk one (Ibrahim et al.) still tells separable classes from random labels."""
    rng = np.random.default_rng(0)
    n, d, classes = 100, 256, 4
    y = np.repeat(np.arange(classes), n // classes)
    means = rng.normal(0, 1, (classes, d))
    separable = means[y] * 2 + rng.normal(0, 1, (n, d))
    random_features = rng.normal(0, 1, (n, d))
    good, bad = h_score(separable, y), h_score(random_features, y)
    assert 0 <= bad < 0.2 * good and good <= classes - 1
    assert h_score(random_features, y, shrinkage=False) == pytest.approx(classes - 1, abs=1e-6)  # over-fits
    assert h_score(3 * separable, y) == pytest.approx(good)  # the shrinkage is scale-free too


# -- order, front, statement (numbers given) --------------------------------------------------------------------------
def _row(name, size, acc, macs, knn=0.5, ips=None):
    return CandidateResult(name, size, fe_val_accuracy=acc, knn_accuracy=knn, macs=macs, images_per_second=ips)


def test_order_front_and_statement_come_from_the_numbers():
    rows = [_row("lite0", 96, 0.805, 100e6), _row("lite2", 128, 0.812, 310e6), _row("lite1", 128, 0.79, 200e6),
            CandidateResult("nope", 64, status="failed", reason="'nope' is not a timm model name.")]
    ordered = _order(rows)
    assert [(r.backbone, r.rank) for r in ordered] == [("lite2", 1), ("lite0", 2), ("lite1", 3), ("nope", 0)]
    mark_front(ordered, "multiply-adds")
    assert [r.pareto for r in ordered] == [True, True, False, False]  # lite1: less accurate and dearer than lite0
    text = statement(ordered, "multiply-adds")
    assert text == ("lite0 at 96 px is within 1 point of the best (lite2 at 128 px: 80.5% vs 81.2% FE val accuracy) "
                    "at a third of the multiply-adds (100 vs 310 M multiply-adds).")
    # ties on FE val accuracy: the higher k-NN accuracy first, then fewer multiply-adds
    tied = _order([_row("a", 64, 0.8, 300e6, knn=0.7), _row("b", 64, 0.8, 100e6, knn=0.7),
                   _row("c", 64, 0.8, 50e6, knn=0.6)])
    assert [r.backbone for r in tied] == ["b", "a", "c"]
    assert statement(_order([_row("x", 64, 0.9, 10e6), _row("y", 96, 0.7, 5e6), _row("z", 48, 0.6, 2e6)]),
                     "multiply-adds") == (
        "x at 64 px is the best (90.0% FE val accuracy), and no candidate within 1 point of it costs less; the next "
        "cheaper, y at 96 px, scores 20.0 points less at half the multiply-adds (5 vs 10 M multiply-adds).")
    assert statement(_order([_row("x", 64, 0.9, 10e6), _row("y", 96, 0.7, 50e6)]), "multiply-adds") == (
        "x at 64 px is the best (90.0% FE val accuracy), and no candidate within 1 point of it costs less.")
    assert statement([CandidateResult("nope", 64, status="failed", reason="no")], "multiply-adds") == (
        "No candidate could be measured (nope at 64 px: no).")
    assert [fraction_text(r) for r in (0.5, 0.34, 0.41, 0.95)] == ["half", "a third of", "41% of", "about the same"]


def test_statement_in_time_per_image():
    ordered = _order([_row("big", 224, 0.9, 600e6, ips=20.0), _row("small", 96, 0.895, 100e6, ips=80.0)])
    assert statement(ordered, "time per image") == (
        "small at 96 px is within 1 point of the best (big at 224 px: 89.5% vs 90.0% FE val accuracy) at a quarter "
        "of the time per image (12.5 vs 50.0 ms an image).")


def test_candidates_parse_and_default_sizes():
    assert parse_candidates("tf_efficientnet_lite0@96, tf_efficientnet_lite2@128@/w/lite2.pth") == [
        Candidate("tf_efficientnet_lite0", 96), Candidate("tf_efficientnet_lite2", 128, "/w/lite2.pth")]
    with pytest.raises(ConfigError, match="name@size"):
        parse_candidates("tf_efficientnet_lite0")
    # from the automatic CPU size (28 px images: 48) to the pretrained size, with the geometric mean between
    assert candidate_sizes("tf_efficientnet_lite0", 28) == [48, 96, 224]
    assert candidate_sizes("tf_efficientnet_lite2", 28) == [48, 112, 260]
    assert candidate_sizes("no_such_backbone", 28) == [48]


# -- measured on tiny models ------------------------------------------------------------------------------------------
@pytest.fixture
def resnet_weights(tmp_path):
    import timm

    torch.manual_seed(7)
    path = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    return path


@pytest.mark.slow
def test_ranking_equals_the_comparisons_fe_head_and_reports_failures(tmp_path, tiny_weights, resnet_weights,
                                                                     one_thread):
    """The FE val accuracy of each candidate is the comparison's feature-extraction val accuracy on the same data,
    backbone and size (the comparison finds the train and val features cached and computes only the test rows); bad
    candidates fail with their reason and the rest are ranked; the record opens as the same ranking."""
    from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
    from tlcore.engine.features import default_cache
    from tlcore.experiments.compare import compare

    folder = make_image_folder(tmp_path / "data", classes=3, per_class=20)
    lite = str(tiny_weights)
    good = [Candidate("test_efficientnet", 32, lite), Candidate("test_efficientnet", 48, lite),
            Candidate("test_resnet", 32, str(resnet_weights))]
    bad = [Candidate("no_such_backbone", 32), Candidate("resnet18", 64),  # a hub name, offline in tests
           Candidate("test_resnet", 32, str(tiny_weights)),  # another architecture's weights
           ]
    with pytest.raises(ConfigError, match="image size must be between 16 and 1024 px"):  # refused when named
        Candidate("test_efficientnet", 4096, str(tiny_weights))
    messages = []
    ranking = rank_candidates(str(folder), good + bad, per_class=10, progress=messages.append)
    by_label = {c.label: c for c in ranking.candidates}
    assert [c.status for c in ranking.candidates[:3]] == ["completed"] * 3
    assert [c.rank for c in ranking.candidates] == [1, 2, 3, 0, 0, 0]
    accs = [c.fe_val_accuracy for c in ranking.completed]
    assert accs == sorted(accs, reverse=True)
    reasons = [by_label[c.label].reason for c in bad]
    assert all(by_label[c.label].status == "failed" for c in bad)
    assert "'no_such_backbone' is not a timm model name" in reasons[0]
    assert "No pretrained weights for 'resnet18'" in reasons[1]
    assert "tensors but the model has" in reasons[2] or "do not fit" in reasons[2]
    for c in ranking.completed:
        assert c.params > 0 and c.macs > 0 and c.images_per_second > 0 and c.peak_memory_mb > 0
        assert c.knn_accuracy is not None and c.logme is not None and c.h_score is not None
        assert c.fe_val_low <= c.fe_val_accuracy <= c.fe_val_high and c.rows_computed == 30 + 3 * 2
    lite_32, lite_48 = by_label[good[0].label], by_label[good[1].label]
    assert lite_48.macs > lite_32.macs
    assert any(c.pareto for c in ranking.completed) and ranking.statement.startswith(tuple(
        c.label for c in ranking.completed))
    assert len(messages) == 2 * len(good + bad)

    cache = default_cache()
    for candidate in good[:2]:
        before = cache.stats.rows_computed
        fe = make_strategy("feature-extraction")
        result = compare(ExperimentConfig(dataset=DatasetSpec(str(folder), per_class=10),
                                          backbone=BackboneSpec(candidate.backbone, candidate.weights),
                                          strategies=(fe,), image_size=candidate.image_size))
        run = result.runs[0]
        assert run.status == "completed"
        assert run.best_val_accuracy == by_label[candidate.label].fe_val_accuracy
        assert cache.stats.rows_computed - before == 3 * 4  # only the test images: train and val came from the cache

    stored = default_store().record(ranking.record_id)
    assert stored["kind"] == "ranking" and stored["status"] == "completed"
    again = ranking_from_record(stored)
    assert again.to_dict() == json.loads(json.dumps(ranking.to_dict()))
    assert Ranking.from_dict(ranking.to_dict()).to_frame().equals(ranking.to_frame())
    import tlcore

    assert tlcore.load(ranking.record_id).to_dict() == again.to_dict()
    _history_shows_the_ranking(ranking)


def _history_shows_the_ranking(ranking) -> None:
    """History lists the ranking among the records, and its share link shows the ranked table and statement."""
    from streamlit.testing.v1 import AppTest

    page = str(Path(__file__).resolve().parents[1] / "pages" / "4_History.py")
    listing = AppTest.from_file(page, default_timeout=60).run()
    assert not listing.exception, [e.value for e in listing.exception]
    shared = AppTest.from_file(page, default_timeout=60)
    shared.query_params["run"] = ranking.record_id
    shared.run()
    assert not shared.exception, [e.value for e in shared.exception]
    assert shared.title[0].value == f"Backbone ranking {ranking.record_id}"
    table = next(d.value for d in shared.dataframe)
    assert list(table["backbone"]) == [c.backbone for c in ranking.candidates]
    assert [s.value for s in shared.success] == [ranking.statement]


@pytest.mark.slow
def test_a_second_ranking_computes_no_features_and_reuses_what_it_measured(tmp_path, tiny_weights, one_thread):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=12)
    cache = FeatureCache(use_disk=False)
    candidates = [Candidate("test_efficientnet", 32, str(tiny_weights))]
    first = rank_candidates(str(folder), candidates, per_class="all", cache=cache)
    computed = cache.stats.rows_computed
    assert computed > 0 and first.candidates[0].rows_computed == computed and first.extract_seconds > 0
    second = rank_candidates(str(folder), candidates, per_class="all", cache=cache)
    assert cache.stats.rows_computed == computed  # no new frozen pass
    row = second.candidates[0]
    assert row.rows_computed == 0 and row.fe_val_accuracy == first.candidates[0].fe_val_accuracy
    assert second.record_id != first.record_id and second.timing_text().endswith("(every feature from the cache)")
    # A stored timing fit to compare (this one was too short: tiny images) is reused, not measured again
    assert row.costs_from == ""
    store = default_store()
    summary = store.record(first.record_id)["summary"]
    summary["candidates"][0]["throughput"] |= {"seconds": 1.0, "busy": False}
    store.update_record(first.record_id, summary=summary)
    third = rank_candidates(str(folder), candidates, per_class="all", cache=cache)
    assert third.candidates[0].costs_from == first.record_id
    assert third.candidates[0].images_per_second == first.candidates[0].images_per_second
    assert f"as ranking {first.record_id} measured them" in third.text()
    retimed = rank_candidates(str(folder), candidates, per_class="all", cache=cache, retime=True, save=False)
    assert retimed.candidates[0].costs_from == ""


def test_a_size_too_large_for_memory_fails_with_its_estimate(tmp_path, tiny_weights, one_thread):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=8)
    candidates = [Candidate("test_efficientnet", 32, str(tiny_weights)), Candidate("test_efficientnet", 512,
                                                                                 str(tiny_weights))]
    ranking = rank_candidates(str(folder), candidates, per_class="all", memory_budget_mb=60, save=False)
    small, large = ranking.candidates
    assert small.status == "completed" and small.memory_estimate_mb < 60
    assert large.status == "failed" and "512 px needs about" in large.reason and large.memory_estimate_mb > 60
    assert ranking.record_id == "" and ranking.statement.startswith("test_efficientnet at 32 px")


@pytest.mark.slow
def test_cli_ranks_prints_the_table_and_statement_and_writes_json(tmp_path, tiny_weights, capsys, one_thread):
    from tlcore.cli import main

    folder = make_image_folder(tmp_path / "data", classes=3, per_class=12)
    out = tmp_path / "ranking.json"
    code = main(["backbones", "--dataset", str(folder), "--per-class", "all", "--json", str(out), "--candidates",
                 f"test_efficientnet@32@{tiny_weights},test_efficientnet@48@{tiny_weights},no_such_backbone@32"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    text = printed.out
    assert "FE val" in text and "H-score" in text and "img/s" in text
    assert "failed: 'no_such_backbone' is not a timm model name" in text
    data = json.loads(out.read_text())
    assert [c["rank"] for c in data["candidates"]] == [1, 2, 0]
    assert data["statement"] in text and f"stored as ranking {data['record_id']}" in text
    first = data["candidates"][0]
    for key in ("backbone", "image_size", "fe_val_accuracy", "knn_accuracy", "logme", "h_score", "params", "macs",
                "images_per_second", "peak_memory_mb"):
        assert first[key] is not None, key
    assert "[1/3] test_efficientnet at 32 px" in printed.err
    # without --dataset the ranking options are refused; the listing is unchanged
    assert main(["backbones", "--sizes", "64"]) == 2
    assert "give --dataset too" in capsys.readouterr().err


# -- the real packaged weights ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.integration
def test_packaged_lite0_at_two_sizes_costs_more_at_the_larger_size():
    from tlcore.engine.weights import weights_availability

    if weights_availability("tf_efficientnet_lite0") != "packaged":
        pytest.skip("the packaged lite0 weights are not installed")
    ranking = rank_candidates("fashion-mnist", [Candidate("tf_efficientnet_lite0", 48),
                                                Candidate("tf_efficientnet_lite0", 96)], per_class=5)
    by_size = {c.image_size: c for c in ranking.candidates}
    assert all(c.status == "completed" for c in ranking.candidates), [c.reason for c in ranking.candidates]
    assert by_size[96].macs > 3 * by_size[48].macs  # multiply-adds grow with the pixels
    assert by_size[96].images_per_second < by_size[48].images_per_second
    assert by_size[96].params == by_size[48].params
    assert 0.1 < by_size[48].fe_val_accuracy <= 1 and ranking.statement


def test_cross_validated_accuracy_scores_each_image_once_by_a_head_that_did_not_see_it():
    from tlcore.engine.train import cross_validated_accuracy

    rng = np.random.default_rng(0)
    y = torch.tensor(np.repeat(np.arange(3), 20))
    separable = torch.tensor(np.eye(3)[y.numpy()] * 5 + rng.normal(0, 0.1, (60, 3)), dtype=torch.float32)
    assert cross_validated_accuracy(separable, y, 3, l2=1e-3) == 1.0
    noise = torch.tensor(rng.normal(0, 1, (60, 8)), dtype=torch.float32)
    assert cross_validated_accuracy(noise, y, 3, l2=1e-3) < 0.6  # chance is 1/3: nothing to learn
    few = torch.tensor(list(range(12)) + [20, 21, 22])  # 12 of class 0, 3 of class 1
    assert cross_validated_accuracy(separable[few], y[few], 3, l2=1e-3) is None  # a class with fewer than 5 images
