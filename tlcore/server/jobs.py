"""Background jobs for a UI: a process-wide queue that runs at most N training jobs (comparisons or sweeps) at a time
(1 by default, this is a small CPU machine), with live progress, curves, partial results and cancellation. No
streamlit import: the pages keep a job id and poll `JobQueue.get`.

A job is a record of the run store from the moment it is submitted (status 'queued'), and its id is the record's id:
finished runs are stored as they finish, a job outlives the browser session and the server, and one that a restart
or a kill cut short is shown as 'interrupted' and can be submitted again (a sweep then resumes from its stored cells).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Union

from tlcore.advice.candidates import Ranking, RankingConfig, rank_candidates, ranking_from_record
from tlcore.advice.health import HealthConfig, HealthReport, health_check, health_from_record
from tlcore.core.environment import require_within_data_roots, require_writable
from tlcore.core.errors import AccessError, RunCancelled, TlcoreError
from tlcore.data.builtin import BUILTIN_DATASETS
from tlcore.core.progress import CancelToken, ProgressEvent
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.deploy.tracking import log_to_mlflow, requested_uri, stored_log
from tlcore.experiments.backbones import KIND as BACKBONES, BackbonesConfig, BackbonesResult, compare_backbones, \
    load_backbones
from tlcore.experiments.cells import SweepCell
from tlcore.experiments.compare import compare, load_comparison
from tlcore.experiments.config import ExperimentConfig, SweepConfig
from tlcore.experiments.sweep import SweepResult, load_sweep, run_sweep
from tlcore.records.lifecycle import error_text
from tlcore.records.slot import SLOT_NAME
from tlcore.records.store import ACTIVE_STATUSES, Store, default_store

ACTIVE = ACTIVE_STATUSES  # queued or running: what the pages poll
MAX_JOBS, MAX_JOBS_PER_SESSION = 20, 3
JobConfig = Union[ExperimentConfig, SweepConfig, RankingConfig, BackbonesConfig, HealthConfig]
STORED_KINDS = ("comparison", "sweep", "ranking", BACKBONES, "health")


def job_kind(config: JobConfig) -> str:
    """The record kind a job stores: comparison, sweep, ranking (backbones ranked without training), backbones
    (a comparison or sweep run for several backbones) or health (a data health check)."""
    if isinstance(config, RankingConfig):
        return "ranking"
    if isinstance(config, HealthConfig):
        return "health"
    if isinstance(config, BackbonesConfig):
        return BACKBONES
    return "sweep" if isinstance(config, SweepConfig) else "comparison"


def progress_names(config: JobConfig) -> list[str]:
    """What a job's progress is keyed by before anything started: strategies, or candidates (x strategies)."""
    if isinstance(config, RankingConfig):
        return [c.label for c in config.candidates]
    if isinstance(config, HealthConfig):
        return ["health"]
    if isinstance(config, BackbonesConfig):
        if config.is_sweep:
            return [c.label for c in config.candidates]
        return [f"{c.label} · {s.name}" for c in config.candidates for s in config.experiment.strategies]
    exp = config.experiment if isinstance(config, SweepConfig) else config
    return [s.name for s in exp.strategies]


