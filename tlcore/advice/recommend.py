"""Strategy recommendation: measure the data (size, balance, and how well and how closely the pretrained features fit
it), turn the measurements into a recommendation with reasons, and let real measurements on the same data outweigh
the prediction.

The rules are a function of two numbers, images per class and similarity to the pretraining data, plus two overrides
(frozen features that already separate the classes; measured results on this data). The recommendation is the
strategy expected to score best; the runner-up is usually the cheaper one, with its expected accuracy and time. `region()` is the whole rule, so
the page can draw it as a map and the validation (`validate.py`) can check it against sweeps.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from tlcore.core.environment import read_only, require_writable
from tlcore.core.errors import ConfigError
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import parse_dataset
from tlcore.engine import backbone as bb
from tlcore.engine.features import ExtractOptions, FeatureCache, default_cache, split_features
from tlcore.engine.rates import MachineRates, machine_rates
from tlcore.engine.strategies import make_strategy
from tlcore.engine.train import fit_linear_head
from tlcore.experiments.config import ExperimentConfig, build_config, parse_size
from tlcore.experiments.estimate import strategy_seconds
from tlcore.experiments.prepare import prepare
from tlcore.records.store import default_store
from tlcore.advice.transferability import head_entropy, knn_accuracy, leep, logme, pixel_accuracy

# Thresholds of the rules; every reason quotes the ones it used.
FEW_IMAGES = 10  # at or below this many images a class: only the top stages, from the linear probe
MANY_IMAGES_DIFFERENT = 300  # data not close to the pretraining data: fine-tune every stage from here on
SCRATCH_IMAGES = 1000  # very different data with this many images a class: scratch becomes the pick
SIMILAR = 0.55  # similarity at or above: "close to the pretraining data"
DIFFERENT = 0.30  # similarity below: "far from the pretraining data"
SOLVED = 0.97  # linear-probe val accuracy at or above: the frozen features already separate the classes
MAX_SCORED = 2000  # training images the scores are computed on (a per-class sample above this)
COMPARE_PRESET = "default"  # the schedules the expectations are for: what Compare and `compare` run by default

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
             "features predict fine-tuned accuracy; k-NN on frozen features is a strong baseline (Sorkhei et al., 2025)",
    "measured": "tlcore's own measurements on this dataset (stored runs and sweeps)",
}


@dataclass
class Signals:
    """What was measured about the data, before any training."""

    dataset: str
    data_fingerprint: str
    backbone: str
    weights: str
    classes: int
    images_per_class: float
    min_per_class: int
    max_per_class: int
    native_size: int
    chance: float
    knn_accuracy: Optional[float] = None
    logme: Optional[float] = None
    linear_probe_accuracy: Optional[float] = None
    pixel_accuracy: Optional[float] = None
    head_entropy: Optional[float] = None
    leep: Optional[float] = None
    similarity: float = 0.5
    similarity_basis: str = ""
    image_size: int = 0
    train_images: int = 0
    val_images: int = 0
    test_images: int = 0
    scored_images: int = 0  # training images the scores used (all, or a per-class sample of MAX_SCORED)
    extract_seconds: float = 0.0  # the one frozen forward pass over train + val
    seconds_per_image: dict = field(default_factory=dict)  # 'forward', 'fine-tune', 'scratch' -> seconds an image
    seconds: float = 0.0
    skipped: list = field(default_factory=list)  # files of the dataset that could not be used: {path, reason}
    described: bool = False  # True: the user described the data, nothing was measured

    @property
    def balance(self) -> float:
        return self.min_per_class / max(self.max_per_class, 1)

    def to_dict(self) -> dict:
        return asdict(self) | {"balance": self.balance}


def similarity_score(leep_value: Optional[float], linear_probe: Optional[float], pixels: Optional[float],
                     classes: int) -> tuple[float, str]:
    """0 (nothing like the pretraining data) to 1 (just like it): the mean of two measurements.

    - normalised LEEP, 1 + LEEP / log(classes): how well the original ImageNet head's beliefs predict these labels
      (0: no better than the class prior, 1: they determine the label);
    - the frozen features' lead over raw pixels, (linear probe - pixel baseline) / (1 - chance), scaled so that a
      lead of +0.2 reads 1 and -0.2 reads 0.

    The source head's entropy is reported but not used: on grey clothing and 8x8 digits it was as low (the head as
    sure) as one expects on photos, so it did not separate near from far domains here."""
    chance = 1.0 / classes
    parts, basis = [], []
    if leep_value is not None:
        nleep = float(np.clip(1.0 + leep_value / np.log(classes), 0.0, 1.0))
        parts.append(nleep)
        basis.append(f"normalised LEEP {nleep:.2f}")
    if linear_probe is not None and pixels is not None:
        lead = (linear_probe - pixels) / max(1.0 - chance, 1e-9)
        parts.append(float(np.clip(0.5 + lead / 0.4, 0.0, 1.0)))
        basis.append(feature_lead_text(linear_probe - pixels))
    if not parts:
        return 0.5, "unknown (nothing measured)"
    return float(np.mean(parts)), "; ".join(basis)


def feature_lead_text(lead: float) -> str:
    """The frozen features' lead over raw pixels (accuracy, 0-1) in words, the right way round when it is negative."""
    points = abs(lead) * 100
    if round(points, 1) == 0:
        return "features and raw pixels score the same"
    if lead > 0:
        return f"features lead raw pixels by {points:.1f} points"
    return f"raw pixels lead the features by {points:.1f} points"


