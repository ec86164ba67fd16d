"""Is the data clean? Likely label errors and the most atypical images, found from what a comparison already has: the
frozen features (cached) and the feature-extraction head.

Label issues: every labelled image (training, val and test: a wrong test label biases the score as much as a wrong
training label misleads the model) gets two independent views of its class: probabilities from the FE head fitted on
the other folds of a stratified 5-fold split (out-of-fold, the same L-BFGS head at the L2 strength the comparison's
head picks on val), and the labels of its `NEIGHBOURS` nearest images in feature space. cleanlab's
`find_label_issues` (confident learning, Northcutt et al. 2021; rule `FILTER`) on the two views' average lists the
images whose given label disagrees, ranked by self-confidence; the suggested label is the average's most probable
class. Of those, an image is a *likely* label error when both views reject its label on their own (no neighbour
shares it and the head gives it less than `HEAD_REJECTS`); the rest are *worth a look*. The likely ones are what
the check counts and the suggested fixes exclude: at 10% of labels flipped at random they are at least 0.8 precise,
where the head alone flagged as many clean images as flipped ones (docs/benchmarks.md, "Data health").
Outliers: cleanlab's `OutOfDistribution` scores each image by its distance to its nearest neighbours in feature
space; the report lists the lowest-scoring share (`OUTLIER_SHARE`) as the most atypical images, a ranking, not a
verdict.

Image issues and duplicates: cleanvision's checks (dark, light, blurry, nearly blank, odd size or aspect ratio; exact
and near duplicates by hash), the groups that cross splits listed first, since they bias the test.

cleanlab's core (`cleanlab.filter`, `cleanlab.outlier`) is used without its Datalab (which pulls in Hugging Face
`datasets`), and cleanvision for what is read off the pixels: see docs/benchmarks.md, "Data health". A class with
fewer images than the folds is named and left out of the label check. The suggested fixes (`suggested_fixes`) become
a revision (tlcore.data.revision) with `apply_fixes`; `validate_health` and `validate_cleaning` measure the check and
the fixes on labels flipped on purpose.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from tlcore.core.environment import read_only, require_writable
from tlcore.core.errors import ConfigError
from tlcore.core.progress import CancelToken, ProgressCallback, ProgressEvent, Reporter
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import load_dataset, load_source, parse_dataset
from tlcore.data.revision import Revision, load_revision, make_revision, save_revision
from tlcore.engine import backbone as bb
from tlcore.engine.features import FeatureCache, FeatureContext, default_cache, split_features
from tlcore.engine.strategies import make_strategy
from tlcore.engine.train import choose_l2, out_of_fold_probabilities
from tlcore.experiments.compare import compare
from tlcore.experiments.config import ExperimentConfig, build_config, parse_size, size_label, stored_fields
from tlcore.experiments.defaults import DEFAULT_SEED, Size
from tlcore.experiments.prepare import prepare
from tlcore.records.store import Store, default_store

HEALTH_VERSION = 1
FOLDS = 5
OUTLIER_SHARE = 0.01  # the most atypical 1% of images are listed (at least one)
# L-BFGS iterations of the out-of-fold heads (solved together, engine/train.out_of_fold_probabilities): 100 instead
# of the comparison head's 300 gives the same flags to 2 decimals on the validation (docs/benchmarks.md)
OOF_MAX_ITER = 100
# cleanlab's rule for which images are issues: of its seven, the one with the best precision (and recall) on the
# flipped-label validation (docs/benchmarks.md, "Data health"); its default, prune_by_noise_rate, flagged 2x more.
FILTER = "low_self_confidence"
NEIGHBOURS = 10  # nearest images (cosine, standardised features) whose labels vote for an image's class
# the head's out-of-fold probability of the given label under which, with no neighbour sharing that label, a listed
# image is a likely label error rather than worth a look (chosen on the flipped-label validation: docs/benchmarks.md)
HEAD_REJECTS = 0.05
# cleanvision's image checks (its grayscale check is left out: a grey dataset is not an issue, and it would flag every
# image of the built-in data); duplicates are its exact and near-duplicate checks
IMAGE_CHECKS = ("dark", "light", "blurry", "low_information", "odd_size", "odd_aspect_ratio")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class HealthConfig:
    """What a health check computes, as plain data (a queued job's, a record's config)."""

    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    backbone: str = bb.DEFAULT_BACKBONE
    weights: str = "pretrained"
    per_class: Size = None
    image_size: Optional[int] = None
    seed: int = DEFAULT_SEED

    def to_dict(self) -> dict:
        return {"dataset": asdict(self.dataset), "backbone": self.backbone, "weights": self.weights,
                "per_class": size_label(self.per_class), "image_size": self.image_size, "seed": self.seed,
                "version": HEALTH_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> "HealthConfig":
        return cls(dataset=DatasetSpec(**d.get("dataset", {})), backbone=d.get("backbone", bb.DEFAULT_BACKBONE),
                   weights=d.get("weights", "pretrained"), per_class=parse_size(d.get("per_class")),
                   image_size=d.get("image_size"), seed=d.get("seed", DEFAULT_SEED))


@dataclass
class FlaggedImage:
    """One image the check flags: where it is, its given label, and what the check says of it."""

    split: str
    index: int  # into its split's pool (the feature cache's row key)
    name: str  # its path inside the dataset (or 'name[index]')
    given: str
    suggested: str = ""  # label issues: the most probable class (head and neighbours averaged)
    confidence: Optional[float] = None  # label issues: the head's and neighbours' average probability of the label
    score: Optional[float] = None  # lower is worse: cleanlab's outlier score, or cleanvision's for an image issue
    issue: str = ""  # image issues: cleanvision's issue type (dark, light, blurry, ...)


@dataclass
class DuplicateGroup:
    """Images cleanvision finds identical ('exact', by content hash) or nearly so ('near', by perceptual hash)."""

    kind: str
    images: list[FlaggedImage]

    @property
    def crosses_splits(self) -> bool:
        """Copies in more than one split: a test image with its copy in training inflates test accuracy."""
        return len({i.split for i in self.images}) > 1


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
    label_issues: list[FlaggedImage] = field(default_factory=list)  # likely label errors, most likely first
    label_doubts: list[FlaggedImage] = field(default_factory=list)  # worth a look: one view rejects the label
    outliers: list[FlaggedImage] = field(default_factory=list)  # most atypical first
    image_issues: list[FlaggedImage] = field(default_factory=list)  # cleanvision's, by issue type, worst first
    duplicates: list[DuplicateGroup] = field(default_factory=list)  # groups crossing splits first
    image_seconds: float = 0.0  # cleanvision's share of `seconds`
    skipped_classes: list[str] = field(default_factory=list)  # fewer images than FOLDS: not label-checked
    folds: int = FOLDS
    head_l2: float = 0.0
    seconds: float = 0.0
    extract_seconds: float = 0.0
    rows_computed: int = 0  # feature rows computed (0: every feature from the cache)
    host: str = ""
    source: dict = field(default_factory=dict)  # the DatasetSpec checked (asdict): where the images are read back
    record_id: str = ""
    version: int = HEALTH_VERSION

    @property
    def status(self) -> str:
        """A report exists only once the check finished (a cancelled check stores none)."""
        return "completed"

    def counts(self) -> dict:
        by_split = {s: sum(1 for f in self.label_issues if f.split == s) for s in SPLITS}
        by_type = {t: sum(1 for f in self.image_issues if f.issue == t) for t in IMAGE_CHECKS}
        return {"label issues": len(self.label_issues), **{f"label issues in {s}": n for s, n in by_split.items()},
                "labels worth a look": len(self.label_doubts), "outliers listed": len(self.outliers),
                **{f"{t} images": n for t, n in by_type.items()},
                **{f"{k} duplicate groups": sum(1 for g in self.duplicates if g.kind == k) for k in ("exact", "near")},
                "duplicate groups across splits": sum(1 for g in self.duplicates if g.crosses_splits)}

    def frame(self, kind: str = "label issues") -> pd.DataFrame:
        rows = {"label issues": self.label_issues, "label doubts": self.label_doubts, "outliers": self.outliers,
                "image issues": self.image_issues}[kind]
        columns = [f.name for f in fields(FlaggedImage)]
        return pd.DataFrame([asdict(r) for r in rows], columns=columns)

    def text(self, limit: int = 20) -> str:
        total = sum(self.checked_images.values())
        checked = ", ".join(f"{n} {s}" for s, n in self.checked_images.items())
        in_splits = ", ".join(f"{sum(1 for f in self.label_issues if f.split == s)} in {s}" for s in SPLITS)
        lines = [f"{self.dataset}: {total} images checked ({checked}), {len(self.classes)} classes; {self.backbone} at "
                 f"{self.image_size} px, {self.folds}-fold out-of-fold head and {NEIGHBOURS} nearest neighbours, "
                 f"seed {self.seed}",
                 f"likely label errors (head and neighbours both reject the label): {len(self.label_issues)} "
                 f"({in_splits})"]
        for kind in ("label issues", "label doubts"):
            if kind == "label doubts":
                lines.append(f"labels worth a look (one of the two rejects it): {len(self.label_doubts)}")
            if len(self.frame(kind)):
                frame = self.frame(kind)[["split", "name", "given", "suggested", "confidence"]].head(limit)
                lines.append(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        lines.append(f"most atypical images (lowest {OUTLIER_SHARE:.0%} of cleanlab's outlier score): "
                     f"{len(self.outliers)}")
        if self.outliers:
            lines.append(self.frame("outliers")[["split", "name", "given", "score"]].head(limit)
                         .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        kinds = ", ".join(f"{n} {t}" for t, n in ((t, sum(1 for f in self.image_issues if f.issue == t))
                                                  for t in IMAGE_CHECKS) if n) or "none"
        lines.append(f"image issues (cleanvision): {kinds}")
        if self.image_issues:
            lines.append(self.frame("image issues")[["issue", "split", "name", "given", "score"]].head(limit)
                         .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        crossing = [g for g in self.duplicates if g.crosses_splits]
        lines.append(f"duplicate groups: {len(self.duplicates)} ({len(crossing)} across splits: they bias the test)")
        for group in self.duplicates[:limit]:
            lines.append(f"  {group.kind}{' ACROSS SPLITS' if group.crosses_splits else ''}: "
                         + ", ".join(f"{i.name} ({i.split})" for i in group.images))
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
        values["label_doubts"] = [FlaggedImage(**f) for f in d.get("label_doubts", [])]
        values["outliers"] = [FlaggedImage(**f) for f in d.get("outliers", [])]
        values["image_issues"] = [FlaggedImage(**f) for f in d.get("image_issues", [])]
        values["duplicates"] = [DuplicateGroup(g["kind"], [FlaggedImage(**f) for f in g["images"]])
                                for g in d.get("duplicates", [])]
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
              cache: FeatureCache, cancel: CancelToken, callbacks: Sequence[ProgressCallback] = ()):
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
    reporter = Reporter("health", list(callbacks), cancel)
    rows_before, started = cache.stats.rows_computed, time.perf_counter()
    feats = {s: split_features(context, s, reporter) for s in SPLITS}
    timing = (time.perf_counter() - started, cache.stats.rows_computed - rows_before)
    labels = {s: data.splits[s].labels for s in SPLITS}
    l2 = choose_l2(feats["train"], labels["train"], feats["val"], labels["val"], ds.num_classes, head.head_l2_grid,
                   head.head_max_iter)
    every = _Features(torch.cat([feats[s] for s in SPLITS]), torch.cat([labels[s] for s in SPLITS]).numpy(),
                      np.concatenate([[s] * len(labels[s]) for s in SPLITS]),
                      np.concatenate([np.asarray(data.splits[s].indices) for s in SPLITS]), float(l2))
    return ds, data.cfg["input_size"][-1], every, timing


@dataclass
class LabelCheck:
    """What the label check finds among the rows it was given (indices into them, most likely first)."""

    likely: np.ndarray  # both views reject the given label
    doubts: np.ndarray  # cleanlab lists them, one view keeps the label
    probabilities: np.ndarray  # the two views' average; NaN rows: classes left out
    skipped: list[int]  # classes with fewer images than the folds


def neighbour_votes(x: torch.Tensor, y: np.ndarray, num_classes: int, k: int = NEIGHBOURS) -> np.ndarray:
    """How many of each image's `k` nearest other images (cosine on standardised features) carry each class: a kNN
    view of the labels that shares no fit with the head (cleanlab's Datalab builds its kNN label view the same
    way)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(y) - 1)
    z = x.float()
    z = ((z - z.mean(0)) / z.std(0, unbiased=False).clamp_min(1e-6)).numpy()
    neighbours = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(z).kneighbors(z, return_distance=False)
    others = np.array([row[row != i][:k] for i, row in enumerate(neighbours)])  # itself out, also among ties
    votes = np.zeros((len(y), num_classes))
    np.add.at(votes, (np.repeat(np.arange(len(y)), k), y[others].ravel()), 1.0)
    return votes


