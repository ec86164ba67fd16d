"""load_model(run_id): a saved run's network in eval mode and the preprocessing it was trained with, rebuilt so that
it computes exactly what the run computed (same frozen modules, same memory layout, same head arithmetic), so a
prediction on the run's own test images reproduces its stored predictions."""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import timm
import torch
from PIL import Image

from tlcore.core.errors import DataError
from tlcore.data.dataset import MAX_PIXELS, header_size, open_rgb, over_pixel_limit
from tlcore.engine import backbone as bb
from tlcore.engine.features import Normalizer
from tlcore.records.models import ModelConfig, ModelUnavailable, find_model, read_config, read_weights

WEIGHTS_ARGUMENT = {"packaged": "packaged", "hub": "hub", "none": "none"}  # source -> load_pretrained's argument


class FeatureExtractionClassifier(torch.nn.Module):
    """The frozen backbone's pooled features, then the new head: `features @ W.T + b`, the very arithmetic with which
    feature extraction scored its test images on cached features."""

    def __init__(self, backbone: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return features @ self.weight.T + self.bias


@dataclass
class Preprocessing:
    """Image file or PIL image -> the tensor the model saw in training: the same RGB conversion (grey, RGBA onto
    white, palette, 16-bit), timm's eval transform, then normalisation in channels_last."""

    config: dict
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        self.transform = bb.eval_transform(self.config)
        self.normalize = Normalizer(self.config, torch.device("cpu"), channels_last=True)

    def open(self, path: Union[str, Path, BinaryIO]) -> Image.Image:
        """An image file (or an uploaded file's bytes) as RGB, refusing non-images and images over the pixel limit
        (read from the header, however far above it: Pillow's own decompression-bomb limit plays no part) with a
        message naming them."""
        path = Path(path) if isinstance(path, str) else path
        name = getattr(path, "name", "the image")
        try:
            with warnings.catch_warnings():  # a few formats (GIF frames, ICO, ...) run Pillow's check on the header
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                size = header_size(path)
        except OSError:
            size = None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(self._bomb_message(name, exc)) from None
        if size is None:
            raise DataError(f"'{name}' is not an image Pillow can read; give JPEG, PNG, BMP, GIF, TIFF or WebP "
                            "files.")
        over = over_pixel_limit(size, self.max_pixels)
        if over:
            raise DataError(f"'{name}' is {over}. Downscale it first.")
        if hasattr(path, "seek"):
            path.seek(0)
        try:
            return open_rgb(path)
        except Image.DecompressionBombError as exc:
            raise DataError(self._bomb_message(name, exc)) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"'{name}' could not be decoded ({exc}); replace the file.") from None

    def _bomb_message(self, name: str, exc: Exception) -> str:
        """Pillow's decompression-bomb check, said as the pixel rule says it (its own text never reaches a user)."""
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found[1]) if found else None
        if pixels is not None and pixels > self.max_pixels:
            return (f"'{name}' is {pixels / 1e6:,.0f} megapixels; the limit is {self.max_pixels / 1e6:,.0f} "
                    "megapixels an image. Downscale it first.")
        return (f"'{name}' is larger than Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,} pixels) set "
                "in this process. Downscale it first.")

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """uint8 CHW, exactly as the training images were prepared (decoded once, resized, cropped)."""
        return torch.from_numpy(np.asarray(self.transform(image), dtype=np.uint8))

    def __call__(self, image: Union[Image.Image, str, Path]) -> torch.Tensor:
        image = self.open(image) if isinstance(image, (str, Path)) else image
        return self.normalize(self.pixels(image).unsqueeze(0))


def _backbone(config: ModelConfig) -> torch.nn.Module:
    """The template the run started from, with its weights checked against the recorded sha256."""
    source = config.backbone_weights.get("source", "none")
    argument = WEIGHTS_ARGUMENT.get(source, config.backbone_weights.get("name", ""))
    template, info = bb.load_template(bb.BackboneSpec(config.timm_name, argument))
    recorded = config.backbone_weights.get("sha256")
    if recorded and info.sha256 and recorded != info.sha256:
        raise ModelUnavailable(f"Run {config.run_id} was trained from {config.timm_name} weights with sha256 "
                               f"{recorded[:12]}..., but the weights found here ({source}) have {info.sha256[:12]}...: "
                               "install the same weights, or train the run again.")
    return template


def build_model(config: ModelConfig, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network as it was at the end of the run, in eval mode and channels_last."""
    if config.kind == "feature-extraction":
        backbone = copy.deepcopy(_backbone(config))
        head = {k.rsplit(".", 1)[-1]: v for k, v in weights.items()}
        model = FeatureExtractionClassifier(backbone, head["weight"], head["bias"])
    else:
        model = timm.create_model(config.timm_name, pretrained=False, num_classes=config.num_classes)
        groups = bb.stage_groups(model)
        bb.freeze_groups(model, groups[:config.frozen_groups])  # the same modules as in training (FrozenBatchNorm)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
            raise ModelUnavailable(f"The weights of run {config.run_id} do not fit {config.timm_name}: missing "
                                   f"{missing[:3]}, unexpected {unexpected[:3]}.")
    return model.eval().to(memory_format=torch.channels_last)


def load_model(run_id: str) -> tuple[torch.nn.Module, Preprocessing]:
    """A saved run's model (eval mode) and its preprocessing. Raises ModelUnavailable saying why there is none."""
    folder = find_model(run_id)
    config = read_config(folder)
    model = build_model(config, read_weights(folder))
    model.tlcore_config = config  # what it is, for callers that only hold the module
    return model, Preprocessing(config.preprocessing)
