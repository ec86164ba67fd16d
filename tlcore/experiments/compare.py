"""compare(): the chosen strategies on one dataset, one split, one test set, one backbone; each run measured alike.
A comparison is a sweep with one size and one seed: it runs through the same cells (cells.py), so it shares the
sweep's preparation, feature sharing, executors and record lifecycle.
"""

from __future__ import annotations

import uuid
from typing import Callable, Optional

from tlcore.core.environment import library_versions
from tlcore.core.progress import CancelToken, ProgressCallback
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.engine.features import FeatureCache
from tlcore.experiments.cells import CellsOutcome, run_cells
from tlcore.experiments.config import ExperimentConfig, SweepConfig, build_config
from tlcore.experiments.executors import Executor
from tlcore.records.store import Store, default_store


def _not_started(cell, config: ExperimentConfig) -> RunResult:
    spec = cell.spec
    return RunResult(run_id=uuid.uuid4().hex[:12], strategy=spec.name, kind=spec.kind, status="cancelled",
                     error="not started: the comparison was cancelled", backbone=config.backbone.name,
                     options=spec.options(), seed=config.seed, image_size=config.image_size or 0)


def _comparison(outcome: CellsOutcome) -> tuple[ComparisonResult, dict]:
    """Every planned strategy in order (one not started after a cancel is listed as cancelled), and the summary."""
    prepared = outcome.prepared
    config = prepared.config
    finished = {c.key: c.run for c in outcome.cells}
    runs = [finished.get(cell.key) or _not_started(cell, config) for cell in outcome.planned]
    subset = outcome.subsets[(config.seed, config.dataset.per_class)]
    test = prepared.cell_data(subset, splits=("test",)).splits["test"]
    result = ComparisonResult(config=config.to_dict(), dataset=subset.summary(), runs=runs,
                              environment=library_versions(), test_indices=test.indices.tolist(),
                              test_labels=test.labels.tolist(), wall_seconds=outcome.wall_seconds,
                              record_id=outcome.record_id, status=outcome.status)
    result.dataset["image_size"] = prepared.image_size.describe()
    result.dataset["train_test_overlap"] = prepared.overlap(subset)
    return result, {k: v for k, v in result.to_dict().items() if k != "runs"}


def compare(config: Optional[ExperimentConfig] = None, callbacks: Optional[list[ProgressCallback]] = None,
            cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
            on_result: Optional[Callable[[RunResult], None]] = None, store: Optional[Store] = None,
            label: str = "", record_id: Optional[str] = None, executor: Optional[Executor] = None,
            resume: bool = False) -> ComparisonResult:
    """Run every strategy of `config` on the same split and test set; a failed strategy does not stop the others, a
    cancel stops the rest and keeps what finished. Each run is written to the run store as it finishes. With
    `resume`, strategies already computed under the same content key are taken from the store. Without a config,
    the default comparison (`build_config()`, what the CLI and the Compare page run when nothing is changed)."""
    config = config or build_config()
    return run_cells(SweepConfig.single(config), "comparison", _comparison, callbacks=callbacks, cancel=cancel,
                     cache=cache, store=store, on_cell=(lambda cell: on_result(cell.run)) if on_result else None,
                     resume=resume, label=label, record_id=record_id, executor=executor,
                     label_cell=lambda cell: cell.spec.name)


def load_comparison(record_id: str, store: Optional[Store] = None) -> Optional[ComparisonResult]:
    """A stored comparison rebuilt from its record and runs (also one that was interrupted: the finished runs)."""
    store = store or default_store()
    record = store.record(record_id)
    if record is None or record["kind"] != "comparison":
        return None
    summary = record["summary"] or {}
    runs = [row["run"] for row in store.runs(record_id)]
    return ComparisonResult(config=summary.get("config", record["config"]), dataset=summary.get("dataset", {}),
                            runs=runs, environment=summary.get("environment", {}),
                            test_indices=summary.get("test_indices", []), test_labels=summary.get("test_labels", []),
                            wall_seconds=summary.get("wall_seconds", 0.0), record_id=record_id,
                            status=record["status"])