def _pixels(images: torch.Tensor, size: int = 16) -> np.ndarray:
    x = F.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), size)
    return x.flatten(1).numpy()


def measure(dataset: DatasetSpec | str, backbone: bb.BackboneSpec | str = bb.BackboneSpec(),
            per_class: Optional[int] = None, seed: int = 0, image_size: Optional[int] = None,
            cache: Optional[FeatureCache] = None, device: str = "cpu") -> Signals:
    """One forward pass over the training (and val) images with the frozen backbone, then the scores. The test split
    is never touched. Refused in read-only mode (a demo browses, it does not compute)."""
    require_writable("measure a dataset")
    started = time.perf_counter()
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    backbone = bb.BackboneSpec(backbone) if isinstance(backbone, str) else backbone
    if backbone.weights == "none":
        raise ConfigError("A recommendation measures pretrained features; choose pretrained or file weights.")
    fe = make_strategy("feature-extraction")  # the same head as the feature-extraction strategy fits
    prepared = prepare(ExperimentConfig(dataset=spec, backbone=backbone, strategies=(fe,), image_size=image_size,
                                        seed=seed, device=device))
    ds = prepared.subset(parse_size(per_class) if per_class is not None else spec.per_class, seed)
    data = prepared.cell_data(ds, splits=("train", "val"))
    splits, size, template = data.splits, prepared.image_size.pixels, prepared.reference
    cache = cache or default_cache()
    dev = prepared.device
    extract_start = time.perf_counter()
    feats = {s: split_features(cache, template, backbone.name, prepared.weights_id, ds, s, splits[s], data.cfg,
                               data.transform_key, dev, ExtractOptions()) for s in splits}
    extract_seconds = time.perf_counter() - extract_start
    y = {s: splits[s].labels.numpy() for s in splits}
    counts = np.bincount(y["train"], minlength=ds.num_classes)
    chance = 1.0 / ds.num_classes
    signals = Signals(dataset=ds.name, data_fingerprint=ds.source_fingerprint(), backbone=backbone.name,
                      weights=prepared.weights_id, classes=ds.num_classes,
                      images_per_class=float(counts.mean()), min_per_class=int(counts.min()),
                      max_per_class=int(counts.max()), native_size=ds.native_size(), chance=chance,
                      image_size=size, train_images=int(counts.sum()), val_images=len(ds.indices["val"]),
                      test_images=len(ds.indices["test"]), extract_seconds=round(extract_seconds, 2),
                      seconds_per_image=_rates(backbone, size, dev),
                      skipped=ds.summary()["skipped"])
    # Score on at most MAX_SCORED training images (a seeded per-class sample): the scores are estimates, and past a
    # few thousand images more rows change them little but cost a minute on a CPU.
    keep = _sample_per_class(y["train"], MAX_SCORED, seed)
    signals.scored_images = len(keep)
    train_x, train_y = feats["train"][keep], y["train"][keep]
    if np.bincount(train_y).min() >= 2:
        signals.knn_accuracy = knn_accuracy(train_x.numpy(), train_y, seed=seed)
    signals.logme = logme(train_x.numpy(), train_y)
    fit = fit_linear_head(train_x, torch.as_tensor(train_y), feats["val"], splits["val"].labels, ds.num_classes,
                          fe.head_l2_grid, fe.head_max_iter)
    signals.linear_probe_accuracy = float(fit.val_accuracy)
    signals.pixel_accuracy = pixel_accuracy(_pixels(splits["train"].images[keep]), train_y,
                                            _pixels(splits["val"].images), y["val"])
    head = template.get_classifier()
    if isinstance(head, torch.nn.Linear) and head.in_features == train_x.shape[1] and head.out_features > 1:
        with torch.no_grad():
            logits = head(train_x)
        signals.head_entropy = head_entropy(logits)
        signals.leep = leep(torch.softmax(logits, 1).numpy(), train_y)
    signals.similarity, signals.similarity_basis = similarity_score(signals.leep, signals.linear_probe_accuracy,
                                                                    signals.pixel_accuracy, ds.num_classes)
    signals.seconds = round(time.perf_counter() - started, 2)
    return signals


