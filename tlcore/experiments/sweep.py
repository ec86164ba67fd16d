"""Dataset-size sweeps: the chosen strategies at several images-per-class sizes, repeated with several seeds, on one
split whose validation and test sets never change. The cells run through cells.py (nested subsets, images decoded
once, frozen features once per seed, every finished cell stored under a content key so that running an interrupted
sweep again computes only what is missing); this module holds the sweep's result and how it is stored and loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from tlcore.core.environment import library_versions
from tlcore.core.progress import CancelToken, ProgressCallback
from tlcore.core.results import _jsonable
from tlcore.engine.features import FeatureCache
from tlcore.experiments.cells import CellsOutcome, SweepCell, run_cells
from tlcore.experiments.config import SweepConfig, build_sweep_config
from tlcore.experiments.executors import Executor
from tlcore.experiments.learning_curves import Crossover, find_crossovers, summarize
from tlcore.records.store import Store, default_store


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


def _sweep(outcome: CellsOutcome, config: SweepConfig) -> tuple[SweepResult, dict]:
    prepared = outcome.prepared
    result = SweepResult(config=config.to_dict() | {"image_size": prepared.image_size.pixels},
                         dataset=prepared.dataset.summary() | {"image_size": prepared.image_size.describe()},
                         cells=outcome.cells, record_id=outcome.record_id, status=outcome.status,
                         environment=library_versions(), test_indices=prepared.dataset.indices["test"].tolist(),
                         wall_seconds=outcome.wall_seconds, feature_cache=outcome.feature_cache)
    summary = {"dataset": result.dataset, "environment": result.environment, "image_size": prepared.image_size.pixels,
               "wall_seconds": result.wall_seconds, "feature_cache": result.feature_cache,
               "test_indices": result.test_indices, "crossovers": [c.to_dict() for c in result.crossovers()]}
    return result, summary


def run_sweep(config: Optional[SweepConfig] = None, callbacks: Optional[list[ProgressCallback]] = None,
              cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
              store: Optional[Store] = None, on_cell: Optional[Callable[[SweepCell], None]] = None,
              resume: bool = True, label: str = "", record_id: Optional[str] = None,
              executor: Optional[Executor] = None) -> SweepResult:
    """Run every (seed, size, strategy) cell, smallest size first within each seed; store each cell as it finishes.
    With `resume`, cells already in the store (same content key, completed) are taken from it, not recomputed.
    A cancel stops after the current batch and keeps every finished cell. Without a config, the default sweep
    (`build_sweep_config()`, what the CLI and the Sweep page run when nothing is changed)."""
    config = config or build_sweep_config()
    return run_cells(config, "sweep", lambda outcome: _sweep(outcome, config), callbacks=callbacks, cancel=cancel,
                     cache=cache, store=store, on_cell=on_cell, resume=resume, label=label, record_id=record_id,
                     executor=executor)


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
        cells.append(SweepCell(run.strategy, run.kind, row["per_class"], run.seed,
                               float(run.extra.get("images_per_class", 0)), row["cell_key"] or "", run,
                               row["resumed"]))
    config = dict(record["config"])
    if summary.get("image_size"):
        config["image_size"] = summary["image_size"]
    return SweepResult(config=config, dataset=summary.get("dataset", {}), cells=cells,
                       record_id=record_id, status=record["status"], environment=summary.get("environment", {}),
                       test_indices=summary.get("test_indices", []),
                       wall_seconds=summary.get("wall_seconds", 0.0), feature_cache=summary.get("feature_cache", {}))