@dataclass
class Job:
    """One submitted comparison, sweep, ranking or multi-backbone comparison. Fields are updated by the worker thread;
    read them through `snapshot()`."""

    id: str
    config: JobConfig
    label: str = ""
    session: str = ""  # the browser session that submitted it (queue limits are per session too)
    status: str = "queued"  # queued, running, completed, failed, cancelled
    error: Optional[str] = None
    submitted: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    progress: dict[str, dict] = field(default_factory=dict)  # strategy -> last event
    live_curves: dict[str, list[dict]] = field(default_factory=dict)  # strategy -> per-epoch points so far
    runs: list[RunResult] = field(default_factory=list)  # finished strategies, as they finish
    result: Optional[Union[ComparisonResult, SweepResult, Ranking, BackbonesResult, HealthReport]] = None
    cells: list[SweepCell] = field(default_factory=list)  # sweeps: finished cells, as they finish
    mlflow_uri: str = ""  # logged there once finished ('' not logged): tlcore.deploy.tracking
    mlflow: Optional[dict] = None  # the outcome (MlflowLog.to_dict()), as the record's summary keeps it
    cancel: CancelToken = field(default_factory=CancelToken)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def kind(self) -> str:
        return job_kind(self.config)

    def on_event(self, event: ProgressEvent) -> None:
        name = event.cell or event.strategy
        with self._lock:
            sweep = self.kind == "sweep" or (isinstance(self.config, BackbonesConfig) and self.config.is_sweep)
            if event.phase == "done" and (sweep or event.strategy == SLOT_NAME):
                self.progress.pop(name, None)  # finished cells are in `cells`; the training slot, once taken, goes
            else:
                self.progress[name] = event.to_dict()
            if event.val_accuracy is not None and event.epoch and event.batch == 0:
                points = self.live_curves.setdefault(name, [])
                if not points or (points[-1]["epoch"], points[-1]["phase"]) != (event.epoch, event.phase):
                    points.append({"epoch": event.epoch, "val_accuracy": event.val_accuracy, "loss": event.loss,
                                   "phase": event.phase})  # 'head' (warm-up iterations) or 'epoch'


    def on_result(self, run: RunResult) -> None:
        with self._lock:
            self.runs.append(run)

    def on_cell(self, cell: SweepCell) -> None:
        with self._lock:
            self.cells.append(cell)
            self.live_curves.pop(cell.label, None)

    def snapshot(self) -> dict:
        """A consistent copy for the UI thread."""
        with self._lock:
            return {
                "id": self.id, "kind": self.kind, "label": self.label, "status": self.status, "error": self.error,
                "submitted": self.submitted, "started": self.started, "finished": self.finished,
                "progress": {k: dict(v) for k, v in self.progress.items()},
                "live_curves": {k: list(v) for k, v in self.live_curves.items()},
                "runs": list(self.runs), "result": self.result,
                "strategies": progress_names(self.config),
                "cells": list(self.cells),
                "cells_total": self.config.cells_total if self.kind in ("sweep", BACKBONES) else 0,
                "mlflow": self.mlflow,
            }


