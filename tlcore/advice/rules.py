"""The recommendation rules: from the signals (signals.py) to the strategy to use, its runner-up, the reasons with the
thresholds they quote, a confidence, and what to expect from each strategy (accuracy ranges from calibration.py,
seconds from the time estimate); measured results on the same data, when given, outweigh the rules.

The rules are a function of two numbers, images per class and similarity to the pretraining data, plus two overrides
(frozen features that already separate the classes; measured results on this data). The recommendation is the
strategy expected to score best; the runner-up is usually the cheaper one, with its expected accuracy and time.
`region()` is the whole rule, so the page can draw it as a map and the validation (`validate.py`) can check it
against sweeps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from tlcore.advice.calibration import (COMPARE_PRESET, COST_MARGIN, calibration_basis, expected_accuracy,
                                       expected_gain, outward, seconds_range)
from tlcore.advice.signals import Signals
from tlcore.data.dataset import DatasetSpec
from tlcore.engine import backbone as bb
from tlcore.engine.rates import MachineRates
from tlcore.engine.strategies import make_strategy
from tlcore.experiments.config import ExperimentConfig, build_config
from tlcore.experiments.estimate import strategy_seconds

# Thresholds of the rules; every reason quotes the ones it used.
FEW_IMAGES = 10  # at or below this many images a class: only the top stages, from the linear probe
MANY_IMAGES_DIFFERENT = 300  # data not close to the pretraining data: fine-tune every stage from here on
SCRATCH_IMAGES = 1000  # very different data with this many images a class: scratch becomes the pick
SIMILAR = 0.55  # similarity at or above: "close to the pretraining data"
DIFFERENT = 0.30  # similarity below: "far from the pretraining data"
SOLVED = 0.97  # linear-probe val accuracy at or above: the frozen features already separate the classes

SOURCES = {
    "kornblith": "Kornblith, Shlens & Le, 'Do Better ImageNet Models Transfer Better?', CVPR 2019: fine-tuning beats "
                 "fixed features, and the gain of pretraining over random init shrinks as the training set grows",
    "he": "He, Girshick & Dollar, 'Rethinking ImageNet Pre-training', ICCV 2019: with enough data and a long schedule "
          "scratch catches up; pretraining helps most with little data",
    "yosinski": "Yosinski et al., 'How transferable are features in deep neural networks?', NeurIPS 2014: higher "
                "layers are task-specific, so distant tasks gain from retraining more of the network",
    "kumar": "Kumar et al., 'Fine-Tuning can Distort Pretrained Features', ICLR 2022: fit the head first (LP-FT), "
             "then fine-tune",
    "logme": "You et al., 'LogME', ICML 2021; Nguyen et al., 'LEEP', ICML 2020: transferability scores from frozen "
             "features predict fine-tuned accuracy; k-NN on frozen features is a strong baseline "
             "(Sorkhei et al., 2025)",
    "measured": "tlcore's own measurements on this dataset (stored runs and sweeps)",
    "validation": "tlcore's validation suite (python -m tlcore recommend --validate; docs/benchmarks.md): expected "
                  "accuracies fitted on the comparison's own schedules; following this rule instead of always "
                  "fine-tuning kept the agreement and saved most of the training time where the gain was small",
}


@dataclass(frozen=True)
class Choice:
    kind: str
    stages: str | int | None = None  # fine-tune depth

    @property
    def label(self) -> str:
        if self.kind == "fine-tune":
            return f"fine-tune ({'all stages' if self.stages == 'all' else f'top {self.stages} stages'})"
        return self.kind


FE, FT2, FT_ALL, SCRATCH = Choice("feature-extraction"), Choice("fine-tune", 2), Choice("fine-tune", "all"), \
    Choice("scratch")


RULES_VERSION = 3


def region(images_per_class: float, similarity: float, classes: int = 10,
           linear_probe: float | None = None) -> tuple[Choice, Choice]:
    """The recommended strategy and the runner-up for a dataset of this size, similarity and number of classes (and,
    when measured, linear-probe accuracy).

    Below the sizes where deeper fine-tuning or scratch take over, fine-tuning the top stages is expected to score
    best: with LP-FT it starts from the very linear probe that feature extraction stops at and keeps the best epoch
    on val (Kumar et al., 2022). Where its expected gain over feature extraction is under `COST_MARGIN` (similar
    data with enough images, on the validation suite), feature extraction is recommended instead: as accurate within
    a point, in a fraction of the training time. Deeper fine-tuning once there is enough data for a domain that is
    not close; scratch only with a lot of data from a far domain."""
    n = images_per_class
    if n >= SCRATCH_IMAGES and similarity < DIFFERENT:
        return SCRATCH, FT_ALL
    if n >= SCRATCH_IMAGES or (n >= MANY_IMAGES_DIFFERENT and similarity < SIMILAR):
        return FT_ALL, FT2
    if expected_gain(n, classes, linear_probe, similarity) < COST_MARGIN:
        return FE, FT2
    return FT2, FE


@dataclass
class Reason:
    signal: str
    value: str
    rule: str  # the threshold or comparison applied
    points_to: str
    source: str  # key into SOURCES

    def text(self) -> str:
        return f"{self.signal} = {self.value} ({self.rule}) → {self.points_to}."


@dataclass
class Outlook:
    """What to expect from one strategy: an accuracy range and training seconds, estimated or measured."""

    strategy: str  # the label, e.g. "fine-tune (top 2 stages)"
    accuracy_low: float
    accuracy_high: float
    seconds: float | None
    basis: str
    kind: str = ""  # feature-extraction | fine-tune | scratch
    seconds_range: list[float] | None = None  # [low, high]: the estimate times the band measured on the suite

    def __post_init__(self) -> None:
        self.kind = self.kind or self.strategy.split(" ")[0]


@dataclass
class Recommendation:
    choice: Choice
    runner_up: Choice
    confidence: str  # high | medium | low
    confidence_score: float
    reasons: list[Reason]
    outlooks: list[Outlook]
    signals: Signals
    evidence: list[dict] = field(default_factory=list)  # measured results on this data, when any
    based_on: str = "signals"  # or "measurements"
    record_id: str = ""  # in the run store, when stored

    @property
    def strategy(self) -> str:
        return self.choice.label

    def to_dict(self) -> dict:
        return {"strategy": self.choice.kind, "stages": self.choice.stages, "label": self.choice.label,
                "runner_up": self.runner_up.kind, "runner_up_stages": self.runner_up.stages,
                "runner_up_label": self.runner_up.label, "confidence": self.confidence,
                "confidence_score": self.confidence_score, "based_on": self.based_on,
                "reasons": [asdict(r) | {"text": r.text(), "citation": SOURCES.get(r.source, r.source)}
                            for r in self.reasons],
                "outlooks": [asdict(o) for o in self.outlooks], "signals": self.signals.to_dict(),
                "evidence": self.evidence, "record_id": self.record_id, "rules_version": RULES_VERSION}

    @classmethod
    def from_dict(cls, d: dict, record_id: str = "") -> Recommendation:
        """The inverse of `to_dict` (a stored record's summary): the same recommendation, to show the same card.
        Keys a newer or older tlcore added or dropped are ignored or take their defaults."""
        return cls(choice=Choice(d["strategy"], d.get("stages")),
                   runner_up=Choice(d.get("runner_up") or d["strategy"], d.get("runner_up_stages")),
                   confidence=d.get("confidence", ""), confidence_score=float(d.get("confidence_score") or 0.0),
                   reasons=[Reason(**_known(Reason, r)) for r in d.get("reasons", [])],
                   outlooks=[Outlook(**_known(Outlook, o)) for o in d.get("outlooks", [])],
                   signals=Signals(**_known(Signals, d.get("signals") or {"dataset": "?", "data_fingerprint": "",
                                                                            "backbone": "", "weights": "",
                                                                            "classes": 2, "images_per_class": 0,
                                                                            "min_per_class": 0, "max_per_class": 0,
                                                                            "native_size": 0, "chance": 0.5})),
                   evidence=list(d.get("evidence") or []), based_on=d.get("based_on", "signals"),
                   record_id=record_id or d.get("record_id", ""))


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _margin(value: float, thresholds: list[float], scale: float) -> float:
    """How far a value sits from the nearest threshold, 0 (on it) to 1 (far), in units of `scale`."""
    if not thresholds:
        return 1.0
    return float(min(1.0, min(abs(value - t) for t in thresholds) / scale))


def _outlooks(s: Signals) -> list[Outlook]:
    """Expected test accuracy ranges (see calibration.py) and training seconds: what the Compare page's default preset
    would take on this machine at most (tlcore.experiments.estimate, the estimate Compare shows; none in describe
    mode). The ranges are fitted on the same schedules (`recommend --validate` runs them)."""
    measured = s.linear_probe_accuracy is not None
    basis = calibration_basis(s.images_per_class, s.similarity, measured)
    out = []
    for choice in (FE, FT2, SCRATCH):
        low, high, _ = expected_accuracy(choice.kind, s.images_per_class, s.classes, s.linear_probe_accuracy,
                                         s.similarity)
        seconds = _seconds(s, choice)
        out.append(Outlook(choice.label, *outward(low, high), seconds, basis, choice.kind,
                           seconds_range(choice.kind, seconds)))
    return out


def _seconds(s: Signals, choice: Choice) -> float | None:
    """At most this many seconds for the strategy alone with the comparison's default schedule on this machine."""
    rates = s.seconds_per_image
    if not {"forward", "fine-tune", "scratch"} <= set(rates):
        return None  # described, or measured before the forward rate was kept
    spec = next(x for x in build_config(COMPARE_PRESET, strategies=[choice.kind]).strategies)
    if choice.stages is not None:
        spec = replace(spec, stages=choice.stages)
    images = {"train": s.train_images, "val": s.val_images, "test": s.test_images}
    machine = MachineRates(rates["forward"], rates["fine-tune"], rates["scratch"], "", 0.0)
    return round(strategy_seconds(spec, images, machine, features_shared=False), 1)


def recommend(signals: Signals, evidence: list[dict] | None = None) -> Recommendation:
    """Rules on the signals; measured results on this data (`evidence`, see `records.evidence_from_store`) override
    them."""
    s = signals
    n = s.images_per_class
    choice, runner_up = region(n, s.similarity, s.classes, s.linear_probe_accuracy)
    reasons: list[Reason] = []
    # size
    if n <= FEW_IMAGES:
        reasons.append(Reason("images per class", f"{n:g}", f"<= {FEW_IMAGES}", "few images: fine-tune only the top "
                              "stages, starting from the linear probe (LP-FT), which measured 0-15 points above "
                              "feature extraction at 5 a class on the validation suite", "kumar"))
    elif n >= SCRATCH_IMAGES:
        reasons.append(Reason("images per class", f"{n:g}", f">= {SCRATCH_IMAGES}", "enough data to fine-tune every "
                              "stage, or for scratch if the domain is far", "he"))
    else:
        reasons.append(Reason("images per class", f"{n:g}", f"between {FEW_IMAGES} and {SCRATCH_IMAGES}",
                              "pretrained starts win here: fine-tune the top stages from the linear probe, or "
                              "extract features where fine-tuning is expected to gain under a point", "kornblith"))
    if s.similarity >= SIMILAR:
        where, to = f">= {SIMILAR} (close to the pretraining data)", "the top stages are enough to adapt"
    elif s.similarity >= DIFFERENT:
        where = f"between {DIFFERENT} and {SIMILAR} (somewhat different)"
        to = (f"retrain the top stages at most; from {MANY_IMAGES_DIFFERENT} images a class, every stage"
              if n < MANY_IMAGES_DIFFERENT else f"{MANY_IMAGES_DIFFERENT}+ images a class: fine-tune every stage")
    else:
        where = f"< {DIFFERENT} (far from the pretraining data)"
        to = (f"retrain deeply; from {SCRATCH_IMAGES} images a class scratch is the pick" if n < SCRATCH_IMAGES else
              "far domain and plenty of data: scratch")
    reasons.append(Reason("similarity to the pretraining data", f"{s.similarity:.2f} [{s.similarity_basis}]", where, to,
                          "yosinski"))
    if choice in (FE, FT2):  # the size and similarity left it to the cost-aware rule
        gain = expected_gain(n, s.classes, s.linear_probe_accuracy, s.similarity)
        reasons.append(Reason("fine-tune's expected gain over feature extraction", f"{gain * 100:+.1f} points",
                              f"{'<' if choice == FE else '>='} {COST_MARGIN * 100:g} point",
                              "feature extraction: as accurate within a point, in a fraction of the training time"
                              if choice == FE else "fine-tune the top stages: the gain is worth the training time",
                              "validation"))
    # the features already solve it
    if s.linear_probe_accuracy is not None and s.linear_probe_accuracy >= SOLVED and n < SCRATCH_IMAGES:
        if choice != FE:
            runner_up, choice = choice, FE
        reasons.append(Reason("linear-probe val accuracy", f"{s.linear_probe_accuracy:.3f}", f">= {SOLVED}",
                              "feature extraction: the frozen features already separate the classes, so retraining "
                              "can gain little and costs 10-100x the time", "logme"))
    elif s.linear_probe_accuracy is not None:
        reasons.append(Reason("linear-probe val accuracy", f"{s.linear_probe_accuracy:.3f}",
                              f"< {SOLVED}: room left above the frozen features", "retraining may add accuracy",
                              "kumar" if choice.kind == "fine-tune" else "logme"))
    if s.knn_accuracy is not None:
        reasons.append(Reason("k-NN accuracy on frozen features (cross-validated)", f"{s.knn_accuracy:.3f}",
                              f"chance is {s.chance:.3f}", "how much class structure the features carry "
                              "without any training", "logme"))
    if s.balance < 0.5:
        reasons.append(Reason("class balance (smallest / largest class)", f"{s.balance:.2f}", "< 0.5",
                              "imbalanced: read macro-F1 and per-class accuracy, not just accuracy", "measured"))
    # confidence: distance from the thresholds that decided, and agreement of the measured signals
    score = 0.5 * _margin(np.log10(max(n, 1)), [np.log10(t) for t in (MANY_IMAGES_DIFFERENT, SCRATCH_IMAGES)], 0.3) \
        + 0.5 * _margin(s.similarity, [SIMILAR, DIFFERENT], 0.15)
    if s.described:
        score *= 0.6
    outlooks = _outlooks(s)
    rec = Recommendation(choice, runner_up, "", round(score, 2), reasons, outlooks, s)
    if evidence:
        _apply_evidence(rec, evidence)
    rec.confidence = "high" if rec.confidence_score >= 0.66 else "medium" if rec.confidence_score >= 0.33 else "low"
    return rec


def _apply_evidence(rec: Recommendation, evidence: list[dict]) -> None:
    """Measured mean accuracy per strategy kind decides; within 1 point, the cheaper one wins."""
    by_kind: dict[str, list[dict]] = {}
    for e in evidence:
        by_kind.setdefault(e["kind"], []).append(e)
    if len(by_kind) < 2:
        return
    stats = {k: (float(np.mean([e["accuracy"] for e in v])), float(np.mean([e["train_seconds"] or 0 for e in v])),
                 len(v)) for k, v in by_kind.items()}
    best = max(stats.values(), key=lambda t: t[0])[0]
    close = [k for k, (acc, _, _) in stats.items() if acc >= best - 0.01]
    pick = min(close, key=lambda k: stats[k][1])  # the cheapest of those within 1 point of the best
    order = sorted(stats, key=lambda k: -stats[k][0])
    second = next(k for k in order if k != pick)

    def choice_of(kind: str) -> Choice:
        stages = next((e["stages"] for e in by_kind[kind] if e.get("stages") is not None), 2)
        return Choice(kind, stages if kind == "fine-tune" else None)

    summary = ", ".join(f"{k} {acc:.3f} ({m} run{'s' if m > 1 else ''}, {sec:.0f} s)" for k, (acc, sec, m) in
                        sorted(stats.items(), key=lambda kv: -kv[1][0]))
    agrees = pick == rec.choice.kind
    rec.reasons.insert(0, Reason("measured on this dataset", summary, "measurements outweigh the prediction",
                                 f"{choice_of(pick).label}" + (" (the rules agree)" if agrees else
                                                               f" (the rules alone said {rec.choice.label})"),
                                 "measured"))
    rec.choice, rec.runner_up = choice_of(pick), choice_of(second)
    rec.evidence, rec.based_on = evidence, "measurements"
    runs = sum(m for _, _, m in stats.values())
    rec.confidence_score = round(min(1.0, 0.5 + 0.1 * runs + (0.2 if agrees else 0.0)), 2)
    rec.outlooks = [Outlook(choice_of(k).label, min(e["accuracy"] for e in by_kind[k]),
                            max(e["accuracy"] for e in by_kind[k]), sec, f"measured ({m} run{'s' if m > 1 else ''})")
                    for k, (acc, sec, m) in stats.items()] + [o for o in rec.outlooks if o.kind not in stats]


def confirmation_config(rec: Recommendation, dataset: DatasetSpec, backbone: bb.BackboneSpec,
                        image_size: int | None = None, seed: int = 0):
    """A comparison of the recommended strategy and its runner-up (default schedules) on this data: the one-click
    check that the advice holds, at the image size and on the device the signals were measured at (unless
    `image_size` says otherwise), so the confirmation checks what was measured."""
    strategies = [make_strategy(c.kind, name=c.label, stages=c.stages if c.kind == "fine-tune" else None)
                  for c in (rec.choice, rec.runner_up)]
    measured = rec.signals if not rec.signals.described else None
    return ExperimentConfig(dataset=dataset, backbone=backbone, strategies=strategies,
                            image_size=image_size or (measured.image_size if measured else None) or None,
                            seed=seed, device=measured.device if measured else "auto")

