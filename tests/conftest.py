"""Shared fixtures: tiny real RGB image folders made from scikit-learn's sample photos, tiny timm test models, and a
TLCORE_HOME of each test's own (store, feature cache, uploads), so no outcome depends on which tests ran before."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)
# 'auto' means the CPU in this suite, also on a GPU machine (and in the dashboards it serves): its exact-equality
# tests compare CPU numbers. Tests marked `cuda` name the GPU themselves, and skip without one.
os.environ["TLCORE_DEVICE"] = "cpu"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible: the cuda tests run on a machine with one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, tmp_path_factory, monkeypatch):
    """Each test its own data directory, and a fresh in-memory feature cache over it. The dashboard (app.py, run by
    AppTest in this process) marks the process as serving visitors; that mark is cleared around every test, and the
    data roots admit this session's temporary folders, where the tests' image folders live."""
    from tlcore.engine import features

    home = tmp_path / "tlcore_home"
    monkeypatch.setenv("TLCORE_HOME", str(home))
    monkeypatch.setenv("TLCORE_OFFLINE", "1")
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setattr(features, "_DEFAULT_CACHE", None)
    os.environ.pop("TLCORE_SERVING", None)
    yield home
    os.environ.pop("TLCORE_SERVING", None)


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(img) for img in load_sample_images().images]  # china.jpg, flower.jpg (427 x 640 RGB)


def make_image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 40, seed: int = 0,
                      fmt: str = "png") -> Path:
    """Class k = crops of a distinct region of the real photos, tinted per class: learnable, real RGB content."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        photo = photos[c % len(photos)]
        for i in range(per_class):
            y = int(rng.integers(0, photo.shape[0] - size))
            x = int(rng.integers(0, photo.shape[1] - size))
            crop = photo[y:y + size, x:x + size].astype(np.float32)
            crop[..., c % 3] = np.clip(crop[..., c % 3] * 0.5 + 120, 0, 255)  # a class-specific tint
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            Image.fromarray(crop.astype(np.uint8)).save(d / f"img_{i:03d}.{fmt}")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A state_dict file for timm's `test_efficientnet`, used as 'pretrained' weights from a local file."""
    import timm

    torch.manual_seed(123)
    model = timm.create_model("test_efficientnet", pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "test_efficientnet.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def one_thread():
    """Tiny models: one thread is faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