def label_issues(x: torch.Tensor, y: np.ndarray, num_classes: int, l2: float, seed: int = 0,
                 folds: int = FOLDS) -> LabelCheck:
    """The likely label errors and those worth a look, most likely first. Rows of classes with fewer than `folds`
    images get no probabilities (NaN), are never listed, and are left out of the neighbours too."""
    from cleanlab.filter import find_label_issues

    counts = np.bincount(y, minlength=num_classes)
    skipped = [c for c in range(num_classes) if 0 < counts[c] < folds]
    keep = ~np.isin(y, skipped)
    present = [c for c in range(num_classes) if counts[c] >= folds]
    probabilities = np.full((len(y), num_classes), np.nan)
    none = np.array([], dtype=int)
    if len(present) < 2:
        return LabelCheck(none, none, probabilities, skipped)
    compact = {c: i for i, c in enumerate(present)}
    yk = np.array([compact[c] for c in y[keep]])
    xk = x[torch.from_numpy(keep)]
    head = out_of_fold_probabilities(xk, torch.from_numpy(yk), len(present), l2, folds, max_iter=OOF_MAX_ITER,
                                     seed=seed).numpy()
    votes = neighbour_votes(xk, yk, len(present))
    # a 0.1 pseudo-count a class, so that no class is impossible for the neighbours
    average = (head + (votes + 0.1) / (votes + 0.1).sum(1, keepdims=True)) / 2
    listed = find_label_issues(yk, average, filter_by=FILTER, return_indices_ranked_by="self_confidence")
    given = np.arange(len(yk)), yk
    rejected = (head[given] < HEAD_REJECTS) & (votes[given] == 0)
    rows = np.flatnonzero(keep)
    probabilities[np.ix_(rows, present)] = average
    return LabelCheck(rows[listed[rejected[listed]]], rows[listed[~rejected[listed]]], probabilities, skipped)


