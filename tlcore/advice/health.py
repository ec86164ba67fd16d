"""Is the data clean? Likely label errors and the most atypical images, found from what a comparison already has: the
frozen features (cached) and the feature-extraction head.

Label issues: every labelled image (training, val and test: a wrong test label biases the score as much as a wrong
training label misleads the model) gets class probabilities from the FE head fitted on the other folds of a
stratified 5-fold split (out-of-fold, the same L-BFGS head at the L2 strength the comparison's head picks on val),
then cleanlab's `find_label_issues` (confident learning, Northcutt et al. 2021; rule `FILTER`) flags the images whose
given label disagrees with them, ranked by self-confidence; the suggested label is the head's most probable class.
Outliers: cleanlab's `OutOfDistribution` scores each image by its distance to its nearest neighbours in feature
space; the report lists the lowest-scoring share (`OUTLIER_SHARE`) as the most atypical images, a ranking, not a
verdict.

cleanlab's core (`cleanlab.filter`, `cleanlab.outlier`) is used without its Datalab (which pulls in Hugging Face
`datasets`): see docs/design.md. A class with fewer images than the folds is named and left out of the label check.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from tlcore.core.environment import read_only, require_writable
from tlcore.core.errors import ConfigError
from tlcore.core.progress import CancelToken, Reporter
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import parse_dataset
from tlcore.engine import backbone as bb
from tlcore.engine.features import FeatureCache, FeatureContext, default_cache, split_features
from tlcore.engine.strategies import make_strategy
from tlcore.engine.train import fit_linear_head, out_of_fold_probabilities
from tlcore.experiments.config import ExperimentConfig, parse_size, size_label, stored_fields
from tlcore.experiments.defaults import DEFAULT_SEED, Size
from tlcore.experiments.prepare import prepare
from tlcore.records.store import Store, default_store

HEALTH_VERSION = 1
FOLDS = 5
OUTLIER_SHARE = 0.01  # the most atypical 1% of images are listed (at least one)
# cleanlab's rule for which images are issues: of its seven, the one with the best precision (and recall) on the
# flipped-label validation (docs/benchmarks.md, "Data health"); its default, prune_by_noise_rate, flagged 2x more.
FILTER = "low_self_confidence"
SPLITS = ("train", "val", "test")


@dataclass
class FlaggedImage:
    """One image the check flags: where it is, its given label, and what the check says of it."""

    split: str
    index: int  # into its split's pool (the feature cache's row key)
    name: str  # its path inside the dataset (or 'name[index]')
    given: str
    suggested: str = ""  # label issues: the head's most probable class
    confidence: Optional[float] = None  # label issues: the out-of-fold probability of the given label
    score: Optional[float] = None  # outliers: cleanlab's outlier score (lower: more atypical)


@dataclass
class HealthReport:
    dataset: str
    data_fingerprint: str
    backbone: str
    image_size: int
    per_class: Size
    seed: int
    classes: list[str]
    checked_images: dict  # split -> images checked
    label_issues: list[FlaggedImage] = field(default_factory=list)  # most likely first
    outliers: list[FlaggedImage] = field(default_factory=list)  # most atypical first
    skipped_classes: list[str] = field(default_factory=list)  # fewer images than FOLDS: not label-checked
    folds: int = FOLDS
    head_l2: float = 0.0
    seconds: float = 0.0
    extract_seconds: float = 0.0
    rows_computed: int = 0  # feature rows computed (0: every feature from the cache)
    host: str = ""
    record_id: str = ""
    version: int = HEALTH_VERSION

    def counts(self) -> dict:
        by_split = {s: sum(1 for f in self.label_issues if f.split == s) for s in SPLITS}
        return {"label issues": len(self.label_issues), **{f"label issues in {s}": n for s, n in by_split.items()},
                "outliers listed": len(self.outliers)}

    def frame(self, kind: str = "label issues") -> pd.DataFrame:
        rows = self.label_issues if kind == "label issues" else self.outliers
        columns = [f.name for f in fields(FlaggedImage)]
        return pd.DataFrame([asdict(r) for r in rows], columns=columns)

    def text(self, limit: int = 20) -> str:
        total = sum(self.checked_images.values())
        checked = ", ".join(f"{n} {s}" for s, n in self.checked_images.items())
        in_splits = ", ".join(f"{sum(1 for f in self.label_issues if f.split == s)} in {s}" for s in SPLITS)
        lines = [f"{self.dataset}: {total} images checked ({checked}), {len(self.classes)} classes; {self.backbone} at "
                 f"{self.image_size} px, {self.folds}-fold out-of-fold probabilities, seed {self.seed}",
                 f"likely label errors: {len(self.label_issues)} ({in_splits})"]
        if self.label_issues:
            frame = self.frame()[["split", "name", "given", "suggested", "confidence"]].head(limit)
            lines.append(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        lines.append(f"most atypical images (lowest {OUTLIER_SHARE:.0%} of cleanlab's outlier score): "
                     f"{len(self.outliers)}")
        if self.outliers:
            lines.append(self.frame("outliers")[["split", "name", "given", "score"]].head(limit)
                         .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if self.skipped_classes:
            lines.append(f"not label-checked (fewer than {self.folds} images): {', '.join(self.skipped_classes)}")
        lines.append(f"{self.seconds:.1f} s" + (" (every feature from the cache)" if not self.rows_computed else
                                                 f", {self.extract_seconds:.1f} s of it the frozen pass"))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self) | {"per_class": size_label(self.per_class)}

    @classmethod
    def from_dict(cls, d: dict, record_id: str = "") -> "HealthReport":
        values = stored_fields(cls, d)
        values["label_issues"] = [FlaggedImage(**f) for f in d.get("label_issues", [])]
        values["outliers"] = [FlaggedImage(**f) for f in d.get("outliers", [])]
        report = cls(**values)
        report.record_id = record_id or report.record_id
        return report


@dataclass
class _Features:
    """Every labelled image's frozen features, with its split, pool index and label."""

    x: torch.Tensor
    y: np.ndarray
    split: np.ndarray
    index: np.ndarray
    head_l2: float


