"""Check the recommendation against reality: for datasets and sizes with measured sweeps, compare the strategy
recommended *before* training (signals only, no stored evidence) with the strategy that actually scored best.

Agreement: the share of cases where the recommended strategy was the best or within 1 point of it. Regret: the
accuracy points lost by following the recommendation (0 when it was the best).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import pandas as pd

from tlcore.engine.backbone import BackboneSpec
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label
from tlcore.experiments.config import build_sweep_config, size_label
from tlcore.experiments.sweep import run_sweep
from tlcore.advice.recommend import Recommendation, measure, recommend

AGREEMENT_MARGIN = 0.01

# Built-in datasets and sub-tasks made from them, so that size and similarity both vary: natural-ish grey clothing,
# an easy and a hard clothing sub-task, and 8x8 digits upscaled (far from ImageNet photos).
VALIDATION_SUITE: list[DatasetSpec] = [
    DatasetSpec("fashion-mnist"),
    DatasetSpec("fashion-mnist", classes=("Sandal", "Sneaker", "Ankle boot")),
    DatasetSpec("fashion-mnist", classes=("T-shirt/top", "Pullover", "Coat", "Shirt")),
    DatasetSpec("digits"),
    DatasetSpec("digits", classes=("3", "5", "8")),
]
VALIDATION_SIZES = (5, 20, 100)


@dataclass
class Case:
    dataset: str
    per_class: int
    recommended: str  # kind
    recommended_label: str
    runner_up: str
    confidence: str
    similarity: float
    linear_probe_accuracy: Optional[float]
    winner: str
    accuracies: dict  # kind -> measured mean accuracy
    recommended_accuracy: float
    best_accuracy: float
    regret: float
    agrees: bool
    note: str = ""


@dataclass
class ValidationReport:
    cases: list[Case] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)  # record ids of the sweeps used

    @property
    def agreement(self) -> float:
        return sum(c.agrees for c in self.cases) / max(len(self.cases), 1)

    @property
    def mean_regret(self) -> float:
        return sum(c.regret for c in self.cases) / max(len(self.cases), 1)

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for c in self.cases:
            row = asdict(c)
            accuracies = row.pop("accuracies")
            row.update({f"acc_{k}": v for k, v in accuracies.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {"agreement": self.agreement, "mean_regret": self.mean_regret, "sweeps": self.sweeps,
                "cases": [asdict(c) for c in self.cases]}


def score_case(dataset: str, per_class: int, rec: Recommendation, measured: dict[str, float]) -> Case:
    """One (dataset, size): the recommendation against the measured mean accuracy of each strategy kind."""
    best_kind = max(measured, key=measured.get)
    best = measured[best_kind]
    kind = rec.choice.kind
    note = ""
    if kind not in measured:
        raise ValueError(f"{kind} was not measured for {dataset} at {per_class}/class")
    if kind == "fine-tune" and rec.choice.stages == "all":
        note = "recommended all stages; the sweep measured the preset's fine-tune depth"
    got = measured[kind]
    regret = max(0.0, best - got)
    return Case(dataset, per_class, kind, rec.choice.label, rec.runner_up.label, rec.confidence,
                round(rec.signals.similarity, 3), rec.signals.linear_probe_accuracy, best_kind,
                {k: round(v, 4) for k, v in measured.items()}, round(got, 4), round(best, 4), round(regret, 4),
                regret <= AGREEMENT_MARGIN + 1e-12, note)


def validate(datasets: Sequence[DatasetSpec] = VALIDATION_SUITE, sizes: Sequence[int] = VALIDATION_SIZES,
             repeats: int = 1, preset: str = "default", backbone: BackboneSpec = BackboneSpec(), store=None,
             callbacks=None, on_case: Optional[Callable[[Case], None]] = None, cancel=None) -> ValidationReport:
    """Run (or take from the store) a sweep per dataset, then recommend from the signals at each size and score it."""
    report = ValidationReport()
    for spec in datasets:
        config = build_sweep_config(preset, sizes=list(sizes), repeats=repeats, dataset=spec,
                                    backbone=backbone.name, weights=backbone.weights)
        sweep = run_sweep(config, store=store, callbacks=callbacks, cancel=cancel, label="recommend --validate")
        report.sweeps.append(sweep.record_id)
        summary = sweep.summary()
        image_size = sweep.config.get("image_size")
        for size in sizes:
            rows = summary[summary["size"] == size_label(size)]
            if rows.empty:
                continue
            measured = rows.groupby("kind")["accuracy"].max().to_dict()
            signals = measure(spec, backbone, per_class=size, seed=config.experiment.seed, image_size=image_size)
            case = score_case(dataset_label(spec), size, recommend(signals), measured)
            report.cases.append(case)
            if on_case:
                on_case(case)
    return report