def outlier_scores(x: torch.Tensor) -> np.ndarray:
    """cleanlab's OutOfDistribution score of every image from its standardised features (lower: more atypical)."""
    from cleanlab.outlier import OutOfDistribution

    features = x.float()
    features = ((features - features.mean(0)) / features.std(0, unbiased=False).clamp_min(1e-6)).numpy()
    return OutOfDistribution().fit_score(features=features, verbose=False)


class _Images:
    """What cleanvision reads (a torchvision-style dataset: (image, label) by position) over a dataset's images."""

    def __init__(self, dataset, splits: np.ndarray, indices: np.ndarray) -> None:
        self.dataset, self.splits, self.indices = dataset, splits, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset.pools[str(self.splits[i])].load(int(self.indices[i])), 0


def image_issues(dataset, splits: np.ndarray, indices: np.ndarray) -> tuple[list[FlaggedImage],
                                                                           list[DuplicateGroup]]:
    """cleanvision's checks on every image (`splits[i]`, `indices[i]` into its pool): images that are dark, light,
    blurry, nearly blank, or of an odd size or aspect ratio (worst first within a type), and groups of exact and near
    duplicates (those that cross splits first)."""
    from cleanvision import Imagelab

    def flagged(i: int, issue: str = "", score: Optional[float] = None) -> FlaggedImage:
        split, index = str(splits[i]), int(indices[i])
        return FlaggedImage(split, index, dataset.item_name(split, index),
                            dataset.classes[int(dataset.pools[split].labels[index])], score=score, issue=issue)

    lab = Imagelab(torchvision_dataset=_Images(dataset, splits, indices), verbose=False)
    # its progress bars go to stderr (not redirected: that would silence every thread of a serving process)
    lab.find_issues(issue_types={t: {} for t in (*IMAGE_CHECKS, "exact_duplicates", "near_duplicates")}, n_jobs=1,
                    verbose=False)
    issues, found = lab.issues, []
    for issue in IMAGE_CHECKS:
        rows = np.flatnonzero(issues[f"is_{issue}_issue"].to_numpy())
        scores = issues[f"{issue}_score"].to_numpy()
        found += [flagged(int(i), issue, round(float(scores[i]), 4)) for i in rows[np.argsort(scores[rows],
                                                                                               kind="stable")]]
    groups = [DuplicateGroup(kind, [flagged(int(i)) for i in members])
              for kind in ("exact", "near") for members in lab.info[f"{kind}_duplicates"]["sets"]]
    groups.sort(key=lambda g: not g.crosses_splits)
    return found, groups


