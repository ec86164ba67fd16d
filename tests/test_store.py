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
from tlcore.records.store import Store
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
    from tlcore.advice.recommend import advise

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
        import sys
        sys.path.insert(0, {str(ROOT)!r})
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


def test_delete_removes_record_and_runs(image_folder, tiny_weights, tmp_path):
    store = Store(tmp_path / "s.db")
    comparison = compare(_config(image_folder, tiny_weights), store=store)
    assert store.delete_record(comparison.record_id)
    assert store.record(comparison.record_id) is None and store.runs(comparison.record_id) == []
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
    assert store.schema_version == 3 and len(store.records()) == 5
