"""Dataset-size sweeps: the chosen strategies at several images-per-class sizes, repeated with several seeds, on one
split whose validation and test sets never change.

For each seed the subsets are nested (the 10-a-class subset lies inside the 25-a-class one). The work shared between
cells is done once: images are decoded and resized once for the largest subsets, and frozen features are extracted
once per seed for the largest subset (the feature cache then serves every smaller one, and the rows the seeds share).
Every finished cell goes to the run store under a content key, so an interrupted sweep, run again, recomputes only
the cells that did not finish.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from . import backbone as bb
from .data import Dataset, PreparedImages, load_dataset, prepare_split
from .environment import data_home, library_versions, resolve_device
from .errors import ConfigError, RunCancelled
from .executors import CellTask, Executor, make_executor
from .experiment import ExperimentConfig, PreparedData, Runner, auto_image_size
from .features import FeatureCache, default_cache
from .learning_curves import Crossover, find_crossovers, summarize
from .progress import CancelToken, ProgressCallback, ProgressEvent, Reporter
from .results import RunResult, _jsonable
from .strategies import StrategySpec
from .store import Store, default_store

ALL = 0  # size meaning "every training image"
DEFAULT_SIZES = (5, 10, 25, 50, 100)
CELL_VERSION = 1  # bump when a change to the engine makes stored cells incomparable


def parse_sizes(text: str | Sequence) -> list[int]:
    """'5,10,all' -> [5, 10, 0]; sorted, unique, 'all' (0) last."""
    items = text.split(",") if isinstance(text, str) else list(text)
    sizes = []
    for item in items:
        item = str(item).strip().lower()
        if not item:
            continue
        if item in ("all", "0"):
            sizes.append(ALL)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ConfigError(f"Sweep size '{item}' is not a whole number of images per class; use e.g. "
                              "'5,10,25,50,100,all'.") from None
        if value < 1:
            raise ConfigError(f"Sweep size {value} must be at least 1 image per class (or 'all').")
        sizes.append(value)
    if not sizes:
        raise ConfigError("No sweep sizes given; use e.g. '5,10,25,50,100'.")
    return sorted(set(sizes), key=lambda s: (s == ALL, s))


def size_label(size: int) -> str:
    return "all" if size == ALL else str(size)


@dataclass
class SweepConfig:
    """A sweep: the experiment (data, backbone, strategies, image size, device, first seed) at several sizes, repeated
    with seeds seed, seed + 1, ... The experiment's own per_class is ignored."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    repeats: int = 2

    def __post_init__(self) -> None:
        self.sizes = parse_sizes(self.sizes)
        if not 1 <= self.repeats <= 50:
            raise ConfigError(f"repeats must be between 1 and 50 (got {self.repeats}).")

    @property
    def seeds(self) -> list[int]:
        return [self.experiment.seed + r for r in range(self.repeats)]

    @property
    def cells_total(self) -> int:
        return len(self.sizes) * self.repeats * len(self.experiment.strategies)

    def to_dict(self) -> dict:
        return {"experiment": self.experiment.to_dict(), "sizes": list(self.sizes), "repeats": self.repeats}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        return cls(experiment=ExperimentConfig.from_dict(d.get("experiment", {})),
                   sizes=d.get("sizes", list(DEFAULT_SIZES)), repeats=d.get("repeats", 2))