def health_check(dataset: DatasetSpec | str, *, backbone: str = bb.DEFAULT_BACKBONE, weights: str = "pretrained",
                 per_class: Size | str = None, image_size: Optional[int] = None, seed: int = DEFAULT_SEED,
                 cache: Optional[FeatureCache] = None, store: Optional[Store] = None, save: bool = True,
                 cancel: Optional[CancelToken] = None, callbacks: Sequence[ProgressCallback] = (),
                 record_id: Optional[str] = None) -> HealthReport:
    """Check every labelled image of `dataset` (the `per_class` training subset and the whole val and test splits)
    for likely label errors and list the most atypical ones; store the report (kind "health") unless `save` is off
    or the instance is read-only. `record_id`: a record created already (a queued job's) to store it in;
    `callbacks` get the frozen pass's progress (strategy 'health')."""
    started = time.perf_counter()
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    per_class = parse_size(per_class) if isinstance(per_class, str) else per_class
    if weights in ("none", "random", "scratch"):
        raise ConfigError("The health check needs pretrained features: give pretrained weights or a weights file.")
    config = HealthConfig(spec, backbone, weights, per_class, image_size, seed)
    store = store or default_store()
    if record_id and save:
        store.claim(record_id)
    ds, size, every, (extract_seconds, rows) = _features(spec, bb.BackboneSpec(backbone, weights), per_class, seed,
                                                        image_size, cache or default_cache(), cancel or CancelToken(),
                                                        callbacks)
    for callback in callbacks:
        callback(ProgressEvent("health", "label issues", fraction=0.95, message="out-of-fold heads and cleanlab"))
    check = label_issues(every.x, every.y, ds.num_classes, every.head_l2, seed)
    report = HealthReport(dataset=ds.name, data_fingerprint=ds.source_fingerprint(), backbone=backbone,
                          image_size=int(size), per_class=per_class, seed=seed, classes=list(ds.classes),
                          checked_images={s: int((every.split == s).sum()) for s in SPLITS},
                          skipped_classes=[ds.classes[c] for c in check.skipped], head_l2=every.head_l2,
                          extract_seconds=round(extract_seconds, 3), rows_computed=int(rows),
                          host=socket.gethostname(), source=asdict(spec))
    for rows, listed in ((check.likely, report.label_issues), (check.doubts, report.label_doubts)):
        listed.extend(FlaggedImage(
            str(every.split[i]), int(every.index[i]), ds.item_name(str(every.split[i]), int(every.index[i])),
            ds.classes[every.y[i]], ds.classes[int(np.nanargmax(check.probabilities[i]))],
            round(float(check.probabilities[i, every.y[i]]), 4)) for i in rows)
    for callback in callbacks:
        callback(ProgressEvent("health", "image checks", fraction=0.97, message="cleanvision's image checks"))
    image_started = time.perf_counter()
    report.image_issues, report.duplicates = image_issues(ds, every.split, every.index)
    report.image_seconds = round(time.perf_counter() - image_started, 3)
    scores = outlier_scores(every.x)
    for i in np.argsort(scores, kind="stable")[:max(1, int(round(OUTLIER_SHARE * len(scores))))]:
        report.outliers.append(FlaggedImage(str(every.split[i]), int(every.index[i]),
                                            ds.item_name(str(every.split[i]), int(every.index[i])),
                                            ds.classes[every.y[i]], score=round(float(scores[i]), 4)))
    report.seconds = round(time.perf_counter() - started, 3)
    for callback in callbacks:
        callback(ProgressEvent("health", "done", fraction=1.0, message=f"{len(report.label_issues)} likely label "
                               "errors"))
    if save and not read_only():
        require_writable("store a health check")
        label = f"health: {len(report.label_issues)} likely label errors"
        if record_id is None:
            record_id = store.create_record("health", config.to_dict(), label=label, dataset=ds.name,
                                            backbone=backbone, status="completed")
        report.record_id = record_id
        store.update_record(record_id, status="completed", summary=report.to_dict())
    return report


