"""Check the recommendation against reality: for datasets and sizes with measured sweeps, compare the strategy
recommended *before* training (signals only, no stored evidence) with the strategy that actually scored best.

Agreement: the share of cases where the recommended strategy was the best or within 1 point of it. Regret: the
accuracy points lost by following the recommendation (0 when it was the best). Coverage: the share of (dataset, size,
strategy) cases whose measured accuracy lies inside the range stated before training ("what to expect"), for the
measured signals and for a description of the same data (size, classes, similarity). The ranges are fitted on this
suite (`fit_calibration`, constants in calibration.CALIBRATION), so that coverage is in-sample; the
leave-one-dataset-out coverage refits without each dataset and scores it on the one left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from tlcore.engine.backbone import BackboneSpec
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label
from tlcore.experiments.config import build_config, build_sweep_config, size_label
from tlcore.experiments.sweep import run_sweep
from tlcore.advice.calibration import (CALIBRATION, CALIBRATION_KINDS, COMPARE_PRESET, COST_MARGIN, accuracy_logit,
                                       expected_accuracy, expected_gain, outward, size_feature)
from tlcore.advice.rules import SOLVED, Recommendation, recommend
from tlcore.advice.signals import describe, measure

AGREEMENT_MARGIN = 0.01
COVERAGE_TARGET = 0.8  # the measured accuracy should lie inside the stated range in at least this share of cases
MIN_FIT_CASES = 4  # fewer cases than this cannot fit the ranges' model (3 weights per strategy)
RULE_NAMES = {"v2": "rules v2 (fine-tune the top stages)",
              "cost-aware": "rules v3 (feature extraction where fine-tune's expected gain is under 1 point)"}

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
    classes: int = 0
    images_per_class: float = 0.0  # measured on the training subset (per_class, or fewer where a class has fewer)
    pixel_accuracy: Optional[float] = None
    ranges: dict = field(default_factory=dict)  # kind -> [low, high] stated before training, from the signals
    described_ranges: dict = field(default_factory=dict)  # kind -> [low, high] from size, classes, similarity only
    predicted_seconds: dict = field(default_factory=dict)  # kind -> training seconds stated before training
    measured_seconds: dict = field(default_factory=dict)  # kind -> mean measured training seconds


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

    def coverage(self, described: bool = False, kind: Optional[str] = None) -> Optional[float]:
        """Share of (case, strategy) pairs whose measured accuracy lies inside the range stated before training
        (None when no case has a range)."""
        return _coverage(self.cases, described, kind)

    @property
    def in_sample(self) -> bool:
        """True when every case's dataset is one the ranges were fitted on (calibration.CALIBRATION)."""
        fitted = set(CALIBRATION.get("fitted_on", []))
        return bool(self.cases) and all(c.dataset in fitted for c in self.cases)

    def coverage_summary(self) -> dict:
        """Coverage of the stated ranges, overall and per strategy, measured and described, and (with two or more
        datasets) leave-one-dataset-out."""
        out = {"in_sample": self.in_sample, "target": COVERAGE_TARGET,
               "measured": self.coverage(), "described": self.coverage(described=True),
               "by_strategy": {k: {"measured": self.coverage(kind=k), "described": self.coverage(True, k)}
                               for k in CALIBRATION_KINDS},
               "pairs": sum(len(c.ranges) for c in self.cases)}
        lodo = leave_one_dataset_out(self.cases)
        if lodo is not None:
            out["leave_one_dataset_out"] = lodo
        return out

    def summary_lines(self) -> list[str]:
        """What `recommend --validate` prints after the table: agreement, regret and coverage."""
        lines = [(f"agreement {self.agreement:.0%} ({sum(c.agrees for c in self.cases)} of {len(self.cases)}), "
                  f"mean regret {self.mean_regret * 100:.2f} points")]
        cov = self.coverage_summary()
        if cov["measured"] is None:
            return lines
        where = ("in-sample: the ranges were fitted on these very cases" if cov["in_sample"] else
                 "these cases were not all in the fit")
        per = ", ".join(f"{k} {v['measured']:.0%}" for k, v in cov["by_strategy"].items() if v["measured"] is not None)
        lines.append(f"coverage of the expected-accuracy ranges (target {COVERAGE_TARGET:.0%}): {cov['measured']:.0%} "
                     f"of {cov['pairs']} (dataset, size, strategy) cases inside the range stated before training "
                     f"({per})" + ("" if cov["described"] is None else
                                   f"; described (size + similarity only): {cov['described']:.0%}") + f" [{where}]")
        lodo = cov.get("leave_one_dataset_out")
        if lodo:
            per = ", ".join(f"{k} {v['measured']:.0%}" for k, v in lodo["by_strategy"].items()
                            if v["measured"] is not None)
            lines.append(f"leave-one-dataset-out (refit without each dataset, scored on it): measured "
                         f"{lodo['measured']:.0%} ({per}), described {lodo['described']:.0%}")
        rules = self.rules()
        for name, r in rules.items():
            seconds = "" if r["mean_regret_seconds"] is None else f", {r['mean_regret_seconds']:.1f} s"
            lines.append(f"{RULE_NAMES[name]}: agreement {r['agreement']:.0%}, mean regret "
                         f"{r['mean_regret_points']:.2f} points{seconds} (leaving each dataset out)")
        return lines

    def rules(self) -> dict:
        """`compare_rules` on these cases ({} when too few to refit without each dataset)."""
        names = {c.dataset for c in _fittable(self.cases)}
        if len(names) < 2 or any(sum(c.dataset != n for c in _fittable(self.cases)) < MIN_FIT_CASES for n in names):
            return {}
        return compare_rules(self.cases)

    def to_dict(self) -> dict:
        return {"agreement": self.agreement, "mean_regret": self.mean_regret, "coverage": self.coverage_summary(),
                "rules": self.rules(), "sweeps": self.sweeps, "cases": [asdict(c) for c in self.cases]}


