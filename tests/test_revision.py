"""Dataset revisions: images excluded or relabelled without touching a file, checked against the data they were made
on, and the frozen features shared with the original."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image_folder
from tlcore.core.errors import DataError
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label, load_dataset, load_source, parse_dataset
from tlcore.data.revision import (Revision, list_revisions, load_revision, make_revision, parse_changes,
                                  read_changes, revisions_dir, save_revision)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_revision_excludes_and_relabels_without_touching_the_files(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=20)
    before = _tree(folder)
    full = load_source(str(folder))
    train = [full.item_name("train", int(i)) for i in full.indices["train"][:3]]
    test = full.item_name("test", int(full.indices["test"][0]))
    revision = make_revision(full, exclude=[train[0], test], relabel=[(train[1], "class_2")], note="three fixes")
    rid = save_revision(revision)
    assert rid == revision.id and len(rid) == 12 and (revisions_dir() / f"{rid}.json").is_file()
    assert save_revision(make_revision(full, exclude=[test, train[0]], relabel=[(train[1], "class_2")])) == rid

    revised = load_dataset(DatasetSpec(str(folder), revision=rid))
    assert _tree(folder) == before  # nothing written, renamed or touched
    assert len(revised.indices["train"]) == len(full.indices["train"]) - 1
    assert len(revised.indices["test"]) == len(full.indices["test"]) - 1
    assert np.array_equal(revised.indices["val"], full.indices["val"])
    names = {revised.item_name("train", int(i)): int(label)
             for i, label in zip(revised.indices["train"], revised.labels("train"))}
    assert train[0] not in names and names[train[1]] == 2 and names[train[2]] == full.labels("train")[2]
    assert revised.fingerprint() != full.fingerprint() and revised.spec.revision == rid
    assert any(f"Revision {rid}: 1 excluded and 1 relabelled in train, 1 excluded and 0 relabelled in test" in n
               for n in revised.notes)
    # the same pixels: the feature cache's key is the original's, the stored cells' is not
    assert revised.pools["train"].feature_key() == full.pools["train"].feature_key()
    assert revised.pools["train"].fingerprint() != full.pools["train"].fingerprint()
    # a subset of a revision is the original's subset less the excluded images (never refilled); a sub-task too
    original = load_dataset(DatasetSpec(str(folder), per_class=5))
    gone = original.item_name("train", int(original.indices["train"][0]))
    rid5 = save_revision(make_revision(full, exclude=[gone]))
    sub = load_dataset(DatasetSpec(str(folder), revision=rid5, per_class=5))
    assert sub.indices["train"].tolist() == original.indices["train"][1:].tolist()
    assert np.array_equal(sub.indices["test"], original.indices["test"])
    task = load_dataset(DatasetSpec(str(folder), revision=rid, per_class=5, classes=("class_0", "class_2")))
    assert task.num_classes == 2 and set(task.labels("train").tolist()) == {0, 1}
    assert len(task.indices["train"]) <= 10
    assert {r.id for r in list_revisions(str(folder))} == {rid, rid5} and list_revisions("elsewhere") == []


def test_the_dataset_text_names_a_revision():
    rid = "0123456789ab"
    assert parse_dataset(f"fashion-mnist@{rid}") == DatasetSpec("fashion-mnist", revision=rid)
    assert parse_dataset(f"fashion-mnist@{rid}:Sandal|Sneaker") == DatasetSpec(
        "fashion-mnist", classes=("Sandal", "Sneaker"), revision=rid)
    assert parse_dataset("fashion-mnist:Sandal|Sneaker") == DatasetSpec("fashion-mnist", classes=("Sandal", "Sneaker"))
    assert parse_dataset("photos@home") == DatasetSpec("photos@home")  # not a revision id: part of the name
    for spec in (DatasetSpec("digits", revision=rid), DatasetSpec("digits", classes=("1", "7"), revision=rid)):
        assert parse_dataset(dataset_label(spec)) == spec


def test_a_revision_of_a_changed_folder_is_refused_not_applied(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=12)
    full = load_source(str(folder))
    rid = save_revision(make_revision(full, exclude=[full.item_name("train", int(full.indices["train"][0]))]))
    victim = next(folder.rglob("*.png"))
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched since
    with pytest.raises(DataError, match=rf"Revision {rid} was made on .* with fingerprint \w+, but the data now has "
                                        r"\w+: files were added, removed or changed since .*It is not applied"):
        load_dataset(DatasetSpec(str(folder), revision=rid))


def test_a_revision_naming_unknown_images_or_classes_is_refused_with_the_names(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=12)
    full = load_source(str(folder))
    with pytest.raises(DataError, match=r"2 image\(s\) named by the revision are not in .*: \.\./\.\./etc/passwd, "
                                        r"class_0/nope\.png"):
        make_revision(full, exclude=["class_0/nope.png", "../../etc/passwd"])
    known = full.item_name("train", int(full.indices["train"][0]))
    with pytest.raises(DataError, match=r"Relabelled to class\(es\) not in .*: unicorn"):
        make_revision(full, relabel=[(known, "unicorn")])
    with pytest.raises(DataError, match="both excluded and relabelled"):
        make_revision(full, exclude=[known], relabel=[(known, "class_1")])
    with pytest.raises(DataError, match="whole source"):
        make_revision(load_dataset(DatasetSpec(str(folder), per_class=3)), exclude=[known])


@pytest.mark.parametrize("value", ["../../etc/passwd", "0123456789ab/../x", "ABCDEF012345", "1" * 5000, ""])
def test_hostile_revision_ids_are_refused_without_reading_anything(value):
    with pytest.raises(DataError, match="is not a revision id") as info:
        load_revision(value)
    assert len(str(info.value)) < 200  # a huge value is not echoed whole


def test_an_edited_or_missing_manifest_is_refused(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=12)
    full = load_source(str(folder))
    rid = save_revision(make_revision(full, exclude=[full.item_name("val", int(full.indices["val"][0]))]))
    path = revisions_dir() / f"{rid}.json"
    manifest = json.loads(path.read_text())
    manifest["exclude"] = []
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="was edited"):
        load_revision(rid)
    with pytest.raises(DataError, match="No revision 000000000000 is stored here"):
        load_revision("000000000000")
    other = Revision("digits", "f" * 16, exclude=("digits[0]",))
    save_revision(other)
    with pytest.raises(DataError, match=f"Revision {other.id} revises digits, not "):
        load_dataset(DatasetSpec(str(folder), revision=other.id))


def test_a_changes_file_gives_the_images_and_names_its_bad_rows(tmp_path):
    good = tmp_path / "fixes.csv"
    good.write_text("name,split,action,label\na.png,train,exclude,\nb.png,train,relabel,cat\nc.png,test,keep,\n")
    assert read_changes(good) == (["a.png"], [("b.png", "cat")])
    with pytest.raises(DataError, match=r"2 row\(s\) need a name and an action .*line 2 .*line 3"):
        parse_changes("name,action,label\na.png,delete,\nb.png,relabel,\n", "fixes.csv")
    with pytest.raises(DataError, match="no column\\(s\\) action"):
        parse_changes("name,label\na.png,cat\n", "fixes.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_changes(binary)
    with pytest.raises(DataError, match="does not exist"):
        read_changes(tmp_path / "missing.csv")


@pytest.mark.slow
def test_fixes_apply_and_before_after_from_the_cli(tmp_path, tiny_weights, capsys, one_thread):
    """health --fixes writes the flagged images as changes, --apply stores them as a revision (files untouched),
    compare --before-after runs both versions on the same test images and reports the paired change."""
    import pandas as pd

    from tlcore.cli import main

    folder = make_image_folder(tmp_path / "data", classes=3, per_class=24)
    for i in range(3):  # three images of class_0 filed under class_1: label errors the check should flag
        (folder / "class_0" / f"img_{i:03d}.png").rename(folder / "class_1" / f"moved_{i}.png")
    before_files = _tree(folder)
    model = ["--backbone", "test_efficientnet", "--weights", str(tiny_weights), "--image-size", "32"]
    fixes = tmp_path / "fixes.csv"
    assert main(["health", "--dataset", str(folder), *model, "--fixes", str(fixes)]) == 0
    table = pd.read_csv(fixes, keep_default_na=False)
    assert list(table.columns) == ["name", "action", "label", "split", "given", "confidence", "likely"]
    assert len(table) >= 1 and set(table.action) <= {"exclude", "keep"}
    assert (table.action == (table.split.map(lambda s: "keep" if s == "test" else "exclude"))).all()
    assert "--apply" in capsys.readouterr().out
    full = load_source(str(folder))
    train_names = [full.item_name("train", int(i)) for i in full.indices["train"]]
    edited = pd.concat([table, pd.DataFrame([{"name": n, "action": "exclude"} for n in train_names[:4]
                                             if n not in set(table.name)])])
    edited.to_csv(fixes, index=False)
    assert main(["health", "--dataset", str(folder), "--apply", str(fixes)]) == 0
    out = capsys.readouterr().out
    revision = list_revisions(str(folder))[0]
    assert f"stored revision {revision.id}" in out and f"@{revision.id}' --before-after" in out
    excluded = set(edited[edited.action == "exclude"].name)
    assert set(revision.exclude) == excluded and revision.relabel == ()

    results = tmp_path / "before_after"
    assert main(["compare", "--dataset", f"{folder}@{revision.id}", *model, "--strategies", "feature-extraction",
                 "--per-class", "all", "--before-after", "--no-progress", "--out", str(results)]) == 0
    text = capsys.readouterr().out
    assert f"Revision {revision.id}, on the same test images: feature-extraction" in text
    before = json.loads((results / "before.json").read_text())
    after = json.loads((results / "after.json").read_text())
    change = json.loads((results / "before_after.json").read_text())
    assert before["test_labels"] == after["test_labels"] and change["same_test_set"]
    assert after["dataset"]["sizes"]["train"] == before["dataset"]["sizes"]["train"] - len(
        [n for n in excluded if n in train_names])
    row = change["changes"][0]
    assert row["paired"] and row["change"] == pytest.approx(
        after["runs"][0]["accuracy"] - before["runs"][0]["accuracy"], abs=1e-9)
    assert row["change_low"] <= row["change"] <= row["change_high"]
    assert _tree(folder) == before_files


def test_the_change_is_paired_on_the_same_test_images_and_newcombe_otherwise():
    from tlcore.core.results import ComparisonResult, RunResult
    from tlcore.experiments.before_after import changes

    labels = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]

    def result(predictions, test_labels=labels, record="r"):
        correct = sum(p == t for p, t in zip(predictions, test_labels))
        run = RunResult(run_id=record, strategy="feature-extraction", kind="feature-extraction", status="completed",
                        accuracy=correct / len(test_labels), accuracy_low=0.3, accuracy_high=0.95,
                        test_predictions=list(predictions))
        return ComparisonResult(config={"dataset": {"revision": "0123456789ab"}}, dataset={"notes": []}, runs=[run],
                                test_indices=list(range(len(test_labels))), test_labels=list(test_labels),
                                record_id=record)

    before = result([0, 1, 0, 1, 0, 1, 1, 0, 1, 0])  # 6 of 10
    after = result([0, 1, 0, 1, 0, 1, 0, 1, 1, 0])  # 8 of 10: the same images, two more right
    paired = changes(before, after)
    row = paired.changes[0]
    assert paired.same_test_set and row.paired and row.change == pytest.approx(0.2)
    assert row.change_low < 0.2 < row.change_high and "on the same test images" in paired.statement()
    other = result([0, 1, 0, 1, 0, 1, 0, 1, 0], labels[:9], "s")  # the revision removed a test image
    unpaired = changes(before, other)
    row = unpaired.changes[0]
    assert not unpaired.same_test_set and not row.paired and row.change == pytest.approx(1.0 - 0.6)
    assert row.change_low == pytest.approx(0.4 - ((1.0 - 0.3) ** 2 + (0.95 - 0.6) ** 2) ** 0.5)  # p2-l2, u1-p1
    assert "different test sets" in unpaired.to_frame().to_string()
