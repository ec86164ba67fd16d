"""Executors: a sweep on a local Ray instance gives the local executor's results; a worker that dies mid-cell is
retried (and a cell that keeps killing its worker fails with the reason while the rest completes); a cancel stops
the outstanding tasks."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from tlcore import BackboneSpec, CancelToken, DatasetSpec, ExperimentConfig, compare, make_strategy
from tlcore.core.errors import ConfigError
from tlcore.experiments.config import SweepConfig
from tlcore.experiments.executors import MAX_RETRIES, CellTask, LocalExecutor, RayExecutor, execute_cell, make_executor
from tlcore.experiments.sweep import run_sweep
from tlcore.records.store import Store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray instance starts in ~10 s
FAST = {"epochs": 2, "batch_size": 8, "patience": 2, "min_steps": 0}


@pytest.fixture(scope="module")
def ray_executor():
    executor = RayExecutor(num_cpus=2)
    yield executor
    ray.shutdown()


def _experiment(folder, weights, strategies=None) -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=strategies or [make_strategy("feature-extraction", head_max_iter=40),
                                                      make_strategy("fine-tune", stages=1, **FAST),
                                                      make_strategy("scratch", **FAST)], image_size=32)


def test_ray_sweep_matches_the_local_executor(image_folder, tiny_weights, tmp_path, ray_executor):
    import torch

    config = SweepConfig(_experiment(image_folder, tiny_weights), sizes=[2, 4], repeats=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task (1 CPU): float reductions in the same order
    try:
        local = run_sweep(config, store=Store(tmp_path / "local.db"), executor=LocalExecutor())
    finally:
        torch.set_num_threads(threads)
    seen = []
    remote = run_sweep(config, store=Store(tmp_path / "ray.db"), executor=ray_executor,
                       callbacks=[lambda e: seen.append(e.cell)])
    assert [c.label for c in remote.cells] == [c.label for c in local.cells]
    for a, b in zip(local.cells, remote.cells):
        assert b.run.status == "completed" and b.run.environment["torch_threads"] == 1
        assert b.run.accuracy == a.run.accuracy and b.run.test_predictions == a.run.test_predictions
        assert b.run.best_val_accuracy == pytest.approx(a.run.best_val_accuracy, abs=1e-9)
        assert b.run.extra["train_indices"] == a.run.extra["train_indices"]
        assert b.run.extra["feature_rows_computed"] == 0  # features came from the cache filled once by the caller
    assert len({c.run.extra["executor_pid"] for c in remote.cells}) >= 2  # ran in parallel workers
    assert any("scratch" in cell for cell in seen)  # progress came back from the workers


def test_ray_comparison_runs_each_strategy_as_a_task(image_folder, tiny_weights, tmp_path, ray_executor):
    config = _experiment(image_folder, tiny_weights)
    local = compare(config, store=Store(tmp_path / "l.db"))
    remote = compare(config, store=Store(tmp_path / "r.db"), executor=ray_executor)
    assert [r.status for r in remote.runs] == ["completed"] * 3
    assert remote.runs[0].accuracy == local.runs[0].accuracy
    assert Store(tmp_path / "r.db").records()[0]["runs_count"] == 3


def _dies_once_then_runs(marker: str):
    """A worker function that kills its process the first time (the marker file is missing) or always ('hopeless')."""
    def cell(task, callbacks):
        import os
        from pathlib import Path

        if task.label == "hopeless":
            os._exit(1)
        if not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        return execute_cell(task, callbacks)
    return cell


def test_a_dead_worker_is_retried_and_a_hopeless_cell_fails_alone(image_folder, tiny_weights, tmp_path,
                                                                 ray_executor, isolated_home):
    exp = _experiment(image_folder, tiny_weights, [make_strategy("scratch", **FAST)])
    task = CellTask(replace(exp, seed=0).to_dict(), exp.strategies[0].options(), 3, 0, "", "scratch · 3/class",
                    str(isolated_home))
    hopeless = replace(task, label="hopeless")
    faulty = RayExecutor(num_cpus=2, cell_function=_dies_once_then_runs(str(tmp_path / "died-once")))
    results = {}
    faulty.run([task, hopeless], None, lambda t, r: results.__setitem__(t.label, r), [], CancelToken())
    assert results["scratch · 3/class"].status == "completed"
    killed_pid = int((tmp_path / "died-once").read_text())
    assert results["scratch · 3/class"].extra["executor_pid"] != killed_pid
    assert results["hopeless"].status == "failed" and f"after {MAX_RETRIES} retries" in results["hopeless"].error


def test_cancel_stops_outstanding_tasks(image_folder, tiny_weights, tmp_path, ray_executor):
    slow = make_strategy("scratch", epochs=400, batch_size=4, min_steps=0)
    config = SweepConfig(_experiment(image_folder, tiny_weights, [slow]), sizes=[3, 6], repeats=2)
    cancel = CancelToken()
    timer = threading.Timer(8.0, cancel.cancel)
    timer.start()
    result = run_sweep(config, store=Store(tmp_path / "c.db"), executor=ray_executor, cancel=cancel)
    timer.cancel()
    assert result.status == "cancelled" and len(result.cells) < 4
    assert result.wall_seconds < 60


def test_unknown_executor_is_a_clear_error():
    with pytest.raises(ConfigError, match="Unknown executor 'spark'"):
        make_executor("spark")


def test_without_ray_the_message_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match="requirements-distributed.txt"):
        make_executor("ray")