def _features(spec: DatasetSpec, backbone: bb.BackboneSpec, per_class: Size, seed: int, image_size: Optional[int],
              cache: FeatureCache, cancel: CancelToken):
    """The comparison's own frozen features (cached under the key a comparison uses) of every split, and the L2
    strength the feature-extraction head picks on val."""
    head = make_strategy("feature-extraction")
    config = ExperimentConfig(dataset=spec, backbone=backbone, strategies=(head,), image_size=image_size, seed=seed)
    prepared = prepare(config)
    ds = prepared.subset(per_class, seed)
    data = prepared.cell_data(ds, splits=SPLITS)
    context = FeatureContext(model=prepared.reference, backbone_name=backbone.name, weights_sha=prepared.weights_id,
                             dataset=ds, splits=data.splits, cfg=data.cfg, transform_key=data.transform_key,
                             device=prepared.device, cache=cache)
    reporter = Reporter("health", [], cancel)
    rows_before, started = cache.stats.rows_computed, time.perf_counter()
    feats = {s: split_features(context, s, reporter) for s in SPLITS}
    timing = (time.perf_counter() - started, cache.stats.rows_computed - rows_before)
    labels = {s: data.splits[s].labels for s in SPLITS}
    fit = fit_linear_head(feats["train"], labels["train"], feats["val"], labels["val"], ds.num_classes,
                          head.head_l2_grid, head.head_max_iter)
    every = _Features(torch.cat([feats[s] for s in SPLITS]), torch.cat([labels[s] for s in SPLITS]).numpy(),
                      np.concatenate([[s] * len(labels[s]) for s in SPLITS]),
                      np.concatenate([np.asarray(data.splits[s].indices) for s in SPLITS]), float(fit.l2))
    return ds, data.cfg["input_size"][-1], every, timing


