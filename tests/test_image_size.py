"""The automatic image size follows the hardware (issue 15, item 6): the backbone's pretrained input size on a CUDA
GPU, about 1.75x the images' native size capped at 128 px elsewhere; results say which, beside the pretrained size."""

from __future__ import annotations

import torch
from conftest import make_image_folder

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.experiments import prepare as prep
from tlcore.experiments.prepare import AUTO_MAX, ImageSize, auto_image_size


def test_rule_on_cpu_and_gpu():
    # CPU (and MPS): about 1.75x native, a multiple of 16, 48 to 128; the backbone's size does not matter
    assert auto_image_size(28, "cpu", 224) == auto_image_size(28) == 48
    assert auto_image_size(64, "cpu", 224) == 112
    assert auto_image_size(400, "cpu", 224) == auto_image_size(400, "mps", 224) == AUTO_MAX == 128
    # CUDA: the backbone's pretrained size, for small and large images alike
    assert auto_image_size(28, "cuda", 224) == auto_image_size(400, "cuda", 224) == 224
    assert auto_image_size(28, "cuda", 160) == 160
    assert auto_image_size(28, "cuda", 0) == 48  # no data config: the CPU rule


def test_description_says_capped_and_pretrained_size():
    assert ImageSize(48, 28, True, 224).describe() == (
        "48 px (automatic: about 1.75x the images' 28 px; this backbone was pretrained at 224 px)")
    capped = ImageSize(128, 400, True, 224, "cpu")
    assert capped.capped and capped.describe() == (
        "128 px (capped on a CPU; the images are 400 px, the backbone was pretrained at 224 px)")
    gpu = ImageSize(224, 400, True, 224, "cuda")
    assert not gpu.capped and "automatic on a GPU" in gpu.describe() and "400 px" in gpu.describe()
    assert not ImageSize(128, 400, False, 224).capped  # chosen, not capped
    assert ImageSize(64, 28, False, 224).describe() == (
        "64 px (chosen; the images are about 28 px, the backbone was pretrained at 224 px)")


def _config(folder, weights, device="cpu") -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=[make_strategy("feature-extraction")], device=device)


def test_prepare_caps_on_cpu_and_names_the_pretrained_size(tmp_path, tiny_weights):
    big = make_image_folder(tmp_path / "big", classes=2, per_class=6, size=100)  # 1.75 x 100 px > 128
    prepared = prep.prepare(_config(big, tiny_weights))
    size = prepared.image_size
    assert (size.pixels, size.native, size.pretrained, size.device) == (128, 100, 160, "cpu")  # test_efficientnet: 160
    assert prepared.config.image_size == 128 and prepared.data_cfg["input_size"] == (3, 128, 128)
    assert size.describe() == "128 px (capped on a CPU; the images are 100 px, the backbone was pretrained at 160 px)"


def test_prepare_on_cuda_uses_the_pretrained_size(tmp_path, tiny_weights, monkeypatch):
    """The GPU branch of prepare without a GPU: only the device it resolves is replaced (nothing runs on it)."""
    monkeypatch.setattr(prep, "resolve_device", lambda device: torch.device("cuda"))
    small = make_image_folder(tmp_path / "small", classes=2, per_class=6, size=28)
    prepared = prep.prepare(_config(small, tiny_weights, device="cuda"))
    assert prepared.image_size.pixels == prepared.config.image_size == 160
    assert prepared.data_cfg["input_size"] == (3, 160, 160)
    assert prepared.image_size.describe() == (
        "160 px (automatic on a GPU: the backbone's pretrained size; the images are 28 px)")
