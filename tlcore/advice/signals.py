"""The signals a recommendation is made from: what a dataset is (size, balance, classes) and how well and how closely
the frozen pretrained features fit it (k-NN, LogME, linear probe, raw-pixel baseline, LEEP, the source head's
entropy), measured in one frozen forward pass before any training; or, with no data at hand, a description.

The decision made from them is in rules.py; this module only measures.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tlcore.advice.transferability import head_entropy, knn_accuracy, leep, logme, pixel_accuracy
from tlcore.core.environment import require_writable
from tlcore.core.errors import ConfigError
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import parse_dataset
from tlcore.engine import backbone as bb
from tlcore.engine.features import FeatureCache, FeatureContext, default_cache, split_features
from tlcore.engine.rates import machine_rates
from tlcore.engine.strategies import make_strategy
from tlcore.engine.train import fit_linear_head
from tlcore.experiments.config import ExperimentConfig, parse_size
from tlcore.experiments.prepare import prepare

MAX_SCORED = 2000  # training images the scores are computed on (a per-class sample above this)


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
    knn_accuracy: float | None = None
    logme: float | None = None
    linear_probe_accuracy: float | None = None
    pixel_accuracy: float | None = None
    head_entropy: float | None = None
    leep: float | None = None
    similarity: float = 0.5
    similarity_basis: str = ""
    image_size: int = 0
    device: str = "cpu"  # where the forward pass and the rates were measured: a confirmation runs there too
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


def similarity_score(leep_value: float | None, linear_probe: float | None, pixels: float | None,
                     classes: int) -> tuple[float, str]:
    """0 (nothing like the pretraining data) to 1 (just like it): the mean of two measurements.

    - normalised LEEP, 1 + LEEP / log(classes): how well the original ImageNet head's beliefs predict these labels
      (0: no better than the class prior, 1: they determine the label);
    - the frozen features' lead over raw pixels, (linear probe - pixel baseline) / (1 - chance), scaled so that a
      lead of +0.2 reads 1 and -0.2 reads 0.

    The source head's entropy is reported but not used: the head is as sure of itself on grey clothing and 8x8 digits
    as on photos, so it does not separate near from far domains."""
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


def _pixels(images, size: int = 16, rows: int = 2048) -> np.ndarray:
    """Grey 16x16 thumbnails, a chunk of images at a time (the images may be read from disk)."""
    out = [F.adaptive_avg_pool2d(images[start:start + rows].float().mean(1, keepdim=True), size).flatten(1).numpy()
           for start in range(0, len(images), rows)]
    return np.concatenate(out) if out else np.zeros((0, size * size), dtype=np.float32)


def measure(dataset: DatasetSpec | str, backbone: bb.BackboneSpec | str = bb.BackboneSpec(),
            per_class: int | None = None, seed: int = 0, image_size: int | None = None,
            cache: FeatureCache | None = None, device: str = "auto") -> Signals:
    """One forward pass over the training (and val) images with the frozen backbone, then the scores. The test split
    is never touched. Refused in read-only mode (a demo browses, it does not compute).

    `device` is resolved as for a comparison (`auto`: a GPU when there is one), so the image size and the training
    rates are those of the runs the recommendation is about, not the CPU's."""
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
    dev = prepared.device
    context = FeatureContext(model=template, backbone_name=backbone.name, weights_sha=prepared.weights_id, dataset=ds,
                             splits=splits, cfg=data.cfg, transform_key=data.transform_key, device=dev,
                             cache=cache or default_cache())
    extract_start = time.perf_counter()
    feats = {s: split_features(context, s) for s in splits}
    extract_seconds = time.perf_counter() - extract_start
    y = {s: splits[s].labels.numpy() for s in splits}
    counts = np.bincount(y["train"], minlength=ds.num_classes)
    chance = 1.0 / ds.num_classes
    signals = Signals(dataset=ds.name, data_fingerprint=ds.source_fingerprint(), backbone=backbone.name,
                      weights=prepared.weights_id, classes=ds.num_classes,
                      images_per_class=float(counts.mean()), min_per_class=int(counts.min()),
                      max_per_class=int(counts.max()), native_size=ds.native_size(), chance=chance,
                      image_size=size, device=dev.type, train_images=int(counts.sum()),
                      val_images=len(ds.indices["val"]), test_images=len(ds.indices["test"]),
                      extract_seconds=round(extract_seconds, 2),
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