def label_issues(x: torch.Tensor, y: np.ndarray, num_classes: int, l2: float, seed: int = 0,
                 folds: int = FOLDS) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(indices of likely label errors, most likely first; out-of-fold probabilities; classes left out because they
    have fewer than `folds` images). Rows of left-out classes get no probabilities (NaN) and are never flagged."""
    from cleanlab.filter import find_label_issues

    counts = np.bincount(y, minlength=num_classes)
    skipped = [c for c in range(num_classes) if 0 < counts[c] < folds]
    keep = ~np.isin(y, skipped)
    present = [c for c in range(num_classes) if counts[c] >= folds]
    probabilities = np.full((len(y), num_classes), np.nan)
    if len(present) < 2:
        return np.array([], dtype=int), probabilities, skipped
    compact = {c: i for i, c in enumerate(present)}
    yk = np.array([compact[c] for c in y[keep]])
    probs = out_of_fold_probabilities(x[torch.from_numpy(keep)], torch.from_numpy(yk), len(present), l2, folds,
                                      seed=seed).numpy()
    found = find_label_issues(yk, probs, filter_by=FILTER, return_indices_ranked_by="self_confidence")
    rows = np.flatnonzero(keep)
    probabilities[np.ix_(rows, present)] = probs
    return rows[found], probabilities, skipped


def outlier_scores(x: torch.Tensor) -> np.ndarray:
    """cleanlab's OutOfDistribution score of every image from its standardised features (lower: more atypical)."""
    from cleanlab.outlier import OutOfDistribution

    features = x.float()
    features = ((features - features.mean(0)) / features.std(0, unbiased=False).clamp_min(1e-6)).numpy()
    return OutOfDistribution().fit_score(features=features, verbose=False)


def health_check(dataset: DatasetSpec | str, *, backbone: str = bb.DEFAULT_BACKBONE, weights: str = "pretrained",
                 per_class: Size | str = None, image_size: Optional[int] = None, seed: int = DEFAULT_SEED,
                 cache: Optional[FeatureCache] = None, store: Optional[Store] = None, save: bool = True,
                 cancel: Optional[CancelToken] = None) -> HealthReport:
    """Check every labelled image of `dataset` (the `per_class` training subset and the whole val and test splits)
    for likely label errors and list the most atypical ones; store the report (kind "health") unless `save` is off
    or the instance is read-only."""
    started = time.perf_counter()
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    per_class = parse_size(per_class) if isinstance(per_class, str) else per_class
    if weights in ("none", "random", "scratch"):
        raise ConfigError("The health check needs pretrained features: give pretrained weights or a weights file.")
    ds, size, every, (extract_seconds, rows) = _features(spec, bb.BackboneSpec(backbone, weights), per_class, seed,
                                                        image_size, cache or default_cache(), cancel or CancelToken())
    found, probabilities, skipped = label_issues(every.x, every.y, ds.num_classes, every.head_l2, seed)
    report = HealthReport(dataset=ds.name, data_fingerprint=ds.source_fingerprint(), backbone=backbone,
                          image_size=int(size), per_class=per_class, seed=seed, classes=list(ds.classes),
                          checked_images={s: int((every.split == s).sum()) for s in SPLITS},
                          skipped_classes=[ds.classes[c] for c in skipped], head_l2=every.head_l2,
                          extract_seconds=round(extract_seconds, 3), rows_computed=int(rows),
                          host=socket.gethostname())
    for i in found:
        report.label_issues.append(FlaggedImage(
            str(every.split[i]), int(every.index[i]), ds.item_name(str(every.split[i]), int(every.index[i])),
            ds.classes[every.y[i]], ds.classes[int(np.nanargmax(probabilities[i]))],
            round(float(probabilities[i, every.y[i]]), 4)))
    scores = outlier_scores(every.x)
    for i in np.argsort(scores, kind="stable")[:max(1, int(round(OUTLIER_SHARE * len(scores))))]:
        report.outliers.append(FlaggedImage(str(every.split[i]), int(every.index[i]),
                                            ds.item_name(str(every.split[i]), int(every.index[i])),
                                            ds.classes[every.y[i]], score=round(float(scores[i]), 4)))
    report.seconds = round(time.perf_counter() - started, 3)
    if save and not read_only():
        require_writable("store a health check")
        store = store or default_store()
        report.record_id = store.create_record("health", {"dataset": asdict(spec), "backbone": backbone,
                                                          "weights": weights, "per_class": size_label(per_class),
                                                          "image_size": image_size, "seed": seed,
                                                          "version": HEALTH_VERSION},
                                               label=f"health: {len(report.label_issues)} likely label errors",
                                               dataset=ds.name, backbone=backbone, status="completed")
        store.update_record(report.record_id, summary=report.to_dict())
    return report