def _inside(accuracy: float, bounds) -> bool:
    return bounds[0] - 1e-9 <= accuracy <= bounds[1] + 1e-9


def _coverage(cases: Sequence[Case], described: bool = False, kind: Optional[str] = None) -> Optional[float]:
    hits = [_inside(c.accuracies[k], r) for c in cases
            for k, r in (c.described_ranges if described else c.ranges).items()
            if k in c.accuracies and (kind is None or k == kind)]
    return sum(hits) / len(hits) if hits else None


def _ranges(rec: Recommendation) -> dict:
    return {o.kind: [o.accuracy_low, o.accuracy_high] for o in rec.outlooks}


# ------------------------------------------------------------------------------------------ fitting the ranges
def residual_band(residuals: Sequence[float], target: float = COVERAGE_TARGET) -> list[float]:
    """[low, high] offsets around a prediction from the fit's residuals: on each side the k-th most extreme residual,
    k = ceil((n + 1) * (1 + target) / 2) clipped to n, the split-conformal rank that covers a new exchangeable case
    with probability >= `target` (for the 15 cases of the suite: the smallest and the largest residual). Always
    contains 0."""
    r = np.sort(np.asarray(residuals, dtype=float))
    n = len(r)
    k = min(n, int(np.ceil((n + 1) * (1 + target) / 2)))
    return [float(np.floor(min(r[n - k], 0.0) * 1000) / 1000), float(np.ceil(max(r[k - 1], 0.0) * 1000) / 1000)]


