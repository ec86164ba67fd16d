"""The MLflow pyfunc a logged run carries (tlcore.deploy.tracking), so that `mlflow models serve` or
`mlflow.pyfunc.load_model` predicts as `tlcore predict` does: the same network, rebuilt from the whole of its weights
(export's safetensors: neither the run store nor the backbone's original weights are needed), fed by tlcore's own
preprocessing (the same RGB conversion, timm eval transform and normalisation), in batches of the size evaluation
used.

Input, one image a row: a DataFrame (its `image` column, else its first), a list, a Series or a dict with `image`,
holding file paths (read on the machine that serves the model), base64 strings (as JSON carries images, optionally
as a `data:` URL), bytes, PIL images or uint8 arrays (H x W, H x W x 3); or one numeric array of images
(N x H x W x 3). Output: the `tlcore predict` table with every class ranked: image, class_1, probability_1, ...

The model is logged as code (MLflow's "models from code"): this file goes with it and MLflow runs it to get the
model, so nothing is unpickled. Importing it needs mlflow; tlcore imports it only when logging."""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from tlcore.core.errors import DataError
from tlcore.data.dataset import to_rgb
from tlcore.deploy.load import FeatureExtractionClassifier, Preprocessing, build_model
from tlcore.deploy.predict import BATCH_SIZE, Predictions
from tlcore.records.models import ModelConfig

ARTIFACT = "tlcore_model"  # the pyfunc's artifact: the export folder (model.safetensors, model.json, MODEL_CARD.md)
BACKBONE = "backbone."  # feature extraction: the frozen backbone's tensors in the whole state, beside the head's
MAX_PATH_CHARS = 4096  # a string longer than this is never taken for a file path


def input_items(model_input: Any) -> list:
    """The images of a pyfunc input, one per row (see the module docstring for the shapes taken)."""
    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        return list(model_input[column])
    if isinstance(model_input, dict):
        return input_items(model_input["image"] if "image" in model_input else next(iter(model_input.values())))
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "uifb":
        one_image = model_input.ndim == 2 or (model_input.ndim == 3 and model_input.shape[-1] in (1, 3, 4))
        return [model_input] if one_image else list(model_input)
    if isinstance(model_input, (str, bytes, bytearray, Path, Image.Image)):
        return [model_input]
    return list(np.asarray(model_input, dtype=object).ravel()) if isinstance(model_input, np.ndarray) else \
        list(model_input)


def _from_array(item: Any) -> Image.Image:
    array = np.asarray(item)
    if array.dtype.kind not in "uifb" or array.ndim not in (2, 3) or array.size == 0:
        raise DataError(f"an image array must be H x W or H x W x 3 numbers 0-255, not shape {array.shape} of "
                        f"{array.dtype}")
    array = np.clip(array, 0, 255).astype(np.uint8)
    return to_rgb(Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array))


def _decode_text(text: str, preprocessing: Preprocessing) -> Image.Image:
    """A file path, a base64 string or a base64 `data:` URL."""
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    elif len(text) <= MAX_PATH_CHARS and Path(text).is_file():
        return preprocessing.open(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("a string must be an image file's path on the serving machine, or an image in base64") \
            from None
    return preprocessing.open(io.BytesIO(raw))


def decode(item: Any, preprocessing: Preprocessing) -> Image.Image:
    """One input as the RGB image `tlcore predict` would have decoded from the same file."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, (bytes, bytearray)):
        return preprocessing.open(io.BytesIO(bytes(item)))
    if isinstance(item, Path):
        return preprocessing.open(str(item))
    if isinstance(item, str):
        return _decode_text(item, preprocessing)
    return _from_array(item)


def _name(item: Any, index: int) -> str:
    """Paths name their row as `tlcore predict` names it; anything else by its position."""
    if isinstance(item, Path) or (isinstance(item, str) and len(item) <= MAX_PATH_CHARS and Path(item).is_file()):
        return str(item)
    return str(index)


def rebuild(config: ModelConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The run's network from the whole of its weights, as tlcore.deploy.load builds it from the run store: the same
    modules and arithmetic, so the same logits."""
    if config.kind != "feature-extraction":
        return build_model(config, state)
    backbone = timm.create_model(config.timm_name, pretrained=False)  # the template's architecture (backbone.py)
    backbone.load_state_dict({k[len(BACKBONE):]: v for k, v in state.items() if k.startswith(BACKBONE)})
    model = FeatureExtractionClassifier(backbone.eval(), state["weight"], state["bias"])
    return model.eval().to(memory_format=torch.channels_last)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """A tlcore run as an MLflow pyfunc: images in, every class with its probability out."""

    _skip_type_hint_validation = True  # takes several input shapes on purpose (MLflow would validate type hints)

    def load_context(self, context) -> None:
        folder = Path(context.artifacts[ARTIFACT])
        self.config = ModelConfig.from_dict(json.loads((folder / "model.json").read_text()))
        self.classes = list(self.config.classes)
        self.preprocessing = Preprocessing(self.config.preprocessing)
        self.network = rebuild(self.config, load_file(str(folder / "model.safetensors")))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        items = input_items(model_input)
        logits = []
        with torch.inference_mode():
            for start in range(0, len(items), BATCH_SIZE):
                batch = []
                for i, item in enumerate(items[start:start + BATCH_SIZE], start=start):
                    try:
                        batch.append(self.preprocessing.pixels(decode(item, self.preprocessing)))
                    except DataError as exc:
                        raise DataError(f"image {i}: {exc}") from None
                logits.append(self.network(self.preprocessing.normalize(torch.stack(batch))).float())
        logits = torch.cat(logits) if logits else torch.zeros(0, len(self.classes))
        names = [_name(item, i) for i, item in enumerate(items)]
        return Predictions(self.classes, names, torch.softmax(logits, 1), logits).frame(top_k=len(self.classes))


if __name__ != "tlcore.deploy.pyfunc":  # run by MLflow as a logged model's code, not imported as part of tlcore
    mlflow.models.set_model(ImageClassifier())
