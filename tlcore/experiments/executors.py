"""Where cells run: `local` (in this process, one after another: the default, needs nothing) or `ray` (each cell a Ray
task with declared resources, on a local Ray instance or the cluster at RAY_ADDRESS). Comparisons and sweeps hand
their cells to an executor and get RunResults back as they finish; the run store and the progress callbacks stay in
the calling process.

A cell is plain data (`CellTask`): a worker rebuilds the data, the backbone and the strategy from it, and reads the
frozen features the caller extracted once into the data directory's feature cache, so no cell recomputes them.
"""

from __future__ import annotations

import importlib.util
import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from tlcore.core.errors import ConfigError, RunCancelled
from tlcore.core.progress import CancelToken, ProgressCallback, ProgressEvent
from tlcore.core.results import RunResult
from tlcore.engine.features import FeatureCache
from tlcore.engine.strategies import strategy_from_dict
from tlcore.experiments.config import ExperimentConfig
from tlcore.experiments.prepare import prepare
from tlcore.experiments.runner import Runner

EXECUTORS = ("local", "ray")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the tlcore package, shipped to Ray workers
MAX_RETRIES = 2  # a worker process that dies mid-cell: its cell is retried this many times, then marked failed


@dataclass(frozen=True)
class CellTask:
    """One strategy at one size with one seed, as plain data."""

    experiment: dict  # ExperimentConfig.to_dict(), with image_size resolved and this cell's seed
    strategy: dict  # StrategySpec options
    size: Optional[int]  # images per class, None = all
    seed: int
    key: str  # the store's content key
    label: str  # "fine-tune · 25/class · seed 1"
    home: str  # the data directory holding the feature cache
    threads: int = 0  # torch threads in the worker (0: leave as is); results are bit-identical only across equal counts
    record_id: str = ""  # the record the trained model is saved with


def execute_cell(task: CellTask, callbacks: Optional[list[ProgressCallback]] = None,
                 cancel: Optional[CancelToken] = None) -> RunResult:
    """Run one cell from scratch in this process (a Ray worker): the same `prepare` as every run, this cell's
    subset, and the frozen features the caller extracted into the data directory's cache."""
    os.environ["TLCORE_HOME"] = task.home
    if task.threads:
        torch.set_num_threads(task.threads)
    spec = strategy_from_dict(task.strategy)
    exp = ExperimentConfig.from_dict(task.experiment)
    prepared = prepare(replace(exp, strategies=(spec,)))
    dataset = prepared.subset(task.size, task.seed)
    cache = FeatureCache(Path(task.home) / "cache" / "features")
    runner = Runner(prepared, prepared.cell_data(dataset), task.seed, callbacks, cancel, cache, keep_models=True)
    run = runner.run(spec)
    runner.keep(run, task.record_id)
    run.extra["images_per_class"] = float(np.mean(list(dataset.counts("train").values())))
    run.extra["train_indices"] = dataset.indices["train"].tolist()
    run.extra["executor_pid"] = os.getpid()
    run.extra["feature_rows_computed"] = cache.stats.rows_computed
    return run


class Executor(ABC):
    name = ""

    @abstractmethod
    def run(self, tasks: list[CellTask], run_here: Callable[[CellTask], RunResult],
            on_done: Callable[[CellTask, RunResult], None], callbacks: list[ProgressCallback],
            cancel: CancelToken) -> None:
        """Run every task; call `on_done` in this process as each finishes (in any order)."""


class LocalExecutor(Executor):
    """In this process, in order, with the caller's shared in-memory data (`run_here`)."""

    name = "local"

    def run(self, tasks, run_here, on_done, callbacks, cancel) -> None:
        for task in tasks:
            if cancel.cancelled:
                return
            on_done(task, run_here(task))