class JobQueue:
    """FIFO queue with `workers` threads. Jobs are identified by id, so two browser tabs never see each other's."""

    def __init__(self, workers: int = 1, store: Optional[Store] = None) -> None:
        self._jobs: dict[str, Job] = {}
        self._pending: deque[str] = deque()
        self._cv = threading.Condition()
        self._store = store
        self.store.mark_interrupted()  # jobs of a previous server process that never finished
        self._threads = [threading.Thread(target=self._work, name=f"tlcore-job-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    @property
    def store(self) -> Store:
        return self._store or default_store()

    def submit(self, config: JobConfig, label: str = "", session: str = "", mlflow_uri: Optional[str] = None) -> str:
        """Queue a comparison, a sweep, a ranking or a multi-backbone comparison; its record is stored at once, so even
        a queued job survives a restart.
        Refused when the queue is full (for the server, or for this browser session) or a path is not allowed.
        Once finished it is logged to MLflow at `mlflow_uri` (None: TLCORE_MLFLOW_URI; '': not logged); pages
        pass a visitor's URI only through tlcore.deploy.tracking.job_tracking_uri."""
        require_writable("start a run")
        kind = job_kind(config)
        mlflow_uri = requested_uri(mlflow_uri) if kind in ("comparison", "sweep") else ""
        dataset, backbones, weights = _paths(config)
        _check_paths(dataset, weights)
        with self._cv:
            self._check_capacity(session)
            record_id = self.store.create_record(kind, config.to_dict(), label=label, dataset=dataset,
                                                 backbone=", ".join(dict.fromkeys(backbones)), status="queued")
            job = Job(id=record_id, config=config, label=label, session=session, mlflow_uri=mlflow_uri)
            self._jobs[job.id] = job
            self._pending.append(job.id)
            self._cv.notify()
        return job.id

    def _check_capacity(self, session: str) -> None:
        active = [j for j in self._jobs.values() if j.status in ACTIVE]
        limit, per_session = queue_limits()
        if len(active) >= limit:
            raise AccessError(f"The job queue is full: {len(active)} jobs are queued or running and this server takes "
                              f"at most {limit} (TLCORE_MAX_JOBS). Wait for one to finish, or cancel one of yours.")
        mine = [j for j in active if session and j.session == session]
        if len(mine) >= per_session:
            raise AccessError(f"You already have {len(mine)} jobs queued or running; a browser session may have at "
                              f"most {per_session} (TLCORE_MAX_JOBS_PER_SESSION). Wait for one to finish, or cancel "
                              "one.")

    def get(self, job_id: str) -> Optional[dict]:
        """The live job, or a stored record (finished, interrupted, or from another server) in the same shape."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job.snapshot()
        return stored_snapshot(job_id, self.store)

    def cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.status not in ACTIVE:
            return False
        job.cancel.cancel()
        with self._cv:
            if job_id in self._pending:  # never started: cancelled at once
                self._pending.remove(job_id)
                job.status, job.error, job.finished = "cancelled", "cancelled before it started", time.time()
                self.store.update_record(job_id, status="cancelled", error=job.error)
        return True

    def active(self) -> list[dict]:
        """Queued and running jobs, oldest first, with their queue position: read under the queue's lock, under which
        a job leaves the queue and starts running, so a status and a position always agree."""
        out = []
        with self._cv:
            order = list(self._pending)
            for job in sorted(self._jobs.values(), key=lambda j: j.submitted):
                if job.status in ACTIVE:
                    snap = job.snapshot()
                    snap["position"] = order.index(job.id) + 1 if job.id in order else 0
                    out.append(snap)
        return out

    def wait(self, job_id: str, timeout: float = 600.0) -> Optional[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            snap = self.get(job_id)
            if snap is None or snap["status"] not in ACTIVE:
                return snap
            time.sleep(0.05)
        return self.get(job_id)

    # -- worker -------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    self._cv.wait()
                job = self._jobs[self._pending.popleft()]
                job.status, job.started = "running", time.time()  # with leaving the queue, as `active` reads them
            self._run(job)
            job.finished = time.time()

    def _run(self, job: Job) -> None:
        """The job through compare, run_sweep, rank_candidates or compare_backbones, which keep its record (claimed by
        id) up to date."""
        try:
            if job.kind == "ranking":
                config = job.config
                job.result = rank_candidates(config.dataset, list(config.candidates) or None,
                                             per_class=config.per_class, seed=config.seed, device=config.device,
                                             cancel=job.cancel, store=self.store, callbacks=[job.on_event],
                                             record_id=job.id)
            elif job.kind == "health":
                config = job.config
                try:
                    job.result = health_check(config.dataset, backbone=config.backbone, weights=config.weights,
                                              per_class=config.per_class, image_size=config.image_size,
                                              seed=config.seed, cancel=job.cancel, store=self.store,
                                              callbacks=[job.on_event], record_id=job.id)
                except RunCancelled:  # nothing half-made is kept: a check is quick to run again
                    job.status, job.error = "cancelled", "cancelled while the features were computed"
                    self.store.update_record(job.id, status="cancelled", error=job.error)
                    return
            elif job.kind == BACKBONES:
                job.result = compare_backbones(job.config, callbacks=[job.on_event], cancel=job.cancel,
                                               store=self.store, on_result=job.on_result, label=job.label,
                                               record_id=job.id)
            elif job.kind == "sweep":
                job.result = run_sweep(job.config, callbacks=[job.on_event], cancel=job.cancel, on_cell=job.on_cell,
                                       label=job.label, store=self.store, record_id=job.id)
            else:
                job.result = compare(job.config, callbacks=[job.on_event], cancel=job.cancel,
                                     on_result=job.on_result, store=self.store, record_id=job.id)
            if job.mlflow_uri:  # still 'running' meanwhile, so the page shows the results with the outcome
                job.on_event(ProgressEvent("MLflow", "waiting", fraction=0.5, message="logging to MLflow"))
                job.mlflow = log_to_mlflow(job.result, job.mlflow_uri, store=self.store).to_dict()
                with job._lock:
                    job.progress.pop("MLflow", None)
            stored = self.store.record(job.id)  # None once deleted from History while it ran
            job.status, job.error = job.result.status, (stored or {}).get("error")
        except Exception as exc:  # keep the worker alive; the message goes to the page (the record says failed)
            job.status, job.error = "failed", error_text(exc)
            if job.kind in ("ranking", BACKBONES, "health") and self.store.record(job.id) is not None:
                self.store.update_record(job.id, status="failed", error=job.error)
            if not isinstance(exc, TlcoreError):
                traceback.print_exc()


def queue_limits() -> tuple[int, int]:
    """(jobs queued or running on this server, per browser session): TLCORE_MAX_JOBS, TLCORE_MAX_JOBS_PER_SESSION."""
    return (int(os.environ.get("TLCORE_MAX_JOBS", MAX_JOBS)),
            int(os.environ.get("TLCORE_MAX_JOBS_PER_SESSION", MAX_JOBS_PER_SESSION)))


def _paths(config: JobConfig) -> tuple[str, list[str], list[str]]:
    """A job's dataset source, backbone names and weights (names or files)."""
    if isinstance(config, RankingConfig):
        return config.dataset.source, [c.backbone for c in config.candidates], [c.weights for c in config.candidates]
    if isinstance(config, HealthConfig):
        return config.dataset.source, [config.backbone], [config.weights]
    if isinstance(config, BackbonesConfig):
        return (config.experiment.dataset.source, [c.backbone for c in config.candidates],
                [c.weights for c in config.candidates])
    exp = config.experiment if isinstance(config, SweepConfig) else config
    return exp.dataset.source, [exp.backbone.name], [exp.backbone.weights]


def _check_paths(dataset: str, weights: list[str]) -> None:
    """A visitor's folder and weights files must lie under the data roots: refused at submission, not in the queue."""
    if dataset not in BUILTIN_DATASETS:
        require_within_data_roots(dataset, "dataset folder")
    for w in weights:
        if w not in ("pretrained", "packaged", "hub", "none", "random", "scratch"):
            require_within_data_roots(w, "weights file")


def stored_snapshot(record_id: str, store: Store) -> Optional[dict]:
    """A stored comparison, sweep, ranking or multi-backbone comparison in the shape of `Job.snapshot()`."""
    if not record_id or not record_id.isalnum():
        return None
    record = store.record(record_id)
    if record is None or record["kind"] not in STORED_KINDS:
        return None
    if record["kind"] == "health":
        result = health_from_record(record) if record.get("summary") else None
        runs, cells, total, strategies = [], [], 0, ["health"]
    elif record["kind"] == "ranking":
        config = RankingConfig.from_dict(record["config"])
        result = ranking_from_record(record) if record.get("summary") else None
        runs, cells, total = [], [], 0
        strategies = progress_names(config)
    elif record["kind"] == BACKBONES:
        result = load_backbones(record_id, store)
        runs, cells = [r for m in result.members for r in m.runs()], []
        strategies, total = progress_names(result.config), result.config.cells_total
    elif record["kind"] == "sweep":
        result = load_sweep(record_id, store)
        runs, cells = [c.run for c in result.cells], list(result.cells)
        config = SweepConfig.from_dict(record["config"])
        strategies, total = [s.name for s in config.experiment.strategies], config.cells_total
    else:
        result = load_comparison(record_id, store)
        runs, cells = list(result.runs), []
        strategies = [s.get("name") or s["kind"] for s in record["config"].get("strategies", [])]
        total = 0
    return {"id": record_id, "kind": record["kind"], "label": record["label"], "status": record["status"],
            "error": record["error"], "submitted": record["created_at"], "started": None,
            "finished": record["updated_at"], "progress": {}, "live_curves": {}, "runs": runs,
            "result": result if (runs or record["status"] not in ACTIVE_STATUSES) else None,
            "strategies": strategies, "cells": cells, "cells_total": total, "record": record,
            "mlflow": stored_log(record)}


_QUEUE: Optional[JobQueue] = None
_QUEUE_LOCK = threading.Lock()


def default_queue() -> JobQueue:
    """The process-wide queue (one worker unless TLCORE_JOB_WORKERS says otherwise)."""
    global _QUEUE
    with _QUEUE_LOCK:
        if _QUEUE is None:
            _QUEUE = JobQueue(workers=int(os.environ.get("TLCORE_JOB_WORKERS", "1")))
        return _QUEUE
