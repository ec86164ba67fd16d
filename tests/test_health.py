"""The data health check (tlcore.advice.health, issue 26's first part): label issues from out-of-fold probabilities
found where labels were flipped on constructed features, classes too small for the folds named and never flagged,
label flips as the validation makes them, and the check on real images: every image scored, names inside the
dataset, the record and the CLI's JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tlcore.advice.health import (FOLDS, flip_labels, health_check, health_from_record, label_issues,
                                  neighbour_votes)
from tlcore.records.store import default_store
from tlcore.views.report import health_report_html


def _clusters(per_class: int = 40, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(0, 1, (classes, 16)) * 4
    return torch.tensor(centres[y] + rng.normal(0, 1, (len(y), 16)), dtype=torch.float32), y


def test_flipped_labels_are_found_and_small_classes_are_left_out():
    x, y = _clusters()
    noisy, flipped = flip_labels(y, 4, 0.1, np.random.default_rng(1))
    assert len(flipped) == 16 and (noisy[flipped] != y[flipped]).all() and (np.delete(noisy, flipped) ==
                                                                              np.delete(y, flipped)).all()
    check = label_issues(x, noisy, 4, l2=1e-3)
    assert check.skipped == [] and check.probabilities.shape == (160, 4)
    assert not set(check.likely) & set(check.doubts)
    hits = np.isin(check.likely, flipped).sum()
    assert hits / len(check.likely) >= 0.9 and hits / len(flipped) >= 0.5, (len(check.likely), hits)
    listed = np.concatenate([check.likely, check.doubts])
    assert np.isin(flipped, listed).mean() >= 0.9
    # a class with fewer images than the folds: named, never flagged, no probabilities
    small = np.concatenate([np.arange(160), [0, 1, 2]])
    y_small = np.concatenate([noisy, [4, 4, 4]])
    check = label_issues(x[small], y_small, 5, l2=1e-3)
    listed = np.concatenate([check.likely, check.doubts])
    assert check.skipped == [4] and not np.isin(listed, [160, 161, 162]).any()
    assert np.isnan(check.probabilities[160:]).all()


def test_the_folds_solved_together_give_each_folds_own_head():
    """The five heads are fitted as one sum of objectives: at convergence every image's probabilities are those of
    its own fold's head fitted alone on the other folds (standardised on them), and an image's label never reaches
    the head that scores it beyond the solver's tolerance."""
    from tlcore.engine.train import _lbfgs, out_of_fold_probabilities

    x, y = _clusters(per_class=30, classes=3, seed=2)
    x, y = x + torch.linspace(0, 3, 16), torch.from_numpy(y)  # features of unequal means: each fold standardises
    together = out_of_fold_probabilities(x, y, 3, l2=1e-2, folds=FOLDS, max_iter=2000)
    generator = torch.Generator().manual_seed(0)
    fold = torch.empty(len(y), dtype=torch.long)
    for c in torch.unique(y):  # the function's folds: each class dealt round-robin in a seeded order
        members = torch.nonzero(y == c).flatten()
        fold[members[torch.randperm(len(members), generator=generator)]] = torch.arange(len(members)) % FOLDS
    alone = torch.zeros_like(together)
    for k in range(FOLDS):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0, unbiased=False)
        w, b = torch.zeros(3, 16, requires_grad=True), torch.zeros(3, requires_grad=True)
        _lbfgs(w, b, (x[train] - mean) / std, y[train], 1e-2, 2000)
        with torch.no_grad():
            alone[test] = torch.softmax(((x[test] - mean) / std) @ w.T + b, dim=1)
    assert torch.allclose(together, alone, atol=2e-3), float((together - alone).abs().max())
    relabelled = y.clone()
    relabelled[0] = (y[0] + 1) % 3  # its own head never saw it: its probabilities stay
    again = out_of_fold_probabilities(x, relabelled, 3, l2=1e-2, folds=FOLDS, max_iter=2000)
    assert torch.allclose(again[0], together[0], atol=2e-3)


def test_a_label_its_neighbours_share_is_at_most_worth_a_look():
    """Two tight groups of the same class far apart, one image of the small group labelled otherwise, and a third
    class: the neighbours count labels, never the image itself; an image whose neighbours carry its label is never
    a likely error, whatever the head says."""
    x, y = _clusters(per_class=30, classes=3)
    votes = neighbour_votes(x, y, 3, k=5)
    assert votes.shape == (90, 3) and (votes.sum(1) == 5).all()
    assert (votes[np.arange(90), y] == 5).mean() > 0.95  # well-separated clusters: neighbours of the same class
    noisy = y.copy()
    noisy[[0, 1]] = 1  # two neighbours relabelled alike: each has the other as a neighbour with its label
    check = label_issues(x, noisy, 3, l2=1e-3)
    votes = neighbour_votes(x, noisy, 3)
    for i in check.likely:
        assert votes[i, noisy[i]] == 0
    assert all(i not in check.likely for i in (0, 1) if votes[i, 1] > 0)