def gpus_for(task: CellTask, gpus_per_task: Optional[float]) -> float:
    """The GPUs a cell's Ray task declares: none unless the driver resolved the run to CUDA, then `gpus_per_task`
    (TLCORE_RAY_GPUS_PER_TASK, else 1; a fraction lets cells share a GPU). Ray shows a task only the GPUs it
    declared, so one that declares none cannot use any."""
    if not str(task.experiment.get("device", "")).startswith("cuda"):
        return 0.0
    if gpus_per_task is None:
        gpus_per_task = float(os.environ.get("TLCORE_RAY_GPUS_PER_TASK") or 1.0)
    if not 0 < gpus_per_task:
        raise ConfigError(f"GPUs per Ray task must be more than 0 for a run on CUDA, not {gpus_per_task:g}.")
    return gpus_per_task


def on_ray_worker(task: CellTask) -> CellTask:
    """The task as its worker runs it: Ray picks the GPU and shows the worker only that one, so 'cuda:N' there is
    'cuda'."""
    device = str(task.experiment.get("device", ""))
    if device.startswith("cuda:"):
        return replace(task, experiment={**task.experiment, "device": "cuda"})
    return task


class RayExecutor(Executor):
    """Each cell a Ray task (`num_cpus` CPUs, and `gpus_for` it when the driver resolved the run to CUDA), retried up
    to MAX_RETRIES times if its worker dies; progress events come back through a Ray queue; a cancel cancels the
    outstanding tasks."""

    name = "ray"

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, cpus_per_task: int = 1,
                 gpus_per_task: Optional[float] = None,
                 cell_function: Callable[[CellTask, list], RunResult] = None) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("The ray executor needs Ray: pip install -r requirements-distributed.txt "
                              "(or pip install 'ray[default]'), or use --executor local.")
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.cell_function = cell_function or execute_cell  # what a worker runs (tests wrap it to inject faults)

    def _init(self):
        import ray

        if not ray.is_initialized():
            kwargs = {"runtime_env": {"py_modules": [str(PACKAGE_DIR)]}, "include_dashboard": False,
                      "log_to_driver": False, "ignore_reinit_error": True}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus, **kwargs)
        return ray

    def run(self, tasks, run_here, on_done, callbacks, cancel) -> None:
        if not tasks:
            return
        ray = self._init()
        from ray.util.queue import Queue

        events = Queue()
        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=MAX_RETRIES, retry_exceptions=False)(_remote_cell)
        pending = {remote.options(num_gpus=gpus_for(task, self.gpus_per_task)).remote(
            on_ray_worker(replace(task, threads=task.threads or self.cpus_per_task)), events, self.cell_function): task
            for task in tasks}
        try:
            while pending:
                if cancel.cancelled:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise RunCancelled("cancelled by the user")
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
                _drain(events, callbacks)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # the worker died more than MAX_RETRIES times, or Ray failed
                        result = RunResult(run_id="", strategy=task.strategy.get("name") or task.strategy["kind"],
                                           kind=task.strategy["kind"], status="failed", seed=task.seed,
                                           error=f"the Ray task failed after {MAX_RETRIES} retries: "
                                                 f"{type(exc).__name__}: {str(exc)[:300]}")
                    on_done(task, result)
            _drain(events, callbacks)
        finally:
            events.shutdown()


def _remote_cell(task: CellTask, events, cell_function) -> RunResult:
    """Runs in a Ray worker: progress events go back through the queue, a few a second at most."""
    last = [0.0]

    def forward(event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.phase == "done" or now - last[0] > 0.25:
            last[0] = now
            try:
                events.put_nowait(asdict(replace(event, cell=task.label)))
            except Exception:
                pass

    return cell_function(task, [forward])


def _drain(events, callbacks: list[ProgressCallback]) -> None:
    while True:
        try:
            item = events.get_nowait()
        except Exception:
            return
        event = ProgressEvent(**item)
        for cb in callbacks:
            cb(event)


def make_executor(name: Optional[str] = None, **kwargs) -> Executor:
    """'local' (default) or 'ray'; TLCORE_EXECUTOR picks when `name` is None."""
    name = (name or os.environ.get("TLCORE_EXECUTOR") or "local").strip().lower()
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(**kwargs)
    raise ConfigError(f"Unknown executor '{name}'; choose from {', '.join(EXECUTORS)}.")