def fit_calibration(cases: Sequence[Case], target: float = COVERAGE_TARGET, source: str = "") -> dict:
    """Fit calibration.CALIBRATION's model on validation cases (see the comment above CALIBRATION): least squares on
    the logit scale, then the interval from the residuals (`residual_band`). Returns a dict of the same shape as
    calibration.CALIBRATION (paste it there with the command and date)."""
    rows = _fittable(cases)
    if len(rows) < MIN_FIT_CASES:
        raise ValueError(f"fitting the expected-accuracy ranges needs at least {MIN_FIT_CASES} cases with a linear "
                         "probe")
    chance = np.array([1.0 / c.classes for c in rows])
    x = np.array([size_feature(c.images_per_class or c.per_class) for c in rows])
    sim = np.array([c.similarity for c in rows])
    z_lp = np.array([accuracy_logit(c.linear_probe_accuracy, ch) for c, ch in zip(rows, chance)])
    # describe mode: the linear probe from size and similarity; a similarity that lowers it (which happens when the
    # easy tasks of the suite are the far ones, as with digits) is not a law to extrapolate, so its weight is kept at
    # 0 or above. The strategies' offsets from the probe use the similarity either way.
    design = np.column_stack([np.ones_like(x), x, sim])
    coef = np.linalg.lstsq(design, z_lp, rcond=None)[0]
    if coef[2] < 0:
        coef = np.append(np.linalg.lstsq(design[:, :2], z_lp, rcond=None)[0], 0.0)
    z_lp_hat = design @ coef
    strategies = {}
    for kind in CALIBRATION_KINDS:
        keep = np.array([kind in c.accuracies for c in rows])
        if keep.sum() < MIN_FIT_CASES:
            continue
        z = np.array([accuracy_logit(c.accuracies[kind], ch) for c, ch in zip(rows, chance) if kind in c.accuracies])
        a = np.column_stack([np.ones(keep.sum()), x[keep], sim[keep]])
        offset, slope, by_similarity = (round(float(v), 3) for v in np.linalg.lstsq(a, z - z_lp[keep], rcond=None)[0])
        fitted = offset + slope * x[keep] + by_similarity * sim[keep]
        strategies[kind] = {"offset": offset, "log10_n": slope, "similarity": by_similarity,
                            "measured": residual_band(z - (z_lp[keep] + fitted), target),
                            "described": residual_band(z - (z_lp_hat[keep] + fitted), target)}
    sizes = sorted({c.images_per_class or c.per_class for c in rows})
    return {"source": source or f"fit_calibration on {len(rows)} cases, "
                                f"{datetime.now(timezone.utc):%Y-%m-%d}",
            "fitted_on": sorted({c.dataset for c in rows}), "sizes": [round(sizes[0]), round(sizes[-1])],
            "similarities": [round(float(sim.min()), 2), round(float(sim.max()), 2)],
            "cases": len(rows), "target": target,
            "linear_probe": {"intercept": round(float(coef[0]), 3), "log10_n": round(float(coef[1]), 3),
                             "similarity": round(float(coef[2]), 3)},
            "strategies": strategies, "seconds": seconds_bands(rows, target), "coverage": {}}


def seconds_bands(cases: Sequence[Case], target: float = COVERAGE_TARGET) -> dict:
    """Per strategy, [low, high] factors on the time estimate stated before training: the conformal band of the
    measured / estimated training seconds on the cases (log scale), so the stated time range covers `target`."""
    bands = {}
    for kind in CALIBRATION_KINDS:
        ratios = [c.measured_seconds[kind] / c.predicted_seconds[kind] for c in cases
                  if c.measured_seconds.get(kind) and c.predicted_seconds.get(kind)]
        if len(ratios) >= MIN_FIT_CASES:
            low, high = residual_band(np.log(ratios), target)
            bands[kind] = [float(np.floor(np.exp(low) * 100) / 100), float(np.ceil(np.exp(high) * 100) / 100)]
    return bands


def calibrate(cases: Sequence[Case], target: float = COVERAGE_TARGET, source: str = "") -> dict:
    """`fit_calibration` with its coverage per strategy filled in, in-sample and leaving each dataset out: the
    literal to paste into calibration.CALIBRATION."""
    calibration = fit_calibration(cases, target, source)
    scored = []
    for c in _fittable(cases):
        measured, described = ranges_from(calibration, c)
        scored.append(Case(**{**asdict(c), "ranges": measured, "described_ranges": described}))
    by = {mode: {k: _coverage(scored, mode == "described", k) for k in calibration["strategies"]}
          for mode in ("measured", "described")}
    lodo = leave_one_dataset_out(cases, target) or {}
    calibration["coverage"] = {
        "in_sample": by,
        "leave_one_dataset_out": {mode: {k: v[mode] for k, v in lodo.get("by_strategy", {}).items()
                                         if v[mode] is not None} for mode in ("measured", "described")}}
    return calibration


