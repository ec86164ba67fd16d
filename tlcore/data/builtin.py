"""Built-in datasets: the bundled Fashion-MNIST subset and scikit-learn digits (always offline), the full
Fashion-MNIST from Debian's package or torchvision, and torchvision datasets when cached or downloadable."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torchvision.datasets as tvd
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.datasets import FashionMNIST

from tlcore.core.environment import data_home, hub_reachable
from tlcore.core.errors import DataError
from tlcore.data.dataset import ArrayPool, Dataset, DatasetSpec, ImagePool, dataset_from_pools, to_rgb

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
BUNDLED_FASHION_MNIST = Path(__file__).parent / "assets" / "fashion_mnist_subset.npz"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class BuiltinInfo:
    description: str
    offline: bool  # always available without a network
    loader: Callable[[DatasetSpec], Dataset]


def read_fashion_mnist_idx(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the original idx files (gzip or raw): images start at byte 16, labels at byte 8."""
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind, offset in (("images-idx3-ubyte", 16), ("labels-idx1-ubyte", 8)):
        for name in (f"{prefix}-{kind}.gz", f"{prefix}-{kind}"):
            path = folder / name
            if path.exists():
                raw = gzip.open(path).read() if name.endswith(".gz") else path.read_bytes()
                arrays.append(np.frombuffer(raw, dtype=np.uint8, offset=offset))
                break
        else:
            raise DataError(f"Fashion-MNIST file {folder / (prefix + '-' + kind + '.gz')} is missing.")
    images, labels = arrays
    return images.reshape(-1, 28, 28).copy(), labels.astype(np.int64)


def _fashion_mnist(spec: DatasetSpec) -> Dataset:
    with np.load(BUNDLED_FASHION_MNIST) as z:
        classes = [str(c) for c in z["classes"]]
        train = ArrayPool(z["train_images"], z["train_labels"], classes, "fashion-mnist/train")
        test = ArrayPool(z["test_images"], z["test_labels"], classes, "fashion-mnist/test")
    return dataset_from_pools("fashion-mnist", spec, train, test_pool=test)


def _fashion_mnist_full(spec: DatasetSpec) -> Dataset:
    folder = None
    for candidate in (DEBIAN_FASHION_MNIST, data_home() / "datasets" / "FashionMNIST" / "raw"):
        if (candidate / "train-images-idx3-ubyte.gz").exists() or (candidate / "train-images-idx3-ubyte").exists():
            folder = candidate
            break
    if folder is None:
        if not hub_reachable("ossci-datasets.s3.amazonaws.com"):
            raise DataError("The full Fashion-MNIST (60k/10k) is not on this machine and cannot be downloaded "
                            "(offline). Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                            "or use the bundled subset 'fashion-mnist'.")

        FashionMNIST(str(data_home() / "datasets"), train=True, download=True)
        FashionMNIST(str(data_home() / "datasets"), train=False, download=True)
        folder = data_home() / "datasets" / "FashionMNIST" / "raw"
    tr_x, tr_y = read_fashion_mnist_idx(folder, "train")
    te_x, te_y = read_fashion_mnist_idx(folder, "test")
    train = ArrayPool(tr_x, tr_y, FASHION_MNIST_CLASSES, "fashion-mnist-full/train")
    test = ArrayPool(te_x, te_y, FASHION_MNIST_CLASSES, "fashion-mnist-full/test")
    return dataset_from_pools("fashion-mnist-full", spec, train, test_pool=test)


def _digits(spec: DatasetSpec) -> Dataset:

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 grey levels to 0..255
    pool = ArrayPool(images, bunch.target, [str(d) for d in range(10)], "digits")
    return dataset_from_pools("digits", spec, pool)


class TorchvisionPool(ImagePool):
    """A torchvision dataset seen as a pool; labels are read from its attributes without decoding images."""

    def __init__(self, dataset, classes: list[str], name: str) -> None:
        self.dataset = dataset
        labels = getattr(dataset, "targets", None)
        if labels is None:
            labels = getattr(dataset, "_labels", None)
        if labels is None:
            labels = [dataset[i][1] for i in range(len(dataset))]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes
        self.name = name

    def load(self, index: int) -> Image.Image:

        img = self.dataset[index][0]
        return to_rgb(img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img)))

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def fingerprint(self) -> str:

        h = hashlib.sha256(f"{self.name}|{len(self.labels)}".encode())
        h.update(self.labels.tobytes())
        return h.hexdigest()[:16]

    def native_size(self) -> int:
        data = getattr(self.dataset, "data", None)
        if isinstance(data, np.ndarray) and data.ndim >= 3:
            return int(max(data.shape[1:3]))
        return 224


