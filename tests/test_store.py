"""The run store: every record type round-trips, a process killed mid-run leaves a readable store and an interrupted
record, bundles import into a fresh data directory with identical results, read-only mode refuses every write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, compare, make_strategy
from tlcore.core.errors import ReadOnlyError
from tlcore.experiments.compare import load_comparison
from tlcore.server.jobs import JobQueue, stored_snapshot
from tlcore.records.store import SCHEMA_VERSION, Store
from tlcore.experiments.config import SweepConfig
from tlcore.experiments.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
FAST = {"epochs": 1, "batch_size": 8, "min_steps": 0}


def _config(folder, weights) -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=[make_strategy("feature-extraction", head_max_iter=20),
                                        make_strategy("scratch", **FAST)], image_size=32)


@pytest.mark.slow
def test_every_record_type_round_trips(image_folder, tiny_weights, tmp_path):
    from tlcore.advice.records import advise

    store = Store(tmp_path / "s.db")
    comparison = compare(_config(image_folder, tiny_weights), store=store)
    again = load_comparison(comparison.record_id, store)
    assert again.to_dict() == comparison.to_dict()
    sweep = run_sweep(SweepConfig(_config(image_folder, tiny_weights), sizes=[2, 4], repeats=1), store=store)
    assert load_sweep(sweep.record_id, store).summary().equals(sweep.summary())
    rec = advise(DatasetSpec(str(image_folder)), BackboneSpec("test_efficientnet", str(tiny_weights)), image_size=32,
                 store=store)
    stored = store.record(rec.record_id)
    assert stored["kind"] == "recommendation" and stored["summary"]["label"] == rec.choice.label
    assert stored["summary"]["signals"]["knn_accuracy"] == rec.signals.knn_accuracy
    kinds = {r["kind"]: r for r in store.records()}
    assert set(kinds) == {"comparison", "sweep", "recommendation"}
    assert kinds["comparison"]["runs_count"] == 2 and kinds["sweep"]["runs_count"] == 4


@pytest.mark.slow
def test_killed_process_leaves_readable_store_and_interrupted_record(image_folder, tiny_weights, tmp_path):
    home = tmp_path / "home"
    script = textwrap.dedent(f"""
        from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, compare, make_strategy
        config = ExperimentConfig(dataset=DatasetSpec({str(image_folder)!r}),
                                  backbone=BackboneSpec("test_efficientnet", {str(tiny_weights)!r}), image_size=32,
                                  strategies=[make_strategy("feature-extraction", head_max_iter=20),
                                              make_strategy("scratch", epochs=100000, batch_size=4, min_steps=0)])
        compare(config, label="to be killed")
    """)
    env = dict(os.environ, TLCORE_HOME=str(home), TLCORE_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    db = home / "tlcore.db"
    deadline = time.time() + 120
    try:
        while True:  # wait until the first strategy is stored and the second is training
            assert time.time() < deadline and proc.poll() is None
            if db.exists():
                records = Store(db).records()
                if records and records[0]["runs_count"] >= 1:
                    break
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = Store(db)
    record = store.records()[0]
    assert record["status"] == "running" and record["label"] == "to be killed"  # as the killed process left it
    assert store.mark_interrupted() == [record["id"]]
    snap = JobQueue(workers=1, store=store).get(record["id"])
    assert snap["status"] == "interrupted" and "stopped" in snap["error"]
    assert [r.strategy for r in snap["runs"]] == ["feature-extraction"] and snap["runs"][0].accuracy is not None


@pytest.mark.slow
def test_bundle_imports_into_a_fresh_data_directory_identically(image_folder, tiny_weights, tmp_path):
    source = Store(tmp_path / "a.db")
    comparison = compare(_config(image_folder, tiny_weights), store=source)
    sweep = run_sweep(SweepConfig(_config(image_folder, tiny_weights), sizes=[3], repeats=2), store=source)
    bundle = source.export_bundle([comparison.record_id, sweep.record_id])

    target = Store(tmp_path / "fresh" / "tlcore.db")
    assert target.import_bundle(bundle) == [comparison.record_id, sweep.record_id]
    assert load_comparison(comparison.record_id, target).to_dict() == comparison.to_dict()
    assert load_sweep(sweep.record_id, target).to_dict() == load_sweep(sweep.record_id, source).to_dict()
    assert stored_snapshot(comparison.record_id, target)["status"] == "completed"
    assert target.import_bundle(bundle) == []  # already there: nothing duplicated
    with pytest.raises(Exception, match="Not a tlcore results bundle"):
        target.import_bundle(b"not a zip")


def test_read_only_mode_refuses_writes_in_tlcore(image_folder, tiny_weights, tmp_path, monkeypatch):
    from tlcore.data.uploads import extract_zip

    store = Store(tmp_path / "s.db")
    comparison = compare(_config(image_folder, tiny_weights), store=store)
    bundle = store.export_bundle([comparison.record_id])
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    for write in (lambda: compare(_config(image_folder, tiny_weights), store=store),
                  lambda: JobQueue(workers=1, store=store).submit(_config(image_folder, tiny_weights)),
                  lambda: store.delete_record(comparison.record_id),
                  lambda: store.import_bundle(bundle),
                  lambda: extract_zip(b"PK", "x.zip")):
        with pytest.raises(ReadOnlyError, match="read-only"):
            write()
    # reading, links and exports still work
    assert load_comparison(comparison.record_id, store).to_dict() == comparison.to_dict()
    assert store.export_bundle([comparison.record_id])
    assert store.mark_interrupted() == []


def test_delete_then_purge_removes_record_and_runs(image_folder, tiny_weights, tmp_path, monkeypatch):
    store = Store(tmp_path / "s.db")
    comparison = compare(_config(image_folder, tiny_weights), store=store)
    monkeypatch.setenv("TLCORE_TRASH_DAYS", "0")
    assert store.delete_record(comparison.record_id)
    assert store.record(comparison.record_id, trashed=True) is None and store.runs(comparison.record_id) == []
    assert not store.delete_record(comparison.record_id)


def _open_and_write(path: str) -> None:
    Store(path).create_record("comparison", {}, status="completed")


def test_processes_opening_a_new_store_at_once_migrate_it_once(tmp_path):
    import multiprocessing

    path = str(tmp_path / "new.db")
    workers = [multiprocessing.get_context("fork").Process(target=_open_and_write, args=(path,)) for _ in range(5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 5
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION and len(store.records()) == 5


def _stored(store: Store, kind: str = "comparison", dataset: str = "digits", accuracy: float = 0.5) -> str:
    """A record with one completed run, written directly (no training): for store rules only."""
    from tlcore.core.results import RunResult

    record_id = store.create_record(kind, {}, dataset=dataset, backbone="test_efficientnet", status="completed")
    run = RunResult(run_id=record_id[:6] + "run001", strategy="feature-extraction", kind="feature-extraction",
                    status="completed", backbone="test_efficientnet", accuracy=accuracy, accuracy_low=accuracy - 0.1,
                    accuracy_high=accuracy + 0.1, dataset={"source": dataset, "fingerprint": "f" * 16})
    store.add_run(record_id, run, cell_key=f"cell-{record_id}")
    return record_id


def test_delete_moves_exactly_that_record_to_the_trash_once_and_restore_brings_it_back(tmp_path):
    store = Store(tmp_path / "s.db")
    a, b, c = (_stored(store) for _ in range(3))
    assert store.delete_record(b) and not store.delete_record(b)  # a second click deletes nothing more
    assert {r["id"] for r in store.records()} == {a, c}
    assert [r["id"] for r in store.trashed()] == [b] and store.trashed()[0]["runs_count"] == 1
    assert store.record(b) is None and store.record(b, trashed=True)["id"] == b
    # a record in the trash is no evidence, no resumable cell, no loadable run
    assert {r["record_id"] for r in store.runs_for_data("f" * 16, "test_efficientnet")} == {a, c}
    assert store.completed_cell(f"cell-{b}") is None and store.run(b[:6] + "run001") is None
    assert store.restore_record(b) and not store.restore_record(b)
    assert {r["id"] for r in store.records()} == {a, b, c} and store.trashed() == []
    assert store.completed_cell(f"cell-{b}").accuracy == 0.5


def test_the_trash_is_emptied_after_trash_days(tmp_path, monkeypatch):
    from tlcore.records.store import StoreError

    store = Store(tmp_path / "s.db")
    kept, gone = _stored(store), _stored(store)
    store.delete_record(gone)
    monkeypatch.setenv("TLCORE_TRASH_DAYS", "7")
    assert store.purge_trash(now=time.time() + 6 * 86400) == []
    assert store.purge_trash(now=time.time() + 8 * 86400) == [gone]
    assert store.record(gone, trashed=True) is None and store.runs(gone) == []
    assert [r["id"] for r in store.records()] == [kept]
    monkeypatch.setenv("TLCORE_TRASH_DAYS", "a week")
    with pytest.raises(StoreError, match="TLCORE_TRASH_DAYS='a week' is not a number of days"):
        store.delete_record(kept)
    monkeypatch.setenv("TLCORE_TRASH_DAYS", "0")  # no trash: deleted at once
    assert store.delete_record(kept) and store.record(kept, trashed=True) is None


def test_side_by_side_takes_every_pair_of_kinds_history_lists(tmp_path):
    """Comparisons with sweeps draw their runs; a probe or a recommendation alone beside them is named, not drawn."""
    from tlcore.views.side_by_side import runs_figure, side_by_side

    store = Store(tmp_path / "s.db")
    one, two = _stored(store, accuracy=0.6), _stored(store, kind="sweep", accuracy=0.7)
    probe = store.create_record("probe", {}, dataset="digits", status="completed")
    view = side_by_side([store.record(one), store.record(two)], store)
    assert list(view.runs["record"]) == [one, two] and list(view.runs["accuracy"]) == [0.6, 0.7]
    assert view.notes == [] and len(runs_figure(view.runs).data) == 1
    mixed = side_by_side([store.record(one), store.record(probe)], store)
    assert mixed.runs.empty and mixed.empty and len(mixed.notes) == 2
    assert f"Probe {probe} is not shown" in mixed.notes[1] and "comparisons and sweeps" in mixed.notes[1]


def test_history_on_the_command_line_deletes_to_the_trash_and_restores(capsys):
    from tlcore.cli import main
    from tlcore.records.store import default_store

    record_id = _stored(default_store())
    assert main(["history", "delete", record_id]) == 0
    assert f"deleted {record_id} (in the trash for 7 days" in capsys.readouterr().out
    assert main(["history", "list"]) == 0 and "nothing stored" in capsys.readouterr().out
    assert main(["history", "trash"]) == 0 and f"comparison {record_id} (digits, 1 run)" in capsys.readouterr().out
    assert main(["history", "delete", record_id]) == 2
    assert f"no record {record_id} stored outside the trash" in capsys.readouterr().err
    assert main(["history", "restore", record_id]) == 0 and f"restored {record_id}" in capsys.readouterr().out
    assert [r["id"] for r in default_store().records()] == [record_id]


def test_two_probes_are_drawn_side_by_side_by_depth(tmp_path):
    from tlcore.advice.probe import ProbeCurve, ProbePoint, ProbeResult
    from tlcore.views.side_by_side import probes_figure, side_by_side

    store = Store(tmp_path / "s.db")
    ids = []
    for stages, backbone in ((3, "test_efficientnet"), (5, "test_resnet")):
        points = [ProbePoint(i, f"blocks.{i}", 8, 0.5 + i / 20, 0.4 + i / 20, 1.0) for i in range(stages)]
        probe = ProbeResult(backbone, "file", 32, "digits", "all", 0, 3, {"train": 30},
                            {"pretrained": ProbeCurve("pretrained", "w", points, 0.1, 0.1, 30)})
        record_id = store.create_record("probe", {}, dataset="digits", backbone=backbone, status="completed")
        store.update_record(record_id, summary=probe.to_dict())
        ids.append(record_id)
    view = side_by_side([store.record(i) for i in ids], store)
    assert view.notes == [] and view.runs.empty and list(view.probes) == ids
    figure = probes_figure(view.probes)
    assert [len(t.x) for t in figure.data] == [3, 5] and figure.data[1].x[-1] == 1.0  # depth as a share