def ranges_from(calibration: dict, case: Case) -> tuple[dict, dict]:
    """The ranges a calibration states for a case before training: (from the signals, from a description)."""
    measured, described = {}, {}
    for kind in calibration["strategies"]:
        n = case.images_per_class or case.per_class
        for out, probe in ((measured, case.linear_probe_accuracy), (described, None)):
            lo, hi, _ = expected_accuracy(kind, n, case.classes, probe, case.similarity, calibration)
            out[kind] = list(outward(lo, hi))
    return measured, described


def _fittable(cases: Sequence[Case]) -> list[Case]:
    return [c for c in cases if c.linear_probe_accuracy is not None and c.classes and c.accuracies]


def leave_one_dataset_out(cases: Sequence[Case], target: Optional[float] = None) -> Optional[dict]:
    """Refit the ranges without each dataset and score the held-out dataset's cases with them: coverage that was
    not fitted on the cases it scores (the sub-tasks share images with their parent dataset, so it is still
    optimistic). None when there are under two datasets, or too few cases to refit without one of them."""
    target = target or CALIBRATION.get("target", COVERAGE_TARGET)
    cases = _fittable(cases)
    names = list(dict.fromkeys(c.dataset for c in cases))
    if len(names) < 2 or any(sum(c.dataset != name for c in cases) < MIN_FIT_CASES for name in names):
        return None
    held: list[Case] = []
    for name in names:
        calibration = fit_calibration([c for c in cases if c.dataset != name], target)
        for c in cases:
            if c.dataset == name:
                measured, described = ranges_from(calibration, c)
                held.append(Case(**{**asdict(c), "ranges": measured, "described_ranges": described}))
    return {"measured": _coverage(held), "described": _coverage(held, described=True),
            "by_strategy": {k: {"measured": _coverage(held, kind=k), "described": _coverage(held, True, k)}
                            for k in CALIBRATION_KINDS}}


def score_case(dataset: str, per_class: int, rec: Recommendation, measured: dict[str, float],
               described: Optional[Recommendation] = None, seconds: Optional[dict[str, float]] = None) -> Case:
    """One (dataset, size): the recommendation against the measured mean accuracy of each strategy kind, and the
    ranges it stated (and, given `described`, those a description of the same data gets) for the coverage."""
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
    return Case(dataset=dataset, per_class=per_class, recommended=kind, recommended_label=rec.choice.label,
                runner_up=rec.runner_up.label, confidence=rec.confidence,
                similarity=round(rec.signals.similarity, 3), linear_probe_accuracy=rec.signals.linear_probe_accuracy,
                winner=best_kind, accuracies={k: round(v, 4) for k, v in measured.items()},
                recommended_accuracy=round(got, 4), best_accuracy=round(best, 4), regret=round(regret, 4),
                agrees=regret <= AGREEMENT_MARGIN + 1e-12, note=note, classes=rec.signals.classes,
                images_per_class=rec.signals.images_per_class, pixel_accuracy=rec.signals.pixel_accuracy,
                ranges=_ranges(rec), described_ranges=_ranges(described) if described else {},
                predicted_seconds={o.kind: o.seconds for o in rec.outlooks if o.seconds},
                measured_seconds={k: round(v, 2) for k, v in (seconds or {}).items()})