def health_from_record(record: dict) -> HealthReport:
    if record.get("kind") != "health" or not record.get("summary"):
        raise ConfigError(f"Record {record.get('id', '?')} is not a stored health check.")
    return HealthReport.from_dict(record["summary"], record_id=record.get("id", ""))


# -- validation on known noise ---------------------------------------------------------------------------------------
@dataclass
class NoiseCase:
    dataset: str
    per_class: int
    noise: float
    kind: str  # "random" (to any other class) or "similar" (to the class the clean head confuses it with most)
    images: int
    flipped: int
    flagged: int
    true_positives: int

    @property
    def precision(self) -> Optional[float]:
        return self.true_positives / self.flagged if self.flagged else None

    @property
    def recall(self) -> Optional[float]:
        return self.true_positives / self.flipped if self.flipped else None


def flip_labels(y: np.ndarray, num_classes: int, fraction: float, rng: np.random.Generator,
                confused_with: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, indices flipped): `fraction` of the images, each to another class at random, or to
    `confused_with[i]` (the similar class) where given."""
    chosen = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
    noisy = y.copy()
    for i in chosen:
        if confused_with is not None:
            noisy[i] = confused_with[i]
        else:
            noisy[i] = rng.choice([c for c in range(num_classes) if c != y[i]])
    return noisy, np.sort(chosen)


def validate_health(datasets: Sequence[str] = ("fashion-mnist", "digits"), sizes: Sequence[int] = (50, 100),
                    noise: Sequence[float] = (0.05, 0.1, 0.2), seed: int = DEFAULT_SEED,
                    progress: Optional[Callable[[str], None]] = None) -> list[NoiseCase]:
    """Flip a known share of the labels (at random, and between similar classes) of every labelled image and
    measure the precision and recall of the label issues found. The features are computed once per dataset and size
    (cached); only the labels change."""
    say = progress or (lambda _m: None)
    cases = []
    for name in datasets:
        spec = parse_dataset(name)
        for size in sizes:
            ds, _, every, _ = _features(spec, bb.BackboneSpec(bb.DEFAULT_BACKBONE, "pretrained"), size, seed, None,
                                        default_cache(), CancelToken())
            _, clean, _ = label_issues(every.x, every.y, ds.num_classes, every.head_l2, seed)
            ranked = np.argsort(-np.nan_to_num(clean), axis=1)  # the clean head's classes, most probable first
            similar = np.where(ranked[:, 0] == every.y, ranked[:, 1], ranked[:, 0])
            for fraction in noise:
                for kind in ("random", "similar"):
                    rng = np.random.default_rng(seed)
                    noisy, flipped = flip_labels(every.y, ds.num_classes, fraction, rng,
                                                 similar if kind == "similar" else None)
                    found, _, _ = label_issues(every.x, noisy, ds.num_classes, every.head_l2, seed)
                    case = NoiseCase(ds.name, size, fraction, kind, len(noisy), len(flipped), len(found),
                                     int(np.isin(found, flipped).sum()))
                    cases.append(case)
                    say(f"{ds.name} {size}/class {fraction:.0%} {kind}: precision {case.precision or 0:.2f}, recall "
                        f"{case.recall or 0:.2f} ({case.flagged} flagged, {case.flipped} flipped)")
    return cases


def noise_table(cases: list[NoiseCase]) -> pd.DataFrame:
    return pd.DataFrame([asdict(c) | {"precision": c.precision, "recall": c.recall} for c in cases])

