"""Where a trained network looks: a class-activation map (Grad-CAM, from the well-kept pytorch-grad-cam package) on
the last stage of each strategy's network, for the class it predicts, so feature extraction, fine-tuning and
scratch can be compared on the same image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from tlcore.deploy.load import FeatureExtractionClassifier, Preprocessing


def last_stage(model: torch.nn.Module) -> torch.nn.Module:
    """The module of timm's last feature stage (`feature_info`), inside the feature-extraction wrapper too."""
    net = model.backbone if isinstance(model, FeatureExtractionClassifier) else model
    info = getattr(net, "feature_info", None)
    if info:
        name = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
        return net.get_submodule(name)
    children = [m for m in net.children() if any(p.numel() for p in m.parameters())]
    return children[-2] if len(children) > 1 else children[-1]


def activation_map(model: torch.nn.Module, preprocessing: Preprocessing, image: Image.Image,
                   target: int) -> np.ndarray:
    """The image as the network saw it (resized, cropped) with the map for class `target` laid over it (uint8 RGB)."""
    pixels = preprocessing.pixels(image)
    x = preprocessing.normalize(pixels.unsqueeze(0)).contiguous()
    with GradCAM(model=model, target_layers=[last_stage(model)]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(target))])[0]
    seen = pixels.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    return show_cam_on_image(seen, heat, use_rgb=True)
