"""Result records: one `RunResult` per strategy run, a `ComparisonResult` per comparison. Plain data: JSON in and out,
one flat pandas row per run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

@dataclass
class RunResult:
    """Everything measured for one strategy on one dataset, with the config that reproduces it."""

    run_id: str
    strategy: str
    kind: str
    status: str
    error: Optional[str] = None
    backbone: str = ""
    weights: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    seed: int = 0
    image_size: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    # test-set scores
    accuracy: Optional[float] = None
    accuracy_low: Optional[float] = None
    accuracy_high: Optional[float] = None
    macro_f1: Optional[float] = None
    per_class_accuracy: dict = field(default_factory=dict)
    confusion: list = field(default_factory=list)
    test_images: int = 0
    test_predictions: list = field(default_factory=list)  # predicted class per test image, in test-split order
    # cost
    timings: dict = field(default_factory=dict)  # seconds per phase, plus "total"
    # What the run costs on its own, everything but the final test evaluation: work computed once for several
    # strategies (the frozen features, a linear head) is counted in full in each run that needed it
    # (timings "shared_features", "shared_head_fit"), and listed in `shared`.
    train_seconds: Optional[float] = None
    shared: dict = field(default_factory=dict)  # {"features"|"head_fit": {"seconds": s, "with": [strategies]}}
    throughput_ips: Optional[float] = None  # inference images/s of the trained model
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    trainable_stages: list = field(default_factory=list)
    phases: list = field(default_factory=list)  # [{"phase", "trainable_params"}], e.g. LP then FT
    peak_memory_mb: Optional[float] = None
    # training
    epochs_run: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    best_val_accuracy: Optional[float] = None
    curve: list = field(default_factory=list)  # per epoch: train_loss, val_accuracy, ...
    extra: dict = field(default_factory=dict)
    started_at: str = ""
    dataset: dict = field(default_factory=dict)  # the DatasetSpec: with seed and options, enough to re-run
    environment: dict = field(default_factory=dict)  # library versions, platform

    def to_dict(self) -> dict:
        return asdict(self)

    def to_row(self) -> dict:
        """The scalar fields, flattened for a table."""
        row = {
            "strategy": self.strategy, "status": self.status, "accuracy": self.accuracy,
            "accuracy_low": self.accuracy_low, "accuracy_high": self.accuracy_high, "macro_f1": self.macro_f1,
            "train_seconds": self.train_seconds, "shared_seconds": self.shared_seconds(),
            "shared_with": ", ".join(self.shared_with()), "throughput_ips": self.throughput_ips,
            "trainable_params": self.trainable_params, "total_params": self.total_params,
            "peak_memory_mb": self.peak_memory_mb, "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early, "best_val_accuracy": self.best_val_accuracy,
            "backbone": self.backbone, "weights": self.weights.get("source"), "weights_sha256": self.weights.get(
                "sha256"), "seed": self.seed, "image_size": self.image_size, "device": self.device,
            "precision": self.precision, "test_images": self.test_images, "error": self.error, "run_id": self.run_id,
        }
        row.update({f"time_{k}": v for k, v in self.timings.items()})
        return row

    def shared_seconds(self) -> float:
        """The part of `train_seconds` computed once for this run and others (see `shared`)."""
        return round(sum(float(part.get("seconds") or 0.0) for part in self.shared.values()), 4)

    def shared_with(self) -> list[str]:
        """The strategies this run shared work with, in the order first named."""
        return list(dict.fromkeys(name for part in self.shared.values() for name in part.get("with", [])))

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class ComparisonResult:
    """The strategies compared on one dataset split, with the config and environment that produced them."""

    config: dict
    dataset: dict
    runs: list[RunResult]
    environment: dict = field(default_factory=dict)
    test_indices: list = field(default_factory=list)
    test_labels: list = field(default_factory=list)
    wall_seconds: float = 0.0
    record_id: str = ""  # in the run store
    status: str = "completed"  # completed, failed (every run failed) or cancelled

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.to_row() for r in self.runs])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["runs"] = [r.to_dict() for r in self.runs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ComparisonResult":
        d = dict(d)
        d["runs"] = [RunResult.from_dict(r) for r in d.get("runs", [])]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def save(self, out_dir: str | Path, stem: str = "comparison") -> tuple[Path, Path]:
        """Write `<stem>.json` (everything) and `<stem>.csv` (one row per strategy)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = out / f"{stem}.json", out / f"{stem}.csv"
        json_path.write_text(json.dumps(self.to_dict(), indent=1, default=_jsonable))
        self.to_frame().to_csv(csv_path, index=False)
        return json_path, csv_path

    @classmethod
    def load(cls, path: str | Path) -> "ComparisonResult":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def run(self, strategy: str) -> RunResult:
        for r in self.runs:
            if r.strategy == strategy:
                return r
        raise KeyError(strategy)


def _jsonable(value: Any):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