# name -> (torchvision class name, {split: constructor kwargs}, classes attribute or None)
TORCHVISION_DATASETS: dict[str, tuple[str, dict[str, dict], str]] = {
    "cifar10": ("CIFAR10", {"train": {"train": True}, "test": {"train": False}}, "classes"),
    "cifar100": ("CIFAR100", {"train": {"train": True}, "test": {"train": False}}, "classes"),
    "flowers102": ("Flowers102", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}, ""),
    "oxford-pets": ("OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}}, "classes"),
    "eurosat": ("EuroSAT", {"train": {}}, "classes"),
    "dtd": ("DTD", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}, "classes"),
}


def _torchvision(name: str) -> Callable[[DatasetSpec], Dataset]:
    def load(spec: DatasetSpec) -> Dataset:

        cls_name, splits, classes_attr = TORCHVISION_DATASETS[name]
        cls = getattr(tvd, cls_name)
        root = str(data_home() / "datasets")
        pools: dict[str, ImagePool] = {}
        for split, kwargs in splits.items():
            try:
                ds = cls(root, download=False, **kwargs)
            except (RuntimeError, FileNotFoundError):
                if not hub_reachable("download.pytorch.org"):
                    raise DataError(
                        f"'{name}' is not cached in {root} and this machine is offline. On a machine with internet, "
                        f"run `python -c \"import torchvision; torchvision.datasets.{cls_name}('{root}', "
                        f"download=True)\"` (or run tlcore there once) and copy {root} here; or set TLCORE_HOME to "
                        "where it is cached.") from None
                ds = cls(root, download=True, **kwargs)
            classes = list(getattr(ds, classes_attr)) if classes_attr else None
            if classes is None:
                n = int(np.max(getattr(ds, "_labels"))) + 1
                classes = [str(i) for i in range(n)]
            pools[split] = TorchvisionPool(ds, classes, f"{name}/{split}")
        return dataset_from_pools(name, spec, pools["train"], test_pool=pools.get("test"), val_pool=pools.get("val"))

    return load


BUILTIN_DATASETS: dict[str, BuiltinInfo] = {
    "fashion-mnist": BuiltinInfo("Fashion-MNIST subset bundled with tlcore: 700 train + 100 test images a class, "
                                 "28x28 grey, 10 classes (Zalando Research, MIT)", True, _fashion_mnist),
    "digits": BuiltinInfo("scikit-learn's handwritten digits: 1,797 images, 8x8 grey, 10 classes", True, _digits),
    "fashion-mnist-full": BuiltinInfo("Full Fashion-MNIST, 60k/10k (Debian's dataset-fashion-mnist or a torchvision "
                                      "download)", False, _fashion_mnist_full),
}
for _name, (_cls, _splits, _attr) in TORCHVISION_DATASETS.items():
    BUILTIN_DATASETS[_name] = BuiltinInfo(f"torchvision {_cls} (downloaded or cached)", False, _torchvision(_name))


def load_builtin(spec: DatasetSpec) -> Dataset:
    return BUILTIN_DATASETS[spec.source].loader(spec)


def builtin_available(name: str) -> Optional[str]:
    """None when the dataset can be loaded now without a network, else a short reason."""
    if BUILTIN_DATASETS[name].offline:
        return None
    if name == "fashion-mnist-full":
        return None if DEBIAN_FASHION_MNIST.exists() else "not installed (apt-get install dataset-fashion-mnist)"
    return None if os.path.isdir(data_home() / "datasets") else "needs a download"
