"""A dataset card: what a team should know about its images before trusting any accuracy figure. Class counts per
split, a few samples per class, image sizes, files that were skipped and why, exact duplicates (by content hash) and
images that appear in both the training and the test data (which inflate test accuracy)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image

from tlcore.data.dataset import SPLIT_NAMES, ArrayPool, Dataset, DatasetSpec, FilePool, ImagePool
from tlcore.data.load import load_dataset


@dataclass
class DatasetCard:
    name: str
    classes: list[str]
    counts: pd.DataFrame  # class x split
    sizes: pd.DataFrame  # width/height: min, median, max
    problems: list[dict]  # skipped files and why
    duplicates: list[list[str]]  # groups of identical images (more than one member)
    train_test_overlap: list[tuple[str, str]]  # (training image, evaluation image) with identical content
    samples: dict[str, list[Image.Image]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _content_hash(pool: ImagePool, index: int) -> str:
    base = getattr(pool, "base", None)
    if base is not None:  # a sub-task: hash the underlying image
        return _content_hash(base, index)
    if isinstance(pool, FilePool):
        return hashlib.sha256(pool.paths[index].read_bytes()).hexdigest()
    if isinstance(pool, ArrayPool):
        return hashlib.sha256(np.ascontiguousarray(pool.images[index]).tobytes()).hexdigest()
    return hashlib.sha256(pool.load(index).tobytes()).hexdigest()


def _size(pool: ImagePool, index: int) -> tuple[int, int]:
    base = getattr(pool, "base", None)
    if base is not None:
        return _size(base, index)
    if isinstance(pool, ArrayPool):
        return int(pool.images.shape[2]), int(pool.images.shape[1])
    if isinstance(pool, FilePool) and pool.sizes:
        return tuple(pool.sizes[index])
    return pool.load(index).size


def dataset_card(dataset: Dataset | DatasetSpec | str, samples_per_class: int = 6, seed: int = 0,
                 max_images: Optional[int] = 20_000) -> DatasetCard:
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    counts = pd.DataFrame({s: pd.Series(ds.counts(s)) for s in SPLIT_NAMES}).reindex(ds.classes)
    hashes: dict[str, list[tuple[str, str]]] = defaultdict(list)  # hash -> [(split, description)]
    seen: set[tuple[int, int]] = set()
    widths, heights = [], []
    for split in SPLIT_NAMES:
        pool = ds.pools[split]
        for i in ds.indices[split][:max_images]:
            key = (id(pool), int(i))
            if key in seen:
                continue
            seen.add(key)
            hashes[_content_hash(pool, int(i))].append((split, pool.describe(int(i))))
            w, h = _size(pool, int(i))
            widths.append(w)
            heights.append(h)
    duplicates = [[d for _, d in members] for members in hashes.values() if len(members) > 1]
    overlap = []
    for members in hashes.values():
        train = [d for s, d in members if s == "train"]
        held_out = [d for s, d in members if s != "train"]
        overlap += [(t, e) for t in train[:1] for e in held_out]
    sizes = pd.DataFrame({"width": widths, "height": heights}).agg(["min", "median", "max"]).T if widths else \
        pd.DataFrame()
    rng = np.random.default_rng(seed)
    samples = {}
    labels = ds.labels("train")
    for c, name in enumerate(ds.classes):
        members = ds.indices["train"][labels == c]
        pick = rng.choice(members, size=min(samples_per_class, len(members)), replace=False) if len(members) else []
        samples[name] = [ds.pools["train"].load(int(i)) for i in pick]
    notes = list(ds.notes)
    if overlap:
        notes.append(f"{len(overlap)} evaluation image(s) also appear in training: test accuracy is inflated; "
                     "remove the copies from one side.")
    if max_images and any(len(ds.indices[s]) > max_images for s in SPLIT_NAMES):
        notes.append(f"Duplicates and sizes checked on the first {max_images:,} images of each split.")
    return DatasetCard(ds.name, ds.classes, counts, sizes, [p.__dict__ for p in ds.problems], duplicates, overlap,
                       samples, notes)