# -- fixes: a revision the user edits ---------------------------------------------------------------------------------
def suggested_fixes(report: HealthReport) -> pd.DataFrame:
    """The report's listed labels as an editable list of changes (name, action, label, ...): exclude every listed
    training and validation image, the likely errors and those worth a look (confident learning's pruning: dropping a
    correct but confusing image costs less than keeping a wrong label, and excluding only the likely ones won back
    less on the validation, docs/benchmarks.md), and keep the flagged test images so that a before-and-after
    comparison scores both versions on the same test set; `label` is the suggested class, used when the action is
    changed to relabel; `likely` tells the two apart."""
    rows = [{"name": f.name, "action": "keep" if f.split == "test" else "exclude", "label": f.suggested,
             "split": f.split, "given": f.given, "confidence": f.confidence, "likely": likely}
            for likely, listed in ((True, report.label_issues), (False, report.label_doubts)) for f in listed]
    return pd.DataFrame(rows, columns=["name", "action", "label", "split", "given", "confidence", "likely"])


def apply_fixes(dataset: DatasetSpec | str, exclude: Sequence[str] = (), relabel: Sequence[tuple[str, str]] = (),
                note: str = "") -> Revision:
    """Store the changes as a revision of `dataset`'s source (the files are not touched) and return it; refused with
    the names when an image is not in the data or a class is not one of its classes. Where `dataset` names a
    revision already, the new revision has its changes and these (these win where both name an image)."""
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    exclude, relabel = list(exclude), dict(relabel)
    if spec.revision:
        earlier = load_revision(spec.revision)
        exclude += [n for n in earlier.exclude if n not in relabel]
        relabel = {**{n: c for n, c in earlier.relabel if n not in exclude}, **relabel}
    revision = make_revision(load_source(spec), exclude, relabel.items(), note)
    save_revision(revision)
    return revision


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
    flagged: int  # likely label errors
    true_positives: int
    seed: int = 0  # of the flips and the folds
    listed: int = 0  # likely ones and those worth a look
    listed_true_positives: int = 0

    @property
    def precision(self) -> Optional[float]:
        return self.true_positives / self.flagged if self.flagged else None

    @property
    def recall(self) -> Optional[float]:
        return self.true_positives / self.flipped if self.flipped else None

    @property
    def listed_precision(self) -> Optional[float]:
        return self.listed_true_positives / self.listed if self.listed else None

    @property
    def listed_recall(self) -> Optional[float]:
        return self.listed_true_positives / self.flipped if self.flipped else None


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
                    seeds: Sequence[int] = (0, 1, 2),
                    progress: Optional[Callable[[str], None]] = None) -> list[NoiseCase]:
    """Flip a known share of the labels (at random, and between similar classes) of every labelled image and
    measure the precision and recall of the likely label errors, and of everything listed. The features are computed
    once per dataset and size (the subset drawn with `seed`, cached); each of `seeds` draws other flips and folds."""
    say = progress or (lambda _m: None)
    cases = []
    for name in datasets:
        spec = parse_dataset(name)
        for size in sizes:
            ds, _, every, _ = _features(spec, bb.BackboneSpec(bb.DEFAULT_BACKBONE, "pretrained"), size, seed, None,
                                        default_cache(), CancelToken())
            clean = label_issues(every.x, every.y, ds.num_classes, every.head_l2, seed).probabilities
            ranked = np.argsort(-np.nan_to_num(clean), axis=1)  # the clean check's classes, most probable first
            similar = np.where(ranked[:, 0] == every.y, ranked[:, 1], ranked[:, 0])
            for flip_seed in seeds:
                for fraction in noise:
                    for kind in ("random", "similar"):
                        rng = np.random.default_rng(flip_seed)
                        noisy, flipped = flip_labels(every.y, ds.num_classes, fraction, rng,
                                                     similar if kind == "similar" else None)
                        check = label_issues(every.x, noisy, ds.num_classes, every.head_l2, flip_seed)
                        listed = np.concatenate([check.likely, check.doubts])
                        case = NoiseCase(ds.name, size, fraction, kind, len(noisy), len(flipped), len(check.likely),
                                         int(np.isin(check.likely, flipped).sum()), flip_seed, len(listed),
                                         int(np.isin(listed, flipped).sum()))
                        cases.append(case)
                        say(f"{ds.name} {size}/class {fraction:.0%} {kind} seed {flip_seed}: likely: precision "
                            f"{case.precision or 0:.2f}, recall {case.recall or 0:.2f} ({case.flagged} of "
                            f"{case.flipped} flipped); with those worth a look: {case.listed_precision or 0:.2f} / "
                            f"{case.listed_recall or 0:.2f}")
    return cases