def test_similar_flips_go_to_the_given_class():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    similar = (y + 1) % 3
    noisy, flipped = flip_labels(y, 3, 0.5, np.random.default_rng(0), similar)
    assert len(flipped) == 5 and (noisy[flipped] == similar[flipped]).all()


@pytest.mark.slow
def test_health_check_on_real_images_stores_a_record_and_names_files_inside_the_dataset(
        image_folder, tiny_weights, tmp_path, capsys, one_thread):
    from tlcore.cli import main

    report = health_check(str(image_folder), backbone="test_efficientnet", weights=str(tiny_weights),
                          image_size=32)
    assert sum(report.checked_images.values()) == 36 and report.folds == FOLDS
    assert report.outliers and all(f.score is not None for f in report.outliers)
    for flagged in report.label_issues + report.outliers:
        assert not flagged.name.startswith("/") and str(tmp_path) not in flagged.name
        assert flagged.given in report.classes
    assert all(f.suggested in report.classes and f.suggested != f.given for f in report.label_issues)
    stored = health_from_record(default_store().record(report.record_id))
    assert stored.to_dict() == report.to_dict()
    page = health_report_html(stored)  # the flagged images as pictures, read back from the data checked
    flagged = report.label_issues + report.outliers
    assert page.count("data:image/png;base64,") == len(report.label_issues + report.label_doubts + report.outliers)
    shown = page.split("<h2>Report (JSON)</h2>")[0]  # the JSON keeps the source (the dashboard redacts it)
    assert all(f.name in shown for f in flagged) and str(tmp_path) not in shown
    out = tmp_path / "health.json"
    assert main(["health", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--image-size", "32", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "likely label errors (head and neighbours both reject the label):" in text and "worth a look" in text
    assert "most atypical images" in text and "stored as health" in text
    data = json.loads(out.read_text())
    assert data["rows_computed"] == 0  # the second check read every feature from the cache
    assert {"split", "name", "given", "suggested", "confidence"} <= set(data["label_issues"][0] if
                                                                     data["label_issues"] else data["outliers"][0])


def test_a_stored_health_check_opens_by_its_share_link(tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from tlcore.advice.health import FlaggedImage, HealthReport

    report = HealthReport(dataset="photos", data_fingerprint="f", backbone="tf_efficientnet_lite0", image_size=48,
                          per_class=None, seed=0, classes=["cat", "dog"], checked_images={"train": 8, "val": 2,
                                                                                          "test": 2},
                          label_issues=[FlaggedImage("train", 3, "cat/3.png", "cat", "dog", 0.02)],
                          outliers=[FlaggedImage("test", 1, "dog/1.png", "dog", score=0.1)])
    store = default_store()
    record_id = store.create_record("health", {}, dataset="photos", status="completed")
    store.update_record(record_id, summary=report.to_dict())
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "4_History.py"), default_timeout=60)
    at.query_params["run"] = record_id
    at.run()
    assert not at.exception
    assert at.title[0].value == f"Data health {record_id}"
    assert "1 likely label errors" in " ".join(m.value for m in at.markdown)
    assert any("cat/3.png" in frame.value.to_string() for frame in at.dataframe)
    assert [b.label for b in at.get("download_button")] == ["HTML report", "Report as JSON"]


@pytest.mark.slow
def test_a_health_job_runs_in_the_queue_and_opens_as_stored(image_folder, tiny_weights, tmp_path, one_thread):
    from tlcore.advice.health import HealthConfig
    from tlcore.data.load import parse_dataset
    from tlcore.records.store import Store
    from tlcore.server.jobs import JobQueue, stored_snapshot

    queue = JobQueue(workers=1, store=Store(tmp_path / "jobs.db"))
    config = HealthConfig(parse_dataset(str(image_folder)), "test_efficientnet", str(tiny_weights), None, 32)
    job_id = queue.submit(config, label="health check")
    snap = queue.wait(job_id, timeout=300)
    assert snap["status"] == "completed" and snap["kind"] == "health" and snap["strategies"] == ["health"]
    report = snap["result"]
    assert sum(report.checked_images.values()) == 36 and report.record_id == job_id
    assert report.source["source"] == str(image_folder)
    record = queue.store.record(job_id)
    assert record["status"] == "completed" and HealthConfig.from_dict(record["config"]) == config
    assert stored_snapshot(job_id, queue.store)["result"].to_dict() == report.to_dict()  # as after a restart


@pytest.mark.slow
def test_image_checks_find_a_dark_image_and_copies_across_splits(tmp_path, tiny_weights, one_thread):
    import shutil

    from PIL import Image

    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "data", classes=3, per_class=20)
    Image.new("RGB", (40, 40), (2, 2, 2)).save(folder / "class_1" / "black.png")
    for i in range(20):  # every image of class_2 twice: wherever the split puts them, some copies cross splits
        shutil.copy(folder / "class_2" / f"img_{i:03d}.png", folder / "class_2" / f"copy_{i:03d}.png")
    report = health_check(str(folder), backbone="test_efficientnet", weights=str(tiny_weights), image_size=32)
    dark = [f for f in report.image_issues if f.issue == "dark"]
    assert [f.name for f in dark][:1] == ["class_1/black.png"] and dark[0].given == "class_1"
    exact = [g for g in report.duplicates if g.kind == "exact"]
    assert len(exact) == 20 and all(sorted(i.name[-7:] for i in g.images)[0] == sorted(
        i.name[-7:] for i in g.images)[1] for g in exact)
    crossing = [g for g in report.duplicates if g.crosses_splits]
    assert crossing and report.duplicates[:len(crossing)] == crossing  # listed first
    assert report.counts()["duplicate groups across splits"] == len(crossing)
    stored = health_from_record(default_store().record(report.record_id))
    assert stored.to_dict() == report.to_dict() and stored.duplicates[0].crosses_splits
    assert "ACROSS SPLITS" in report.text()