def validate(datasets: Sequence[DatasetSpec] = VALIDATION_SUITE, sizes: Sequence[int] = VALIDATION_SIZES,
             repeats: int = 1, preset: str = "default", backbone: BackboneSpec = BackboneSpec(), store=None,
             callbacks=None, on_case: Optional[Callable[[Case], None]] = None, cancel=None,
             device: str = "auto") -> ValidationReport:
    """Run (or take from the store) a sweep per dataset with the comparison's schedules at every size (what a user
    then runs to confirm the recommendation), then recommend from the signals at each size and score it; the signals
    are measured on the sweep's device at its image size."""
    report = ValidationReport()
    for spec in datasets:
        config = build_sweep_config(preset, sizes=list(sizes), repeats=repeats, dataset=spec,
                                    backbone=backbone.name, weights=backbone.weights, long_schedules=False,
                                    device=device)
        compared = build_config(COMPARE_PRESET, dataset=spec, backbone=backbone.name, weights=backbone.weights)
        config = replace(config, experiment=replace(config.experiment, strategies=compared.strategies),
                         max_repeats=0)  # one seed a case, as the calibration was fitted
        sweep = run_sweep(config, store=store, callbacks=callbacks, cancel=cancel, label="recommend --validate")
        report.sweeps.append(sweep.record_id)
        summary = sweep.summary()
        image_size = sweep.config.get("image_size")
        for size in sizes:
            rows = summary[summary["size"] == size_label(size)]
            if rows.empty:
                continue
            measured = rows.groupby("kind")["accuracy"].max().to_dict()
            seconds = rows.groupby("kind")["train_seconds"].mean().to_dict() if "train_seconds" in rows else {}
            signals = measure(spec, backbone, per_class=size, seed=config.experiment.seed, image_size=image_size,
                              device=config.experiment.device)
            description = describe(max(signals.images_per_class, 1), signals.classes, signals.similarity)
            case = score_case(dataset_label(spec), size, recommend(signals), measured, recommend(description),
                              seconds)
            report.cases.append(case)
            if on_case:
                on_case(case)
    return report


# ------------------------------------------------------------------------------------- rules, in points and seconds
def case_gain(case: Case, calibration: dict) -> float:
    """Fine-tune's expected gain over feature extraction for a case, from its signals (before training)."""
    return expected_gain(case.images_per_class or case.per_class, case.classes, case.linear_probe_accuracy,
                         case.similarity, calibration)


def rule_outcome(case: Case, kind: str) -> dict:
    """Following `kind` on a case: agreement (within 1 point of the best), regret in points, and regret in seconds
    (its training time over that of the cheapest strategy within 1 point of the best)."""
    best = max(case.accuracies.values())
    good = [k for k, a in case.accuracies.items() if a >= best - AGREEMENT_MARGIN - 1e-12]
    seconds = case.measured_seconds
    cheapest = min((seconds[k] for k in good if k in seconds), default=None)
    extra = max(0.0, seconds[kind] - cheapest) if cheapest is not None and kind in seconds else None
    return {"kind": kind, "agrees": kind in good, "regret": max(0.0, best - case.accuracies[kind]),
            "seconds_regret": extra}


def compare_rules(cases: Sequence[Case], margin: float = COST_MARGIN) -> dict:
    """Rules v2 (fine-tune's top stages below 300 images a class, unless the frozen features already solve the task)
    against the cost-aware rule of v3 (feature extraction where fine-tune's expected gain is below `margin`), both
    scored on the cases; the cost-aware rule's expectations come from a calibration refitted without the case's
    dataset (leave-one-dataset-out), so it is not scored on what fitted it."""
    cases = _fittable(cases)
    names = list(dict.fromkeys(c.dataset for c in cases))
    out = {"v2": [], "cost-aware": []}
    for name in names:
        calibration = fit_calibration([c for c in cases if c.dataset != name])
        for case in (c for c in cases if c.dataset == name):
            solved = (case.linear_probe_accuracy or 0.0) >= SOLVED
            out["v2"].append(rule_outcome(case, "feature-extraction" if solved else "fine-tune"))
            gain = case_gain(case, calibration)
            outcome = rule_outcome(case, "feature-extraction" if gain < margin else "fine-tune")
            out["cost-aware"].append({**outcome, "expected_gain": round(gain, 4), "dataset": case.dataset,
                                      "per_class": case.per_class})

    def summary(rows: list[dict]) -> dict:
        timed = [r["seconds_regret"] for r in rows if r["seconds_regret"] is not None]
        return {"agreement": sum(r["agrees"] for r in rows) / max(len(rows), 1),
                "mean_regret_points": 100 * float(np.mean([r["regret"] for r in rows])) if rows else None,
                "mean_regret_seconds": float(np.mean(timed)) if timed else None, "cases": rows}

    return {rule: summary(rows) for rule, rows in out.items()}
