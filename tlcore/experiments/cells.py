"""The one runner of cells. A cell is one strategy at one images-per-class size with one seed; a sweep is many cells,
a comparison is a sweep with one size and one seed. Both run here, in four steps:

    plan      every (seed, size, strategy) cell with its content key; cells already in the store are reused
    features  frozen features once per seed, for its largest subset (every smaller subset is served from the cache)
    execute   the remaining cells, here or as tasks of an executor (Ray); each is stored as it finishes
    finish    the overall status and the record's summary

For each seed the subsets are nested (the 10-a-class subset lies inside the 25-a-class one); val and test never
change. Images are decoded once (`Prepared.cell_data`).
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from tlcore.core.environment import data_home
from tlcore.core.errors import RunCancelled
from tlcore.core.progress import CancelToken, ProgressCallback, ProgressEvent, Reporter
from tlcore.core.results import RunResult
from tlcore.data.dataset import Dataset
from tlcore.engine.features import FeatureCache, default_cache
from tlcore.engine.strategies import StrategySpec
from tlcore.engine.train import still_rising
from tlcore.experiments.config import Size, SweepConfig, size_label
from tlcore.experiments.executors import CellTask, Executor, make_executor
from tlcore.experiments.learning_curves import mean_interval
from tlcore.experiments.prepare import Prepared, prepare
from tlcore.experiments.runner import Runner, head_key
from tlcore.records.lifecycle import RecordLifecycle, overall_status
from tlcore.records.slot import SLOT_NAME, training_slot
from tlcore.records.store import Store, default_store

CELL_VERSION = 3  # bump when a change to the engine makes stored cells incomparable


def cell_key(prepared: Prepared, spec: StrategySpec, size: Size, seed: int) -> str:
    """Same key, same computation: data (pixels, labels, split), backbone and weights, strategy options, size, seed,
    image size and device."""
    raw = {"v": CELL_VERSION, "data": prepared.dataset.fingerprint(), "backbone": prepared.config.backbone.name,
           "weights": prepared.weights_id if spec.pretrained else "none", "strategy": spec.options(),
           "size": 0 if size is None else size,  # keys stored before 'all' had one spelling hashed it as 0
           "seed": seed, "image_size": prepared.image_size.pixels, "device": prepared.device.type}
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Cell:
    spec: StrategySpec
    size: Size
    seed: int
    key: str
    label: str


@dataclass
class SweepCell:
    """One finished cell: a strategy at one size with one seed, and its run."""

    strategy: str
    kind: str
    size: Size
    seed: int
    images_per_class: float  # mean training images a class actually used (classes smaller than `size` keep all)
    key: str
    run: RunResult
    resumed: bool = False  # taken from the store, not recomputed

    @property
    def label(self) -> str:
        return f"{self.strategy} · {size_label(self.size)}/class · seed {self.seed}"

    def to_row(self) -> dict:
        r = self.run
        still_improving = (r.kind != "feature-extraction" and r.epochs_run > 0 and not r.stopped_early
                           and still_rising(r.curve))
        return {"strategy": self.strategy, "kind": self.kind, "size": size_label(self.size), "seed": self.seed,
                "images_per_class": self.images_per_class, "status": r.status, "accuracy": r.accuracy,
                "accuracy_low": r.accuracy_low, "accuracy_high": r.accuracy_high, "macro_f1": r.macro_f1,
                "train_seconds": r.train_seconds, "trainable_params": r.trainable_params,
                "epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "still_improving": still_improving,
                "resumed": self.resumed, "error": r.error, "run_id": r.run_id, "key": self.key}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["run"] = self.run.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SweepCell":
        return cls(**{**d, "size": d.get("size") or None, "run": RunResult.from_dict(d["run"])})


@dataclass
class CellsOutcome:
    """What a run of cells produced, in plan order; sweep.py and compare.py turn it into their result types."""

    record_id: str
    status: str
    prepared: Prepared
    planned: list[Cell]
    cells: list[SweepCell]  # finished (computed or reused), in plan order
    subsets: dict[tuple[int, Size], Dataset]
    wall_seconds: float
    feature_cache: dict = field(default_factory=dict)


@dataclass
class SharedExtraction:
    """A seed's frozen features, extracted once before its cells for the largest subset: what it took, how many image
    rows it covered and which cells use them."""

    seconds: float
    rows: int
    users: list[str]  # cell labels

    def charge(self, rows: int) -> float:
        """What a cell that needs `rows` of these features would spend extracting them alone (pro rata)."""
        return self.seconds * min(1.0, rows / max(self.rows, 1))


def _rows(dataset: Dataset) -> int:
    return sum(len(dataset.indices[split]) for split in ("train", "val", "test") if split in dataset.indices)


class _CellEvents:
    """Tags each progress event with the cell it belongs to (events from a Ray worker already name theirs)."""

    def __init__(self, callbacks: list[ProgressCallback]) -> None:
        self.callbacks, self.cell = callbacks, ""

    def __call__(self, event: ProgressEvent) -> None:
        if not event.cell:
            event = replace(event, cell=self.cell)
        for cb in self.callbacks:
            cb(event)


class CellsRun:
    """One comparison or sweep, from plan to finished record. Use `run_cells`."""

    def __init__(self, config: SweepConfig, kind: str, store: Store, cache: FeatureCache,
                 callbacks: list[ProgressCallback], cancel: CancelToken, executor: Executor,
                 on_cell: Optional[Callable[[SweepCell], None]], label_cell: Callable[[Cell], str],
                 build: Callable[[CellsOutcome], tuple[object, dict]]) -> None:
        self.config, self.kind, self.store, self.cache, self.build = config, kind, store, cache, build
        self.events, self.cancel, self.executor = _CellEvents(callbacks), cancel, executor
        self.on_cell, self.label_cell = on_cell, label_cell
        self.prepared: Optional[Prepared] = None
        self.subsets: dict[tuple[int, Size], Dataset] = {}
        self.finished: dict[str, SweepCell] = {}  # by cell key
        self.shared_features: dict[int, SharedExtraction] = {}  # by seed, charged to every cell that uses them
        self.head_fits: dict[tuple, dict] = {}  # (seed, size) -> linear heads by options: FE's is FT's LP start
        self.head_users: dict[tuple, dict] = {}  # (seed, size) -> head options -> the strategies that fit that head

    # -- plan ---------------------------------------------------------------------------------------------------
    def plan(self) -> list[Cell]:
        prepared = self.prepared
        cells = []
        for seed in self.config.seeds:
            for size in self.config.sizes:
                self.subsets[(seed, size)] = prepared.subset(size, seed)
                for spec in self.config.strategies_at(size):
                    cell = Cell(spec, size, seed, cell_key(prepared, spec, size, seed), "")
                    cells.append(replace(cell, label=self.label_cell(cell)))
        return cells

    def reuse_stored(self, cells: list[Cell]) -> list[Cell]:
        """Store the cells already computed under the same key (from any record); return the rest."""
        todo = []
        for cell in cells:
            stored = self.store.completed_cell(cell.key)
            if stored is None:
                todo.append(cell)
            else:
                self.record(cell, stored, resumed=True)
        return todo

    # -- shared features ----------------------------------------------------------------------------------------
    def share_features(self, todo: list[Cell]) -> None:
        """Decode each seed's largest subset once, and extract its frozen features once into the cache."""
        largest = self.config.sizes[-1]
        for seed in sorted({c.seed for c in todo}):
            self.prepared.decode("train", self.subsets[(seed, largest)].indices["train"])
        for seed in sorted({c.seed for c in todo if c.spec.uses_frozen_features}):
            if self.cancel.cancelled:
                return
            self.events.cell = f"features · seed {seed}"
            reporter = Reporter("features", [self.events], self.cancel)
            started = time.perf_counter()
            runner = self.runner(seed, largest)
            for i, split in enumerate(("train", "val", "test")):
                runner.features(split, reporter, (i / 3, (i + 1) / 3))
            users = [c.label for c in todo if c.seed == seed and c.spec.uses_frozen_features]
            self.shared_features[seed] = SharedExtraction(time.perf_counter() - started,
                                                          _rows(self.subsets[(seed, largest)]), users)
            reporter("done", 1.0)

    # -- execute ------------------------------------------------------------------------------------------------
    def runner(self, seed: int, size: Size) -> Runner:
        data = self.prepared.cell_data(self.subsets[(seed, size)])
        return Runner(self.prepared, data, seed, [self.events], self.cancel, self.cache, keep_models=True,
                      head_fits=self.head_fits.setdefault((seed, size), {}),
                      head_users=self.head_users.get((seed, size), {}))

    def plan_head_users(self, todo: list[Cell]) -> None:
        """Which strategies of each cell fit the same linear head (feature extraction's is fine-tune's LP-FT start):
        the one that fits it says whom it shares it with."""
        for c in todo:
            if c.spec.uses_frozen_features:
                by_key = self.head_users.setdefault((c.seed, c.size), {})
                by_key.setdefault(head_key(c.spec), []).append(c.spec.name)

    def run_here(self, task: CellTask) -> RunResult:
        """A task in this process, with the shared decoded images; the trained model is saved with the record."""
        self.events.cell = task.label
        cell = self._cells[task.key]
        runner = self.runner(cell.seed, cell.size)
        run = runner.run(cell.spec)
        runner.keep(run, self.lifecycle.record_id)
        return run

    def execute(self, todo: list[Cell]) -> None:
        self._cells = {c.key: c for c in todo}
        self.plan_head_users(todo)
        exp = self.prepared.config
        # the device as the driver resolved it ('auto' could resolve otherwise in a worker, after the image size was
        # chosen for this device), so an executor knows which cells need a GPU
        device = str(self.prepared.device)
        tasks = [CellTask(replace(exp, seed=c.seed, device=device).to_dict(), c.spec.options(), c.size, c.seed, c.key,
                          c.label, str(data_home()), record_id=self.lifecycle.record_id) for c in todo]
        if not self.cancel.cancelled:
            self.executor.run(tasks, self.run_here, lambda task, run: self.record(self._cells[task.key], run),
                              [self.events], self.cancel)

    def record(self, cell: Cell, run: RunResult, resumed: bool = False) -> None:
        ds = self.subsets[(cell.seed, cell.size)]
        per_class = float(np.mean(list(ds.counts("train").values())))
        if not resumed:
            run.extra["images_per_class"] = per_class
            run.extra["train_indices"] = ds.indices["train"].tolist()  # which images: auditable
            self._charge_shared_features(cell, run)
        done = SweepCell(cell.spec.name, cell.spec.kind, cell.size, cell.seed, per_class, cell.key, run, resumed)
        self.lifecycle.add(run, cell.key, cell.size, resumed)
        self.finished[cell.key] = done
        if self.on_cell:
            self.on_cell(done)

    def _charge_shared_features(self, cell: Cell, run: RunResult) -> None:
        """The seed's extraction, done once before its cells, counted in every cell that uses the features as what
        that cell would have spent extracting its own rows alone (a comparison: the whole extraction, in feature
        extraction and in fine-tune's LP-FT start alike; a sweep: pro rata to the cell's training subset)."""
        shared = self.shared_features.get(cell.seed)
        if shared is None or not cell.spec.uses_frozen_features:
            return
        seconds = round(shared.charge(_rows(self.subsets[(cell.seed, cell.size)])), 4)
        run.timings["shared_features"] = seconds
        run.timings["total"] = round(run.timings.get("total", 0.0) + seconds, 4)
        run.train_seconds = round((run.train_seconds or 0.0) + seconds, 4)
        others = [label for label in shared.users if label != cell.label]
        if others:
            run.shared["features"] = {"seconds": seconds, "with": others}

    # -- adaptive repeats ---------------------------------------------------------------------------------------
    def half_width(self, size: Size) -> float:
        """The widest 95% half-width at `size` among the adaptive strategies' finished repeats (inf below two)."""
        widest = 0.0
        for spec in self.config.strategies_at(size):
            if spec.kind not in self.config.adaptive_kinds:
                continue
            accuracies = [c.run.accuracy for c in self.finished.values() if c.size == size and c.strategy == spec.name
                          and c.run.status == "completed" and c.run.accuracy is not None]
            if len(accuracies) < 2:
                return float("inf")
            mean, low, high = mean_interval(accuracies)
            widest = max(widest, (high - low) / 2)
        return widest

    def repeat_where_wide(self, resume: bool) -> list[Cell]:
        """One more seed at a time for the cheap strategies at each size whose interval is still wider than the
        target, up to `max_repeats` seeds: repeats go where they narrow the question and cost least. Returns the
        cells added."""
        cfg, added = self.config, []
        if cfg.max_repeats <= cfg.repeats:
            return added
        for size in cfg.sizes:
            seed = cfg.experiment.seed + cfg.repeats
            while seed < cfg.experiment.seed + cfg.max_repeats and not self.cancel.cancelled and \
                    self.half_width(size) > cfg.target_half_width:
                self.subsets[(seed, size)] = self.prepared.subset(size, seed)
                new = [replace(cell, label=self.label_cell(cell)) for cell in
                       (Cell(spec, size, seed, cell_key(self.prepared, spec, size, seed), "")
                        for spec in cfg.strategies_at(size) if spec.kind in cfg.adaptive_kinds)]
                self.execute(self.reuse_stored(new) if resume else new)
                added += new
                seed += 1
        return added

    # -- finish -------------------------------------------------------------------------------------------------
    def finish(self, cells: list[Cell], started: float, rows_before: tuple[int, int]):
        done = [self.finished[c.key] for c in cells if c.key in self.finished]
        status = overall_status([c.run.status for c in done], self.cancel.cancelled)
        stats = self.cache.stats
        outcome = CellsOutcome(self.lifecycle.record_id, status, self.prepared, cells, done, self.subsets,
                               round(time.perf_counter() - started, 3),
                               {"rows_computed": stats.rows_computed - rows_before[0],
                                "rows_reused": stats.rows_reused - rows_before[1]})
        result, summary = self.build(outcome)
        self.lifecycle.finish(status, [(c.label, c.run) for c in done], summary)
        return result

    def run(self, resume: bool, label: str, record_id: Optional[str]) -> CellsOutcome:
        started = time.perf_counter()
        exp = self.config.experiment
        self.lifecycle = RecordLifecycle.open(self.store, self.kind, self.config_dict(), label=label,
                                              dataset=exp.dataset.source, backbone=exp.backbone.name,
                                              record_id=record_id)
        rows_before = (self.cache.stats.rows_computed, self.cache.stats.rows_reused)
        cells: list[Cell] = []
        try:
            self.prepared = prepare(exp)
            cells = self.plan()
            todo = self.reuse_stored(cells) if resume else cells
            with self.slot(todo):
                self.share_features(todo)
                self.execute(todo)
                cells += self.repeat_where_wide(resume)
        except RunCancelled:
            pass
        except BaseException as exc:
            self.lifecycle.fail(exc)
            raise
        return self.finish(cells, started, rows_before)

    def config_dict(self) -> dict:
        return self.config.experiment.to_dict() if self.kind == "comparison" else self.config.to_dict()

    @contextmanager
    def slot(self, todo: list[Cell]):
        """The machine's training slot (records/slot.py) around the computation, not while queued or preparing; none
        when every cell is stored. Waiting is a progress event (phase 'waiting'), and a cancel ends the wait."""
        if not todo:
            yield
            return
        what = f"{self.kind} {self.lifecycle.record_id}, {self.config.experiment.backbone.name}"

        def say(message: str) -> None:
            self.events(ProgressEvent(SLOT_NAME, "waiting", message=message))

        with training_slot(what, self.cancel, say, device=str(self.prepared.device)) as waited:
            if waited:
                self.events(ProgressEvent(SLOT_NAME, "done", fraction=1.0, message="the slot is free: starting"))
            yield


def run_cells(config: SweepConfig, kind: str, build: Callable[[CellsOutcome], tuple[object, dict]],
              callbacks: Optional[list[ProgressCallback]] = None,
              cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
              store: Optional[Store] = None, on_cell: Optional[Callable[[SweepCell], None]] = None,
              resume: bool = True, label: str = "", record_id: Optional[str] = None,
              executor: Optional[Executor] = None,
              label_cell: Callable[[Cell], str] = lambda c: f"{c.spec.name} · {size_label(c.size)}/class · seed "
                                                            f"{c.seed}") -> CellsOutcome:
    """Plan, share features, execute and finish the cells of `config` as one record of `kind` ('sweep' or
    'comparison'); `build` turns the outcome into the caller's result and the record's summary. With `resume`, cells
    already in the store (same content key, completed) are reused. A cancel stops after the current batch and keeps
    every finished cell; a failed cell does not stop the others."""
    run = CellsRun(config, kind, store or default_store(), cache or default_cache(), list(callbacks or []),
                   cancel or CancelToken(), executor or make_executor(), on_cell, label_cell, build)
    return run.run(resume, label, record_id)
