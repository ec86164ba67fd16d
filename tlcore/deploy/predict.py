"""Predictions of a saved run on new images: files or folders in, top-k classes with probabilities out, in batches of
the size evaluation used (so a run's own test images get exactly its stored predictions)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from PIL import Image

from tlcore.core.errors import DataError
from tlcore.data.dataset import IMAGE_EXTENSIONS, DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.deploy.images import NOT_AN_IMAGE, NamedImage, folder_images
from tlcore.deploy.load import Preprocessing, load_model
from tlcore.deploy.skipped import summarize_skipped
from tlcore.engine.throughput import THROUGHPUT_IMAGES, Throughput, pixels_throughput
from tlcore.records.models import ModelUnavailable
from tlcore.records.store import Store, default_store

BATCH_SIZE = 128  # as in evaluation (tlcore.engine.train.predict)
MAX_FILES = 100_000
IMAGES_WANTED = "Give JPEG, PNG, BMP, GIF, TIFF or WebP images of at most 50 megapixels each."


def image_files(inputs: Sequence[Union[str, Path]]) -> tuple[list[NamedImage], list[tuple[str, str]]]:
    """The image files named or inside the folders named, sorted within each folder; other files are skipped with a
    reason. One folder given: its files are named by their path inside it, as the dashboard names the files of a
    folder or a zip (tlcore.deploy.images); several inputs: by the path given. A path that does not exist is an
    error naming it."""
    files, skipped = [], []
    for item in map(Path, inputs):
        if not item.exists():
            raise DataError(f"'{item}' does not exist. Give image files or folders of images.")
        if item.is_dir():
            found, left_out = folder_images(item, "" if len(inputs) == 1 else item.as_posix().rstrip("/") + "/")
            files += found
            skipped += left_out
        elif item.name.startswith("."):
            continue
        elif item.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(NamedImage(str(item), partial(Path, item)))
        else:
            skipped.append((str(item), NOT_AN_IMAGE))
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
    seconds: float = 0.0  # preprocessing excluded: the model's own time over every image
    throughput: Optional[Throughput] = None  # the comparison's protocol (tlcore.engine.throughput), with the load

    @property
    def top1(self) -> list[int]:
        return self.logits.argmax(1).tolist()

    @property
    def images_per_second(self) -> float:
        """Measured as a comparison measures its models (the same protocol), so the two figures agree."""
        if self.throughput is not None:
            return self.throughput.images_per_second
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


def _name(image: Union[Path, str, NamedImage, Image.Image]) -> str:
    if isinstance(image, NamedImage):
        return image.name
    return str(image) if isinstance(image, (str, Path)) else getattr(image, "filename", "") or "image"


def _decode(preprocessing: Preprocessing, image: Union[Path, str, NamedImage, Image.Image]) -> torch.Tensor:
    """One image as the model's uint8 input; a DataError says why it cannot be used."""
    if isinstance(image, NamedImage):
        image = image.open()
    pil = preprocessing.open(image) if not isinstance(image, Image.Image) else image
    return preprocessing.pixels(pil)


def _decoded_batches(preprocessing: Preprocessing, images: Sequence, batch_size: int, names: list[str],
                     skipped: list[tuple[str, str]]) -> Iterator[tuple[torch.Tensor, int]]:
    """(uint8 batch, images handled so far): decoded one batch at a time, so no more than a batch of decoded images
    waits for the model. Names of the images used go to `names`, the others with their reason to `skipped`."""
    batch: list[torch.Tensor] = []
    for done, image in enumerate(images, start=1):
        try:
            batch.append(_decode(preprocessing, image))
            names.append(_name(image))
        except DataError as exc:
            skipped.append((_name(image), str(exc)))
        if len(batch) == batch_size:
            stacked, batch = torch.stack(batch), []
            yield stacked, done
    if batch:
        yield torch.stack(batch), len(images)


def predict_images(model: torch.nn.Module, preprocessing: Preprocessing, images: Sequence[Union[Path, object]],
                   classes: Sequence[str], batch_size: int = BATCH_SIZE,
                   progress: Optional[Callable[[int, int, float], None]] = None) -> Predictions:
    """Top probabilities for image files, NamedImages (tlcore.deploy.images) or PIL images, decoded and predicted
    batch by batch: memory holds one batch of decoded images, plus the first THROUGHPUT_IMAGES for the throughput
    measurement. Files that cannot be used are skipped with their reason. `progress(done, total, seconds)` is called
    after each batch: images handled (used or skipped), of how many, wall-clock seconds since the start."""
    pixels, names, skipped = [], [], []  # pixels: the throughput measurement's images
    logits, seconds, started, done = [], 0.0, time.perf_counter(), 0
    with torch.inference_mode():
        for batch, done in _decoded_batches(preprocessing, images, batch_size, names, skipped):
            pixels += list(batch[:max(0, THROUGHPUT_IMAGES - len(pixels))])
            x = preprocessing.normalize(batch)
            began = time.perf_counter()
            logits.append(model(x).float())
            seconds += time.perf_counter() - began
            if progress:
                progress(done, len(images), time.perf_counter() - started)
    if progress and done < len(images):  # the last images were all skipped
        progress(len(images), len(images), time.perf_counter() - started)
    logits = torch.cat(logits) if logits else torch.zeros(0, len(classes))
    throughput = pixels_throughput(model, preprocessing.normalize, pixels)
    return Predictions(list(classes), names, torch.softmax(logits, 1), logits, skipped, seconds, throughput)


def predict_named(model: torch.nn.Module, preprocessing: Preprocessing, images: Sequence[NamedImage],
                  skipped: list[tuple[str, str]], where: str, batch_size: int = BATCH_SIZE,
                  progress: Optional[Callable[[int, int, float], None]] = None) -> Predictions:
    """`predict_images` on the images found in `where` (files, a folder, a zip), the files left out before them
    (`skipped`) listed first. No image, or none that could be used, is an error naming the reasons."""
    if not images:
        raise DataError(f"No image files in {where}" + (f": {len(skipped)} file(s) left out, "
                                                       f"{summarize_skipped(skipped)}" if skipped else "") +
                        f". {IMAGES_WANTED}")
    result = predict_images(model, preprocessing, images, model.tlcore_config.classes, batch_size, progress)
    result.skipped = skipped + result.skipped
    if not result.paths:
        raise DataError(f"No image in {where} could be used: {summarize_skipped(result.skipped)}. {IMAGES_WANTED}")
    return result


def predict(run_id: str, inputs: Sequence[Union[str, Path]], batch_size: int = BATCH_SIZE,
            progress: Optional[Callable[[int, int, float], None]] = None) -> Predictions:
    """`python -m tlcore predict`: a saved run on image files and folders."""
    model, preprocessing = load_model(run_id)
    files, skipped = image_files(inputs)
    where = ", ".join(f"'{i}'" for i in inputs)
    return predict_named(model, preprocessing, files, skipped, where, batch_size, progress)


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