def _rates(backbone: bb.BackboneSpec, image_size: int, device: torch.device) -> dict[str, float]:
    rates = machine_rates(backbone, image_size, device)
    return {"forward": rates.forward, "fine-tune": rates.fine_tune, "scratch": rates.scratch}


def _sample_per_class(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """All indices when there are at most `limit`; otherwise a seeded sample with the classes in proportion."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 4242])
    share = limit / len(labels)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max(2, int(round(share * (labels == c).sum())))]
            for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def describe(images_per_class: float, classes: int, similarity: float) -> Signals:
    """Signals from a description alone (no data at hand): size, classes and a similarity judged by the user."""
    if images_per_class < 1 or classes < 2 or not 0 <= similarity <= 1:
        raise ConfigError("Describe the data with images per class >= 1, classes >= 2 and a similarity in [0, 1].")
    return Signals(dataset="(described)", data_fingerprint="", backbone="", weights="", classes=int(classes),
                   images_per_class=float(images_per_class), min_per_class=int(images_per_class),
                   max_per_class=int(images_per_class), native_size=0, chance=1.0 / classes,
                   similarity=float(similarity), similarity_basis="as described", described=True)


# ------------------------------------------------------------------------------------------------------- the rules
@dataclass(frozen=True)
class Choice:
    kind: str
    stages: Optional[str | int] = None  # fine-tune depth

    @property
    def label(self) -> str:
        if self.kind == "fine-tune":
            return f"fine-tune ({'all stages' if self.stages == 'all' else f'top {self.stages} stages'})"
        return self.kind


FE, FT2, FT_ALL, SCRATCH = Choice("feature-extraction"), Choice("fine-tune", 2), Choice("fine-tune", "all"), \
    Choice("scratch")


RULES_VERSION = 2


def region(images_per_class: float, similarity: float) -> tuple[Choice, Choice]:
    """The recommended strategy and the runner-up for a dataset of this size and similarity.

    Version 2. Version 1 followed the usual rule of thumb (feature extraction at 10 images a class or fewer, and for
    similar data under 50 a class); on the fashion-mnist validation family fine-tuning with LP-FT beat it by 3 to 7
    points at 5 a class, because LP-FT starts from the very linear probe that feature extraction stops at and keeps
    the best epoch on val (Kumar et al., 2022). So fine-tuning the top stages is the default at every size, deeper
    fine-tuning once there is enough data for a domain that is not close, and scratch only with a lot of data from a
    far domain; feature extraction wins through the `SOLVED` override (and is always the cheap runner-up)."""
    n = images_per_class
    if n >= SCRATCH_IMAGES and similarity < DIFFERENT:
        return SCRATCH, FT_ALL
    if n >= SCRATCH_IMAGES or (n >= MANY_IMAGES_DIFFERENT and similarity < SIMILAR):
        return FT_ALL, FT2
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
    seconds: Optional[float]
    basis: str
    kind: str = ""  # feature-extraction | fine-tune | scratch

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


def recommendation_from_record(record: dict) -> Recommendation:
    """A stored recommendation record (`Store.record(id)`, kind "recommendation") as a `Recommendation`, so a page
    opened from the history or a share link shows the same card as when it was made."""
    if record.get("kind") != "recommendation" or not record.get("summary"):
        raise ConfigError(f"Record {record.get('id', '?')} is not a stored recommendation with a summary.")
    return Recommendation.from_dict(record["summary"], record_id=record.get("id", ""))


def _margin(value: float, thresholds: list[float], scale: float) -> float:
    """How far a value sits from the nearest threshold, 0 (on it) to 1 (far), in units of `scale`."""
    if not thresholds:
        return 1.0
    return float(min(1.0, min(abs(value - t) for t in thresholds) / scale))


# ------------------------------------------------------------------------------------------- what to expect
# The expected-accuracy ranges are a small model fitted on the validation sweeps (`python -m tlcore recommend
# --validate`, see validate.py: `fit_calibration`). Accuracy is measured above chance and on the logit scale,
#     z(acc) = logit((acc - chance) / (1 - chance)),
# so every range lies inside [chance, 1] and narrows near the top. For each strategy kind
#     measured:   z(acc) = z(linear-probe val accuracy) + offset + slope * log10(images per class)
#                          + weight * similarity
#     described:  the same, with z(linear probe) itself predicted from log10(images per class) and the similarity
#                 typed in
# and the range is the prediction plus the most extreme residuals of the fit (a split-conformal rank for 80% coverage;
# wider in describe mode, where nothing was measured). Sizes are clamped to 1-1000 a class and similarities to the
# range of the fit; outside the sizes and similarities validated, the basis says so.
CALIBRATION_KINDS = ("feature-extraction", "fine-tune", "scratch")
_EPS = 0.005  # accuracies within half a point of chance or of 1 are clipped there before the logit
# Fitted by `validate.fit_calibration` (target 0.8) on the 15 cases of `python -m tlcore recommend --validate --json
# validation.json` (built-in suite: 5 datasets x 5, 20, 100 a class, default sweep preset with its short schedules at
# every size, 1 repeat, tf_efficientnet_lite0 with its packaged ImageNet weights, CPU), refitted on 2026-11-29 after
# scratch moved to batches of 64 with augmentation and fine-tune gained its epoch-0 LP start (issue #15). In-sample:
# these very cases fitted it. Refit with `fit_calibration(cases)` on the cases of a new `--validate` JSON when the
# suite, the sweep schedules or the strategies change.
CALIBRATION: dict = {
    "source": "python -m tlcore recommend --validate (built-in suite, default sweep preset's short schedules, 1 repeat), "
              "validate.fit_calibration, 2026-11-29 (refit after issue #15)",
    "fitted_on": ["digits", "digits:3|5|8", "fashion-mnist", "fashion-mnist:Sandal|Sneaker|Ankle boot",
                  "fashion-mnist:T-shirt/top|Pullover|Coat|Shirt"],
    "sizes": [5, 100],  # images per class in the fit
    "similarities": [0.05, 0.58],  # measured similarities in the fit
    "cases": 15,
    "target": 0.8,
    # describe mode: z(linear probe) = intercept + log10_n * log10(n) + similarity * s (the fitted weight of the
    # similarity was negative, the far digits being easy, so it is held at 0)
    "linear_probe": {"intercept": -0.864, "log10_n": 1.431, "similarity": 0.0},
    "strategies": {
        "feature-extraction": {"offset": 0.123, "log10_n": -0.117, "similarity": -0.227,
                               "measured": [-0.22, 0.21], "described": [-1.508, 1.025]},
        "fine-tune": {"offset": 0.808, "log10_n": -0.408, "similarity": -0.55,
                      "measured": [-0.417, 0.211], "described": [-1.453, 0.999]},
        "scratch": {"offset": -0.149, "log10_n": -0.639, "similarity": 0.358,
                    "measured": [-0.634, 0.468], "described": [-1.366, 0.841]},
    },
    # share of the suite's 45 (dataset, size, strategy) cases inside the stated range (rounded outwards to 2
    # decimals, as shown): in-sample, and refitted without each dataset in turn (`recommend --validate` prints both)
    "coverage": {"measured": {"in_sample": 1.0, "leave_one_dataset_out": 0.911},
                 "described": {"in_sample": 1.0, "leave_one_dataset_out": 0.756}},
}


def accuracy_logit(accuracy: float, chance: float) -> float:
    """z(acc): accuracy above chance, 0-1, on the logit scale (clipped half a point from both ends)."""
    p = float(np.clip((accuracy - chance) / max(1.0 - chance, 1e-9), _EPS, 1.0 - _EPS))
    return float(np.log(p / (1.0 - p)))


def logit_accuracy(z: float, chance: float) -> float:
    """The inverse of `accuracy_logit`."""
    return float(chance + (1.0 - chance) / (1.0 + np.exp(-z)))


def size_feature(images_per_class: float) -> float:
    """log10 of images per class, clamped to 1-1000 a class."""
    return float(np.log10(np.clip(images_per_class, 1.0, 1000.0)))


def expected_accuracy(kind: str, images_per_class: float, classes: int, linear_probe: Optional[float] = None,
                      similarity: float = 0.5, calibration: Optional[dict] = None) -> tuple[float, float, float]:
    """(low, high, central) expected test accuracy of a strategy kind, before training: from the measured
    linear-probe val accuracy when there is one, else (describe mode) from the size and similarity alone."""
    cal = calibration or CALIBRATION
    chance = 1.0 / max(int(classes), 2)
    x = size_feature(images_per_class)
    similarity = float(np.clip(similarity, *cal.get("similarities", (0.0, 1.0))))
    m = cal["strategies"][kind]
    if linear_probe is not None:
        z, (lo, hi) = accuracy_logit(linear_probe, chance), m["measured"]
    else:
        p = cal["linear_probe"]
        z, (lo, hi) = p["intercept"] + p["log10_n"] * x + p["similarity"] * similarity, m["described"]
    z += m["offset"] + m["log10_n"] * x + m.get("similarity", 0.0) * similarity
    return logit_accuracy(z + lo, chance), logit_accuracy(z + hi, chance), logit_accuracy(z, chance)


def outward(low: float, high: float, decimals: int = 2) -> tuple[float, float]:
    """A range rounded outwards to the decimals shown, so what is shown is what is stated and an accuracy on the edge
    of the fitted range stays inside."""
    scale = 10 ** decimals
    return (float(np.floor(round(low * scale, 6)) / scale), float(np.ceil(round(high * scale, 6)) / scale))


def _calibration_basis(s: Signals, measured: bool) -> str:
    cal = CALIBRATION
    cov = cal.get("coverage", {}).get("measured" if measured else "described", {})
    text = (f"fitted on {cal['cases']} validation cases (recommend --validate, {cal['sizes'][0]}-{cal['sizes'][-1]} "
            f"a class)")
    if cov:
        text += (f"; {cov['in_sample']:.0%} of measured accuracies fell inside such ranges (in-sample), "
                 f"{cov['leave_one_dataset_out']:.0%} leaving each dataset out")
    if not measured:
        text += "; from the size and the similarity typed in, so wider"
    if not cal["sizes"][0] <= s.images_per_class <= cal["sizes"][-1]:
        text += f"; {s.images_per_class:g} a class is outside the sizes validated: extrapolated"
    low, high = cal.get("similarities", (0.0, 1.0))
    if not low <= s.similarity <= high:
        text += (f"; similarity {s.similarity:.2f} is outside the {low:.2f}-{high:.2f} validated: taken as the "
                 "nearer end")
    return text


def _outlooks(s: Signals) -> list[Outlook]:
    """Expected test accuracy ranges (see CALIBRATION) and training seconds: what the Compare page's default preset
    would take on this machine at most (tlcore.experiments.estimate, the estimate Compare shows; none in describe
    mode). The ranges are fitted on the same schedules (`recommend --validate` runs them)."""
    measured = s.linear_probe_accuracy is not None
    basis = _calibration_basis(s, measured)
    out = []
    for choice in (FE, FT2, SCRATCH):
        low, high, _ = expected_accuracy(choice.kind, s.images_per_class, s.classes, s.linear_probe_accuracy,
                                         s.similarity)
        out.append(Outlook(choice.label, *outward(low, high), _seconds(s, choice), basis, choice.kind))
    return out


def _seconds(s: Signals, choice: Choice) -> Optional[float]:
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


def recommend(signals: Signals, evidence: Optional[list[dict]] = None) -> Recommendation:
    """Rules on the signals; measured results on this data (`evidence`, see `evidence_from_store`) override them."""
    s = signals
    n = s.images_per_class
    choice, runner_up = region(n, s.similarity)
    reasons: list[Reason] = []
    # size
    if n <= FEW_IMAGES:
        reasons.append(Reason("images per class", f"{n:g}", f"<= {FEW_IMAGES}", "few images: fine-tune only the top "
                              "stages, starting from the linear probe (LP-FT), which measured 3-7 points above "
                              "feature extraction at 5 a class on the validation suite", "kumar"))
    elif n >= SCRATCH_IMAGES:
        reasons.append(Reason("images per class", f"{n:g}", f">= {SCRATCH_IMAGES}", "enough data to fine-tune every "
                              "stage, or for scratch if the domain is far", "he"))
    else:
        reasons.append(Reason("images per class", f"{n:g}", f"between {FEW_IMAGES} and {SCRATCH_IMAGES}",
                              "pretrained starts win here; fine-tune the top stages from the linear probe", "kornblith"))
    if s.similarity >= SIMILAR:
        where, to = f">= {SIMILAR} (close to the pretraining data)", "the top stages are enough to adapt"
    elif s.similarity >= DIFFERENT:
        where = f"between {DIFFERENT} and {SIMILAR} (somewhat different)"
        to = (f"fine-tune the top stages; from {MANY_IMAGES_DIFFERENT} images a class, every stage"
              if n < MANY_IMAGES_DIFFERENT else f"{MANY_IMAGES_DIFFERENT}+ images a class: fine-tune every stage")
    else:
        where = f"< {DIFFERENT} (far from the pretraining data)"
        to = (f"retrain deeply; from {SCRATCH_IMAGES} images a class scratch is the pick" if n < SCRATCH_IMAGES else
              "far domain and plenty of data: scratch")
    reasons.append(Reason("similarity to the pretraining data", f"{s.similarity:.2f} [{s.similarity_basis}]", where, to,
                          "yosinski"))
    # the features already solve it
    if s.linear_probe_accuracy is not None and s.linear_probe_accuracy >= SOLVED and choice != FE and \
            n < SCRATCH_IMAGES:
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


# ------------------------------------------------------------------------------------------------------ evidence
def evidence_from_store(signals: Signals, store=None, tolerance: float = 0.25) -> list[dict]:
    """Measured runs on the same data and split, backbone and weights, at about this size (within +-25% images a
    class): {kind, stages, per_class, accuracy, train_seconds, seed, record_id}."""
    if not signals.data_fingerprint:
        return []
    store = store or default_store()
    out = []
    for row in store.runs_for_data(signals.data_fingerprint, signals.backbone):
        run = row["run"]
        if run.status != "completed" or run.accuracy is None:
            continue
        if run.kind != "scratch" and (run.weights or {}).get("sha256") not in (None, signals.weights):
            continue
        size = float(run.extra.get("images_per_class") or row["per_class"] or 0)
        if not size or abs(size - signals.images_per_class) > tolerance * signals.images_per_class:
            continue
        out.append({"kind": run.kind, "stages": run.options.get("stages"), "per_class": size,
                    "accuracy": run.accuracy, "train_seconds": run.train_seconds, "seed": run.seed,
                    "record_id": row["record_id"]})
    return out


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


def advise(dataset: DatasetSpec | str, backbone: bb.BackboneSpec | str = bb.BackboneSpec(),
           per_class: Optional[int] = None, seed: int = 0, image_size: Optional[int] = None,
           use_evidence: bool = True, store=None) -> Recommendation:
    """Measure, then recommend (with the stored evidence on this data unless `use_evidence` is False)."""
    store = store or default_store()
    signals = measure(dataset, backbone, per_class=per_class, seed=seed, image_size=image_size)
    rec = recommend(signals, evidence_from_store(signals, store) if use_evidence else None)
    save_recommendation(rec, dataset, backbone, per_class, seed, image_size, store)
    return rec


def confirmation_config(rec: Recommendation, dataset: DatasetSpec, backbone: bb.BackboneSpec,
                        image_size: Optional[int] = None, seed: int = 0):
    """A comparison of the recommended strategy and its runner-up (default schedules) on this data: the one-click
    check that the advice holds."""
    strategies = [make_strategy(c.kind, name=c.label, stages=c.stages if c.kind == "fine-tune" else None)
                  for c in (rec.choice, rec.runner_up)]
    return ExperimentConfig(dataset=dataset, backbone=backbone, strategies=strategies, image_size=image_size,
                            seed=seed)


# Signals that change from one measurement of the same data to the next (timings); the rest must match for a stored
# recommendation to be the same one.
_TIMINGS = ("seconds", "extract_seconds", "seconds_per_image")


def _comparable(value) -> object:
    """A JSON round trip, so a value compares equal to its stored copy (tuples become lists, numpy scalars floats)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _same_signals(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in _TIMINGS} == {k: v for k, v in b.items() if k not in _TIMINGS}


def save_recommendation(rec: Recommendation, dataset: DatasetSpec | str, backbone: bb.BackboneSpec | str,
                        per_class: Optional[int | str] = None, seed: int = 0, image_size: Optional[int] = None,
                        store=None) -> str:
    """Store a recommendation like every run (it gets a link and shows in the history); not in read-only mode.

    The same inputs (dataset, backbone, images per class, seed, image size, rules version) measured again with the
    same signals update the record already stored (its id does not change) instead of adding another."""
    if read_only():
        return ""
    store = store or default_store()
    spec = DatasetSpec(dataset) if isinstance(dataset, str) else dataset
    backbone = bb.BackboneSpec(backbone) if isinstance(backbone, str) else backbone
    config = _comparable({"dataset": asdict(spec), "backbone": asdict(backbone),
                          "per_class": parse_size(per_class) if per_class is not None else None, "seed": seed,
                          "image_size": image_size, "rules_version": RULES_VERSION})
    signals = _comparable(rec.signals.to_dict())
    label = f"recommend: {rec.choice.label}"
    existing = next((r for r in store.records(kind="recommendation") if r["config"] == config and r["summary"] and
                     _same_signals(r["summary"].get("signals") or {}, signals)), None)
    if existing is not None:
        rec.record_id = existing["id"]
    else:
        rec.record_id = store.create_record("recommendation", config, label=label, dataset=rec.signals.dataset,
                                            backbone=rec.signals.backbone, status="completed")
    store.update_record(rec.record_id, summary=rec.to_dict())
    return rec.record_id