def test_what_the_fixes_recover_is_read_from_the_accuracies():
    from tlcore.advice.health import CleaningCase, cleaning_summary, cleaning_table

    def case(seed, noisy, cleaned):
        return CleaningCase("digits", 50, 0.1, seed, 50, 40, 35, {"feature-extraction": 0.90},
                            {"feature-extraction": noisy}, {"feature-extraction": cleaned}, {"cleaned": "abc"},
                            {"feature-extraction": 0.90}, 30)

    cases = [case(0, 0.86, 0.88), case(1, 0.88, 0.89), case(2, 0.90, 0.91)]  # the noise cost 4, 2 and 0 points
    assert cases[0].recovered("feature-extraction") == pytest.approx(0.5)
    assert cases[2].recovered("feature-extraction") is None  # nothing lost, nothing to recover
    assert cases[0].recovered("feature-extraction", "relabelled") == pytest.approx(1.0)
    assert len(cleaning_table(cases)) == 3
    summary = cleaning_summary(cases).iloc[0]
    assert summary.seeds == 3 and summary.noisy == pytest.approx(0.88)
    assert summary.recovered == pytest.approx((0.89333 - 0.88) / (0.90 - 0.88), rel=1e-3)


def test_the_check_picks_the_l2_the_comparisons_head_picks():
    from tlcore.engine.train import choose_l2, fit_linear_head

    x, y = _clusters(per_class=30, classes=4, seed=3)
    noisy, _ = flip_labels(y, 4, 0.2, np.random.default_rng(2))
    train, val = np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 3 == 0
    yt = torch.from_numpy(noisy)
    grid = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)
    fit = fit_linear_head(x[train], yt[train], x[val], yt[val], 4, grid)
    assert choose_l2(x[train], yt[train], x[val], yt[val], 4, grid) == fit.l2


def test_the_read_only_demo_shows_a_stored_check_and_computes_nothing(monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from tlcore.advice.health import FlaggedImage, HealthReport

    report = HealthReport(dataset="digits", data_fingerprint="not-the-data", backbone="tf_efficientnet_lite0",
                          image_size=48, per_class=None, seed=0, classes=[str(d) for d in range(10)],
                          checked_images={"train": 8, "val": 2, "test": 2},
                          label_issues=[FlaggedImage("train", 3, "digits[3]", "3", "5", 0.02)],
                          outliers=[FlaggedImage("test", 1, "digits[1]", "1", score=0.1)],
                          source={"source": "digits"})
    store = default_store()
    record_id = store.create_record("health", {}, dataset="digits", status="completed")
    store.update_record(record_id, summary=report.to_dict())
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "7_Data.py"), default_timeout=60)
    at.query_params["health"] = record_id
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("read-only demo" in i.value for i in at.info)
    labels = [b.label for b in at.button]
    assert "Check data health" not in labels and "Store as a revision" not in labels
    assert "Choose the suggestion" not in labels
    assert at.selectbox and all(s.disabled for s in at.selectbox)  # each image's action, shown, not changeable
    assert any("cannot be read back" in i.value for i in at.info)  # the data changed since: names, no pictures
    assert store.records(kind="health")[0]["id"] == record_id and len(store.records()) == 1  # nothing new stored