def noise_table(cases: list[NoiseCase]) -> pd.DataFrame:
    return pd.DataFrame([asdict(c) | {"precision": c.precision, "recall": c.recall,
                                      "listed_precision": c.listed_precision, "listed_recall": c.listed_recall}
                         for c in cases])


def noise_summary(cases: list[NoiseCase]) -> pd.DataFrame:
    """Per data, size, noise and kind: the mean and the lowest precision and recall over the seeds."""
    table = noise_table(cases)
    keys = ["dataset", "per_class", "noise", "kind"]
    metrics = ["precision", "recall", "listed_precision", "listed_recall"]
    summary = table.groupby(keys, sort=False)[metrics].agg(["mean", "min"])
    summary.columns = [f"{m} {a}" for m, a in summary.columns]
    return summary.reset_index().assign(seeds=table.groupby(keys, sort=False).size().values)



# -- validation: what the suggested fixes recover ----------------------------------------------------------------------
@dataclass
class CleaningCase:
    """One dataset and size: the test accuracy of each strategy on the original labels, with `noise` of the training
    and validation labels flipped at random, and with the check's suggested fixes applied to the noisy data."""

    dataset: str
    per_class: int
    noise: float
    seed: int  # of the subset, the flips, the folds and the training
    flipped: int
    flagged: int  # training and validation images the fixes exclude
    true_positives: int
    original: dict  # strategy -> test accuracy
    noisy: dict
    cleaned: dict
    revisions: dict  # version -> revision id (each over the same subset: rerun with compare --dataset NAME@ID)
    relabelled: dict = field(default_factory=dict)  # strategy -> accuracy with the flagged images relabelled instead
    relabelled_back: int = 0  # flipped images the suggested label returns to their original class

    def recovered(self, strategy: str, version: str = "cleaned") -> Optional[float]:
        """The share of the accuracy the noise cost that the fixes won back (None when the noise cost nothing)."""
        lost = self.original[strategy] - self.noisy[strategy]
        fixed = getattr(self, version)[strategy]
        return (fixed - self.noisy[strategy]) / lost if lost > 0 else None


