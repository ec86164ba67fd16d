"""Predictions of a saved run on new images: files or folders in, top-k classes with probabilities out, in batches of
the size evaluation used (so a run's own test images get exactly its stored predictions)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import pandas as pd
import torch

from tlcore.core.errors import DataError
from tlcore.data.dataset import IMAGE_EXTENSIONS, DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.deploy.load import Preprocessing, load_model
from tlcore.records.models import ModelUnavailable
from tlcore.records.store import Store, default_store

BATCH_SIZE = 128  # as in evaluation (tlcore.engine.train.predict)
MAX_FILES = 100_000


def image_files(inputs: Sequence[Union[str, Path]]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files named or inside the folders named, sorted within each folder; other files are skipped with a
    reason. A path that does not exist is an error naming it."""
    files, skipped = [], []
    for item in map(Path, inputs):
        if not item.exists():
            raise DataError(f"'{item}' does not exist. Give image files or folders of images.")
        candidates = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        for path in candidates:
            if path.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(path)
            else:
                skipped.append((str(path), "not an image file (by extension)"))
    if len(files) > MAX_FILES:
        raise DataError(f"{len(files):,} images given; predict takes at most {MAX_FILES:,} at once. Split them.")
    return files, skipped


@dataclass
class Predictions:
    classes: list[str]
    paths: list[str]
    probabilities: torch.Tensor  # N x classes
    logits: torch.Tensor = None  # N x classes, as the model computed them
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0  # preprocessing excluded: the model's own time, as evaluation measures it

    @property
    def top1(self) -> list[int]:
        return self.logits.argmax(1).tolist()

    @property
    def images_per_second(self) -> float:
        return len(self.paths) / max(self.seconds, 1e-9)

    def frame(self, top_k: int = 3) -> pd.DataFrame:
        k = min(top_k, len(self.classes))
        values, indices = self.probabilities.topk(k, dim=1)
        rows = []
        for path, vals, idx in zip(self.paths, values.tolist(), indices.tolist()):
            row = {"image": path}
            for rank, (v, i) in enumerate(zip(vals, idx), start=1):
                row[f"class_{rank}"], row[f"probability_{rank}"] = self.classes[i], round(v, 6)
            rows.append(row)
        return pd.DataFrame(rows)


def predict_images(model: torch.nn.Module, preprocessing: Preprocessing, images: Sequence[Union[Path, object]],
                   classes: Sequence[str], batch_size: int = BATCH_SIZE) -> Predictions:
    """Top probabilities for image files or PIL images. Files that cannot be used are skipped with their reason."""
    pixels, names, skipped = [], [], []
    for image in images:
        try:
            pil = preprocessing.open(image) if isinstance(image, (str, Path)) else image
            pixels.append(preprocessing.pixels(pil))
            names.append(str(image) if isinstance(image, (str, Path)) else getattr(image, "filename", "image"))
        except DataError as exc:
            skipped.append((str(image), str(exc)))
    logits, seconds = [], 0.0
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            x = preprocessing.normalize(torch.stack(pixels[start:start + batch_size]))
            began = time.perf_counter()
            logits.append(model(x).float())
            seconds += time.perf_counter() - began
    logits = torch.cat(logits) if logits else torch.zeros(0, len(classes))
    return Predictions(list(classes), names, torch.softmax(logits, 1), logits, skipped, seconds)


def predict(run_id: str, inputs: Sequence[Union[str, Path]], batch_size: int = BATCH_SIZE) -> Predictions:
    """`python -m tlcore predict`: a saved run on image files and folders."""
    model, preprocessing = load_model(run_id)
    files, skipped = image_files(inputs)
    if not files:
        raise DataError("No image files found in " + ", ".join(map(str, inputs)) + ".")
    result = predict_images(model, preprocessing, files, model.tlcore_config.classes, batch_size)
    result.skipped = skipped + result.skipped
    return result


def predict_test_images(run_id: str, store: Store | None = None) -> tuple[Predictions, float]:
    """The run on its own test images, loaded and decoded as in training, and the share of top-1 predictions that
    equal the stored ones (1.0: the saved model is the model that was scored)."""
    stored = (store or default_store()).run(run_id)
    if stored is None:
        raise ModelUnavailable(f"No stored run '{run_id}' in this data directory; list runs with the History page.")
    run = stored["run"]
    model, preprocessing = load_model(run_id)
    spec = DatasetSpec(**{k: v for k, v in run.dataset.items() if k in DatasetSpec.__dataclass_fields__})
    dataset = load_dataset(spec, seed=run.seed)
    pool, indices = dataset.pools["test"], dataset.indices["test"]
    images = [pool.load(int(i)) for i in indices]
    result = predict_images(model, preprocessing, images, model.tlcore_config.classes)
    result.paths = [pool.describe(int(i)) for i in indices]
    agreement = float(np.mean(np.array(result.top1) == np.array(run.test_predictions))) if run.test_predictions \
        else float("nan")
    return result, agreement