@dataclass
class SweepCell:
    """One strategy at one size with one seed."""

    strategy: str
    kind: str
    size: int
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
                           and r.best_epoch == r.epochs_run)
        return {"strategy": self.strategy, "kind": self.kind, "size": self.size, "seed": self.seed,
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
        return cls(**{**d, "run": RunResult.from_dict(d["run"])})


@dataclass
class SweepResult:
    config: dict
    dataset: dict
    cells: list[SweepCell]
    record_id: str = ""
    status: str = "completed"
    environment: dict = field(default_factory=dict)
    test_indices: list = field(default_factory=list)
    wall_seconds: float = 0.0
    feature_cache: dict = field(default_factory=dict)  # rows computed / reused during this sweep

    def cells_frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.to_row() for c in self.cells])

    def summary(self) -> pd.DataFrame:
        return summarize(self.cells_frame())

    def crossovers(self) -> list[Crossover]:
        return find_crossovers(self.summary())

    def to_dict(self) -> dict:
        return {"config": self.config, "dataset": self.dataset, "cells": [c.to_dict() for c in self.cells],
                "record_id": self.record_id, "status": self.status, "environment": self.environment,
                "test_indices": self.test_indices, "wall_seconds": self.wall_seconds,
                "feature_cache": self.feature_cache,
                "summary": self.summary().to_dict(orient="records"),
                "crossovers": [c.to_dict() for c in self.crossovers()]}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepResult":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["cells"] = [SweepCell.from_dict(c) for c in d.get("cells", [])]
        return cls(**d)

    def save(self, out_dir: str | Path, stem: str = "sweep") -> list[Path]:
        """`<stem>.json` (everything), `<stem>_cells.csv` (one row per cell), `<stem>_summary.csv` (per strategy and
        size: mean, interval, time)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{stem}.json", out / f"{stem}_cells.csv", out / f"{stem}_summary.csv"]
        paths[0].write_text(json.dumps(self.to_dict(), indent=1, default=_jsonable))
        self.cells_frame().to_csv(paths[1], index=False)
        self.summary().to_csv(paths[2], index=False)
        return paths

    @classmethod
    def load(cls, path: str | Path) -> "SweepResult":
        return cls.from_dict(json.loads(Path(path).read_text()))


def cell_key(dataset: Dataset, config: ExperimentConfig, weights_id: str, spec_options: dict, size: int, seed: int,
             image_size: int, device: str) -> str:
    """Same key, same computation: data (pixels, labels, split), backbone and weights, strategy options, size,
    seed, image size and device."""
    raw = {"v": CELL_VERSION, "data": dataset.fingerprint(), "backbone": config.backbone.name,
           "weights": weights_id, "strategy": spec_options, "size": size, "seed": seed, "image_size": image_size,
           "device": device}
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _select(prepared: PreparedImages, indices: np.ndarray) -> PreparedImages:
    position = {int(i): p for p, i in enumerate(prepared.indices.tolist())}
    rows = torch.as_tensor([position[int(i)] for i in indices], dtype=torch.long)
    return PreparedImages(images=prepared.images[rows], labels=prepared.labels[rows], indices=np.asarray(indices))


class _CellEvents:
    """Tags each progress event with the cell it belongs to."""

    def __init__(self, callbacks: list[ProgressCallback]) -> None:
        self.callbacks, self.cell = callbacks, ""

    def __call__(self, event: ProgressEvent) -> None:
        if not event.cell:  # events from a Ray worker already name their cell
            event = replace(event, cell=self.cell)
        for cb in self.callbacks:
            cb(event)


def run_sweep(config: Optional[SweepConfig] = None, callbacks: Optional[list[ProgressCallback]] = None,
              cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
              store: Optional[Store] = None, on_cell: Optional[Callable[[SweepCell], None]] = None,
              resume: bool = True, label: str = "", record_id: Optional[str] = None,
              executor: Optional[Executor] = None) -> SweepResult:
    """Run every (seed, size, strategy) cell, smallest size first within each seed; store each cell as it finishes.
    With `resume`, cells already in the store (same content key, completed) are taken from it, not recomputed.
    A cancel stops after the current batch and keeps every finished cell."""
    started = time.perf_counter()
    config = config or SweepConfig()
    exp = config.experiment
    if not exp.strategies:
        raise ConfigError("No strategies given; choose one or more of feature-extraction, fine-tune, scratch.")
    cancel = cancel or CancelToken()
    cache = cache or default_cache()
    store = store or default_store()
    events = _CellEvents(list(callbacks or []))
    device = resolve_device(exp.device)

    full = load_dataset(replace(exp.dataset, per_class=None), seed=exp.seed)
    pretrained = any(s.pretrained for s in exp.strategies)
    if pretrained:
        template, info = bb.load_template(exp.backbone)  # fails early and clearly if the weights cannot be had
        weights_id = info.sha256 or info.name
    else:
        template, _ = bb.for_run(replace(exp.backbone, weights="none"), full.num_classes, pretrained=False)
        weights_id = "none"
    image_size = exp.image_size or auto_image_size(full.native_size())
    if not 16 <= image_size <= 1024:
        raise ConfigError(f"image_size must be between 16 and 1024 pixels (got {image_size}).")
    cfg = bb.data_config(template, image_size)
    transform = bb.eval_transform(cfg)

    subsets = {seed: {size: full.subset(None if size == ALL else size, seed) for size in config.sizes}
               for seed in config.seeds}
    largest = config.sizes[-1]
    tkey = bb.transform_key(cfg)
    decoded: dict[str, PreparedImages] = {}

    def prepared(ds: Dataset) -> PreparedData:
        """Decode and resize each image once, on first need: the union of every seed's largest subset, val, test."""
        if not decoded:
            union = np.unique(np.concatenate([subsets[s][largest].indices["train"] for s in config.seeds]))
            decoded["train"] = prepare_split(full, "train", transform, indices=union)
            decoded["val"], decoded["test"] = prepare_split(full, "val", transform), prepare_split(full, "test",
                                                                                                 transform)
        return PreparedData(ds, cfg, tkey, {"train": _select(decoded["train"], ds.indices["train"]),
                                            "val": decoded["val"], "test": decoded["test"]})

    if record_id is None:
        record_id = store.create_record("sweep", config.to_dict(), label=label, dataset=full.name,
                                        backbone=exp.backbone.name)
    else:  # a queued job's record
        store.claim(record_id)
    rows_before = (cache.stats.rows_computed, cache.stats.rows_reused)
    needs_features = pretrained and any(s.kind == "feature-extraction" or (s.kind == "fine-tune" and s.lp_ft)
                                        for s in exp.strategies)
    runners: dict[tuple[int, int], Runner] = {}

    def runner(seed: int, size: int) -> Runner:
        if (seed, size) not in runners:
            cell_exp = replace(exp, seed=seed, image_size=image_size,
                               dataset=replace(exp.dataset, per_class=None if size == ALL else size))
            runners[(seed, size)] = Runner(cell_exp, prepared(subsets[seed][size]), device, [events], cancel, cache)
        return runners[(seed, size)]

    order = {(seed, size, spec.name): i for i, (seed, size, spec) in enumerate(
        (seed, size, spec) for seed in config.seeds for size in config.sizes for spec in exp.strategies)}
    specs = {spec.name: spec for spec in exp.strategies}
    cells: list[SweepCell] = []
    tasks: list[CellTask] = []

    def record_cell(seed: int, size: int, spec: StrategySpec, key: str, run: RunResult, resumed: bool) -> None:
        ds = subsets[seed][size]
        per_class = float(np.mean(list(ds.counts("train").values())))
        if not resumed:
            run.extra["images_per_class"] = per_class
            run.extra["train_indices"] = ds.indices["train"].tolist()  # which images: auditable
        cell = SweepCell(spec.name, spec.kind, size, seed, per_class, key, run, resumed)
        store.add_run(record_id, run, cell_key=key, per_class=size, resumed=resumed)
        cells.append(cell)
        if on_cell:
            on_cell(cell)

    status, error = "completed", None
    try:
        for seed in config.seeds:
            for size in config.sizes:
                for spec in exp.strategies:
                    key = cell_key(full, exp, weights_id if spec.pretrained else "none", spec.options(), size, seed,
                                   image_size, device.type)
                    stored = store.completed_cell(key) if resume else None
                    if stored is not None:
                        record_cell(seed, size, spec, key, stored, True)
                        continue
                    task_exp = replace(exp, seed=seed, image_size=image_size).to_dict()
                    tasks.append(CellTask(task_exp, spec.options(), size, seed, key,
                                          f"{spec.name} · {size_label(size)}/class · seed {seed}", str(data_home())))
        # Frozen features once per seed, for its largest subset, here: every cell (in this process or a Ray worker
        # reading the data directory's cache) then finds them instead of recomputing them.
        for seed in sorted({t.seed for t in tasks} if needs_features else ()):
            if cancel.cancelled:
                break
            events.cell = f"features · seed {seed}"
            reporter = Reporter("features", [events], cancel)
            for i, split in enumerate(("train", "val", "test")):
                runner(seed, largest)._features(template, info, split, reporter, (i / 3, (i + 1) / 3))
            reporter("done", 1.0)

        def run_here(task: CellTask) -> RunResult:
            events.cell = task.label
            return runner(task.seed, task.size).run(specs[task.strategy["name"]])

        def done(task: CellTask, run: RunResult) -> None:
            record_cell(task.seed, task.size, specs[task.strategy["name"]], task.key, run, False)

        if not cancel.cancelled:
            (executor or make_executor()).run(tasks, run_here, done, [events], cancel)
        cells.sort(key=lambda c: order[(c.seed, c.size, c.strategy)])
        if cancel.cancelled:
            status = "cancelled"
        elif cells and all(c.run.status == "failed" for c in cells):
            status = "failed"
        failed = [f"{c.label}: {c.run.error}" for c in cells if c.run.status == "failed"]
        error = "; ".join(failed[:5]) or None
    except RunCancelled:
        status, error = "cancelled", None
    except BaseException as exc:
        store.update_record(record_id, status="cancelled" if isinstance(exc, KeyboardInterrupt) else "failed",
                            error=f"{type(exc).__name__}: {exc}")
        raise
    result = SweepResult(config=config.to_dict() | {"image_size": image_size}, dataset=full.summary(), cells=cells,
                         record_id=record_id, status=status, environment=library_versions(),
                         test_indices=full.indices["test"].tolist(), wall_seconds=round(time.perf_counter() - started, 3),
                         feature_cache={"rows_computed": cache.stats.rows_computed - rows_before[0],
                                        "rows_reused": cache.stats.rows_reused - rows_before[1]})
    store.update_record(record_id, status=status, error=error,
                        summary={"dataset": result.dataset, "environment": result.environment,
                                 "image_size": image_size,
                                 "wall_seconds": result.wall_seconds, "feature_cache": result.feature_cache,
                                 "test_indices": result.test_indices,
                                 "crossovers": [c.to_dict() for c in result.crossovers()]})
    return result


def load_sweep(record_id: str, store: Optional[Store] = None) -> Optional[SweepResult]:
    """A stored sweep, rebuilt from its record and its cells (also a sweep still running or interrupted)."""
    store = store or default_store()
    record = store.record(record_id)
    if record is None or record["kind"] != "sweep":
        return None
    summary = record["summary"] or {}
    cells = []
    for row in store.runs(record_id):
        run = row["run"]
        cells.append(SweepCell(run.strategy, run.kind, row["per_class"] or 0, run.seed,
                               float(run.extra.get("images_per_class", 0)), row["cell_key"] or "", run,
                               row["resumed"]))
    config = dict(record["config"])
    if summary.get("image_size"):
        config["image_size"] = summary["image_size"]
    return SweepResult(config=config, dataset=summary.get("dataset", {}), cells=cells,
                       record_id=record_id, status=record["status"], environment=summary.get("environment", {}),
                       test_indices=summary.get("test_indices", []),
                       wall_seconds=summary.get("wall_seconds", 0.0), feature_cache=summary.get("feature_cache", {}))