def validate_cleaning(datasets: Sequence[str] = ("fashion-mnist", "digits"), sizes: Sequence[int] = (50, 100),
                      noise: float = 0.1, strategies: Sequence[str] = ("feature-extraction", "fine-tune"),
                      preset: str = "default", seeds: Sequence[int] = (0, 1, 2),
                      progress: Optional[Callable[[str], None]] = None) -> list[CleaningCase]:
    """Flip `noise` of the training and validation labels at random, run the health check on the noisy data, apply
    its suggested fixes, and compare each strategy on the original, noisy and cleaned data against the same clean
    test set. Every version is a stored revision over the same training subset (the other training images
    excluded), so the three comparisons differ only in the labels and the images the fixes leave out."""
    say = progress or (lambda _m: None)
    cases = []
    for name, size, seed in ((n, z, s) for n in datasets for z in sizes for s in seeds):
        spec = parse_dataset(name)
        full = load_source(spec)
        subset = load_dataset(replace(spec, per_class=size), seed)
        chosen = set(subset.indices["train"].tolist())
        outside = [full.item_name("train", int(i)) for i in full.indices["train"] if int(i) not in chosen]
        labelled = [(s, int(i)) for s in ("train", "val") for i in subset.indices[s]]
        y = np.array([int(subset.pools[s].labels[i]) for s, i in labelled])
        noisy_y, flipped = flip_labels(y, subset.num_classes, noise, np.random.default_rng(seed))
        relabel = {subset.item_name(*labelled[k]): subset.classes[noisy_y[k]] for k in flipped}
        original = save_revision(make_revision(full, outside))
        noisy = save_revision(make_revision(full, outside, relabel.items()))
        report = health_check(replace(spec, revision=noisy), per_class=None, seed=seed, save=False)
        fixes = suggested_fixes(report)
        fixed = fixes[fixes.action == "exclude"]
        excluded = set(fixed.name)
        cleaned = save_revision(make_revision(full, [*outside, *excluded],
                                              [(n, c) for n, c in relabel.items() if n not in excluded]))
        relabelled = save_revision(make_revision(full, outside, {**relabel, **dict(zip(fixed.name,
                                                                                      fixed.label))}.items()))
        versions = {"original": original, "noisy": noisy, "cleaned": cleaned, "relabelled": relabelled}
        accuracy = {}
        for version, rid in versions.items():
            config = build_config(preset, dataset=replace(spec, revision=rid), per_class="all",
                                  strategies=list(strategies), seed=seed)
            result = compare(config, resume=True)
            accuracy[version] = {r.strategy: r.accuracy for r in result.runs}
            say(f"{name} {size}/class seed {seed} {version}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                               accuracy[version].items() if v is not None))
        true = {subset.item_name(*e): subset.classes[y[k]] for k, e in enumerate(labelled)}
        back = sum(1 for n, c in zip(fixed.name, fixed.label) if n in relabel and c == true[n])
        case = CleaningCase(subset.name, size, noise, seed, len(relabel), len(excluded),
                            len(excluded & set(relabel)), accuracy["original"], accuracy["noisy"],
                            accuracy["cleaned"], versions, accuracy["relabelled"], back)
        cases.append(case)
        won = {k: case.recovered(k) for k in strategies}
        say(f"{name} {size}/class seed {seed}: fixes exclude {case.flagged} ({case.true_positives} of "
            f"{case.flipped} flips); " + ", ".join(f"{k} recovered {'-' if v is None else f'{v:.2f}'}"
                                                  for k, v in won.items()))
    return cases


def cleaning_table(cases: list[CleaningCase]) -> pd.DataFrame:
    rows = []
    for c in cases:
        for strategy in c.original:
            rows.append({"dataset": c.dataset, "per_class": c.per_class, "noise": c.noise, "seed": c.seed,
                         "strategy": strategy,
                         "original": c.original[strategy], "noisy": c.noisy[strategy],
                         "cleaned": c.cleaned[strategy], "recovered": c.recovered(strategy),
                         "relabelled": c.relabelled.get(strategy),
                         "recovered by relabelling": c.recovered(strategy, "relabelled"),
                         "flipped": c.flipped, "excluded": c.flagged, "flips excluded": c.true_positives,
                         "flips relabelled back": c.relabelled_back, "cleaned revision": c.revisions["cleaned"]})
    return pd.DataFrame(rows)


def cleaning_summary(cases: list[CleaningCase]) -> pd.DataFrame:
    """Per dataset, size and strategy, the mean accuracy over the seeds of each version, and the share of what the
    noise cost that the fixes won back, from those means (steadier than a mean of per-seed ratios when the noise
    costs little)."""
    table = cleaning_table(cases)
    means = table.groupby(["dataset", "per_class", "strategy"], sort=False)[
        ["original", "noisy", "cleaned", "relabelled"]].mean().reset_index()
    lost = means.original - means.noisy
    means["recovered"] = (means.cleaned - means.noisy) / lost.where(lost > 0)
    means["recovered by relabelling"] = (means.relabelled - means.noisy) / lost.where(lost > 0)
    means["seeds"] = table.groupby(["dataset", "per_class", "strategy"], sort=False).size().to_numpy()
    return means
