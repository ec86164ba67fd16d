"""How many stages to fine-tune: the check of the layer-wise probe's proposal against measured fine-tunes.

The rule (`probe.propose_stages`), fixed before any validation ran: fine-tune the stages after the pretrained probe's
peak on val (Yosinski et al., NeurIPS 2014: features past the peak are specific to the source task), at least the top
one; a peak at the stem means every stage, 'all'. Today's rule is 'always the top 2'.

`validate_depth` runs fine-tune with K = 1, 2, 3 and all on each dataset and size (one sweep per dataset, stored and
reused like every sweep), probes the same training subset, and scores both rules: the share of cases where the
proposed K was the best or within `AGREEMENT_MARGIN` of it, and the mean accuracy points lost. The probe's rule was
to replace always-2 in the recommendation only if it did at least as well on both. On the built-in suite it did not
(docs/rejected.md, "Fine-tune depth from the layer-wise probe"), so the recommendation keeps always-2 and the probe's
proposal is shown with its curve only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional, Sequence, Union

from tlcore.advice.probe import ProbeCurve, layer_probe, propose_stages
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label
from tlcore.engine.backbone import BackboneSpec
from tlcore.experiments.config import build_config, build_sweep_config, size_label
from tlcore.experiments.sweep import run_sweep

Depth = Union[int, str]
AGREEMENT_MARGIN = 0.01
DEPTHS: tuple[Depth, ...] = (1, 2, 3, "all")
DEPTH_SIZES = (20, 100)
BASELINE_DEPTH = 2  # today's rule


def depth_name(k: Depth) -> str:
    return f"fine-tune K={k}"


@dataclass
class DepthCase:
    dataset: str
    per_class: int
    peak_stage: int
    stages: int  # stage groups, the stem included ('all')
    proposed: Depth
    accuracies: dict  # str(K) -> test accuracy
    best: str
    proposed_regret: float
    baseline_regret: float

    @property
    def proposed_agrees(self) -> bool:
        return self.proposed_regret <= AGREEMENT_MARGIN + 1e-12

    @property
    def baseline_agrees(self) -> bool:
        return self.baseline_regret <= AGREEMENT_MARGIN + 1e-12

    def to_dict(self) -> dict:
        return asdict(self) | {"proposed_agrees": self.proposed_agrees, "baseline_agrees": self.baseline_agrees}


@dataclass
class DepthReport:
    cases: list[DepthCase] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)

    def agreement(self, proposed: bool = True) -> float:
        hits = [c.proposed_agrees if proposed else c.baseline_agrees for c in self.cases]
        return sum(hits) / max(len(hits), 1)

    def mean_regret(self, proposed: bool = True) -> float:
        lost = [c.proposed_regret if proposed else c.baseline_regret for c in self.cases]
        return sum(lost) / max(len(lost), 1)

    @property
    def probe_rule_wins(self) -> bool:
        """At least as well as always-2 on both: agreement not lower, mean regret not higher."""
        return bool(self.cases) and self.agreement(True) >= self.agreement(False) and \
            self.mean_regret(True) <= self.mean_regret(False) + 1e-12

    def summary_lines(self) -> list[str]:
        n = len(self.cases)
        lines = [f"fine-tune depth: the probe's K was best or within {AGREEMENT_MARGIN * 100:.0f} point in "
                 f"{sum(c.proposed_agrees for c in self.cases)} of {n} cases ({self.agreement(True):.0%}, mean regret "
                 f"{self.mean_regret(True) * 100:.2f} points); always K={BASELINE_DEPTH} in "
                 f"{sum(c.baseline_agrees for c in self.cases)} of {n} ({self.agreement(False):.0%}, "
                 f"{self.mean_regret(False) * 100:.2f} points)"]
        lines.append("the probe's rule " + ("does at least as well: it may replace always-2" if self.probe_rule_wins
                                            else f"does worse: always-{BASELINE_DEPTH} stays"))
        return lines

    def to_dict(self) -> dict:
        return {"agreement_probe": self.agreement(True), "agreement_always_2": self.agreement(False),
                "mean_regret_probe": self.mean_regret(True), "mean_regret_always_2": self.mean_regret(False),
                "probe_rule_wins": self.probe_rule_wins, "sweeps": self.sweeps,
                "cases": [c.to_dict() for c in self.cases]}


def depth_sweep_config(spec: DatasetSpec, sizes: Sequence[int], preset: str, backbone: BackboneSpec,
                       depths: Sequence[Depth] = DEPTHS):
    """A sweep of fine-tune alone, once per depth, with the sweep preset's fine-tune schedule."""
    config = build_sweep_config(preset, sizes=list(sizes), repeats=1, dataset=spec, backbone=backbone.name,
                                weights=backbone.weights, strategies=["fine-tune"], long_schedules=False)
    base = config.experiment.strategies[0]
    strategies = tuple(replace(base, name=depth_name(k), stages=k) for k in depths)
    return replace(config, experiment=replace(config.experiment, strategies=strategies))


def score_depth(dataset: str, per_class: int, curve: ProbeCurve, accuracies: dict[Depth, float]) -> DepthCase:
    """`accuracies` holds every K in DEPTHS and the proposed one."""
    order = list(accuracies)
    best_k = max(order, key=lambda k: (accuracies[k], -order.index(k)))  # a tie goes to the shallower K
    best = accuracies[best_k]
    proposed = propose_stages(curve)
    return DepthCase(dataset, per_class, curve.peak.stage, len(curve.points), proposed,
                     {str(k): round(v, 4) for k, v in accuracies.items()}, str(best_k),
                     round(max(0.0, best - accuracies[proposed]), 4),
                     round(max(0.0, best - accuracies[BASELINE_DEPTH]), 4))


def validate_depth(datasets: Sequence[DatasetSpec], sizes: Sequence[int] = DEPTH_SIZES, preset: str = "default",
                   backbone: BackboneSpec = BackboneSpec(), store=None, callbacks=None, cancel=None,
                   on_case: Optional[Callable[[DepthCase], None]] = None) -> DepthReport:
    """Per dataset: probe each size's training subset (proposals first, so a proposed K outside DEPTHS is measured
    too), then one fine-tune sweep over the depths, then score."""
    report = DepthReport()
    for spec in datasets:
        base = depth_sweep_config(spec, sizes, preset, backbone)
        curves = {}
        for size in sizes:
            probe = layer_probe(build_config("default", dataset=spec, per_class=size, backbone=backbone.name,
                                             weights=backbone.weights, strategies=["feature-extraction"],
                                             image_size=base.experiment.image_size, seed=base.experiment.seed),
                                random_weights=False)
            curves[size] = probe.curves["pretrained"]
        depths = list(DEPTHS) + sorted({propose_stages(c) for c in curves.values()} - set(DEPTHS), key=str)
        sweep = run_sweep(depth_sweep_config(spec, sizes, preset, backbone, depths), store=store,
                          callbacks=callbacks, cancel=cancel, label="recommend --validate: fine-tune depth")
        report.sweeps.append(sweep.record_id)
        summary = sweep.summary()
        for size in sizes:
            rows = summary[summary["size"] == size_label(size)]
            by_name = dict(zip(rows["strategy"], rows["accuracy"]))
            if not all(depth_name(k) in by_name for k in depths):
                continue  # cancelled or failed cells: no case
            case = score_depth(dataset_label(spec), size, curves[size], {k: float(by_name[depth_name(k)])
                                                                         for k in depths})
            report.cases.append(case)
            if on_case:
                on_case(case)
    return report
