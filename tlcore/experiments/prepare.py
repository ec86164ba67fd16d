"""prepare(config): what every run needs, made in one place: the dataset and its split, the image size and its
checks, timm's transform for the backbone, and the reference model's weights. Comparisons, sweeps, a Ray worker
and the recommendation all start here, so they load, check and preprocess data the same way.

Images are decoded and resized once and reused by every cell that needs them (`cell_data`): in memory while the
process's decoded pixels stay under `IN_MEMORY_BYTES`, and beyond it on disk (tlcore.data.decoded), read back a
batch at a time, so that memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from timm.data import resolve_model_data_config

from tlcore.core.environment import cache_dir, require_writable, resolve_device
from tlcore.data.dataset import Dataset, PreparedImages, prepare_split
from tlcore.data.decoded import DecodedStore, LazyImages, MemoryImages
from tlcore.data.load import load_dataset
from tlcore.engine import backbone as bb
from tlcore.engine.weights import WeightsInfo
from tlcore.experiments.config import ALL, ExperimentConfig, Size

AUTO_MIN, AUTO_MAX = 48, 128  # AUTO_MAX: the cap where there is no GPU
SPLITS = ("train", "val", "test")
# decoded pixels a process keeps in memory; a split that would take it past this is decoded to disk and read back in
# batches instead (docs/benchmarks.md, "Memory flat in dataset size": the built-in default stays in memory)
IN_MEMORY_BYTES = int(os.environ.get("TLCORE_IN_MEMORY_MB", "256")) * 2**20
DECODE_CHUNK = 1024  # images decoded at a time into memory: the list being stacked is never a whole split


def auto_image_size(native: int, device_type: str = "cpu", backbone_size: int = 0) -> int:
    """The automatic input size for images of `native` pixels on a `device_type` ('cuda', 'cpu', 'mps').

    On a CUDA GPU: the backbone's pretrained input size (`backbone_size`, from timm's data config), the scale its
    features were learnt at, even for small images (upsampled), and never more, whatever the images' size.
    Elsewhere: about 1.75x the native size, a multiple of 16 between 48 and 128. On the bundled Fashion-MNIST (28 px)
    the frozen-feature accuracy at 48 px matched 64 px (0.776 vs 0.769) at about half the compute; the 128 px cap keeps
    photos affordable on a CPU."""
    if device_type == "cuda" and backbone_size:
        return int(backbone_size)
    return int(min(AUTO_MAX, max(AUTO_MIN, 16 * int(1.75 * native / 16))))


@dataclass(frozen=True)
class ImageSize:
    """The input size and why it was chosen: results show it next to the images' native size and the backbone's
    pretrained size (`pretrained`, 0 when no strategy uses pretrained weights)."""

    pixels: int
    native: int
    automatic: bool
    pretrained: int = 0
    device: str = "cpu"  # the device type the automatic rule was applied for

    @property
    def capped(self) -> bool:
        return (self.automatic and self.device != "cuda" and self.pixels == AUTO_MAX
                and 1.75 * self.native > AUTO_MAX)

    def describe(self) -> str:
        """'48 px (automatic: about 1.75x the images' 28 px; this backbone was pretrained at 224 px)', '128 px (capped
        on a CPU; the images are 400 px, the backbone was pretrained at 224 px)', ..."""
        pretrained = f"backbone was pretrained at {self.pretrained} px" if self.pretrained else ""
        if not self.automatic:
            return (f"{self.pixels} px (chosen; the images are about {self.native} px"
                    f"{pretrained and ', the ' + pretrained})")
        if self.device == "cuda":
            what = "the backbone's pretrained size" if self.pretrained else "the architecture's default input size"
            return f"{self.pixels} px (automatic on a GPU: {what}; the images are {self.native} px)"
        if self.capped:
            where = "on a CPU" if self.device == "cpu" else f"without a CUDA GPU ({self.device})"
            return (f"{self.pixels} px (capped {where}; the images are {self.native} px"
                    f"{pretrained and ', the ' + pretrained})")
        return (f"{self.pixels} px (automatic: about 1.75x the images' {self.native} px"
                f"{pretrained and '; this ' + pretrained})")


@dataclass
class CellData:
    """One cell's data, preprocessed: the subset's training images, val and test (the same for every cell)."""

    dataset: Dataset
    cfg: dict
    transform_key: str
    splits: dict[str, PreparedImages]


@dataclass
class Prepared:
    """The output of `prepare`: shared, read-only inputs of every cell of a comparison or sweep."""

    config: ExperimentConfig  # with image_size resolved
    dataset: Dataset  # every training image (sub-task classes applied), the fixed val and test splits
    reference: torch.nn.Module  # the template: source head, never trained
    weights: WeightsInfo
    image_size: ImageSize
    data_cfg: dict
    transform_key: str
    device: torch.device
    _transform: object = None
    _decoded: dict = field(default_factory=dict)  # split -> {pool index: uint8 CHW tensor}
    _stores: dict = field(default_factory=dict)  # split -> DecodedStore, for splits beyond IN_MEMORY_BYTES
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def weights_id(self) -> str:
        """Identifies the reference weights (a random template's too: it is seeded and hashed)."""
        return self.weights.sha256 or self.weights.name

    def subset(self, size: Size, seed: int) -> Dataset:
        """The nested per-class subset of the training images for `seed` (val and test unchanged)."""
        return self.dataset.subset(None if size is ALL else size, seed)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.data_cfg["input_size"])

    def _in_memory_bytes(self) -> int:
        return sum(len(done) for done in self._decoded.values()) * int(np.prod(self.image_shape))

    def streams(self, split: str, indices: np.ndarray) -> bool:
        """Whether `split`'s images are served from disk: once a split goes there it stays (one copy of each)."""
        with self._lock:
            if split in self._stores:
                return True
            done = self._decoded.get(split, {})
            new = sum(1 for i in np.unique(indices) if int(i) not in done)
            return self._in_memory_bytes() + new * int(np.prod(self.image_shape)) > IN_MEMORY_BYTES

    def store(self, split: str) -> DecodedStore:
        """The on-disk decoded images of `split` (opened once per process)."""
        with self._lock:
            if split not in self._stores:
                pool = self.dataset.pools[split]
                key = hashlib.sha256(f"{pool.feature_key()}|{self.transform_key}|{self.image_shape}".encode())
                shape = self.image_shape

                def decode(indices: np.ndarray, split=split) -> np.ndarray:
                    images = prepare_split(self.dataset, split, self._transform, indices=indices).images
                    if tuple(images.shape[1:]) != shape:
                        raise ValueError(f"decoded images are {tuple(images.shape[1:])}, expected {shape}")
                    return images.numpy()

                self._stores[split] = DecodedStore(cache_dir() / "decoded" / key.hexdigest()[:24], len(pool),
                                                   shape, decode)
            return self._stores[split]

    def decode(self, split: str, indices: np.ndarray) -> None:
        """Decode and resize the images of `split` at `indices` that are not decoded yet (in memory, or on disk for
        a split beyond IN_MEMORY_BYTES)."""
        if self.streams(split, indices):
            self.store(split).ensure(indices)
            return
        with self._lock:
            done = self._decoded.setdefault(split, {})
            missing = np.array([i for i in np.unique(indices) if int(i) not in done], dtype=np.int64)
            for start in range(0, len(missing), DECODE_CHUNK):
                chunk = missing[start:start + DECODE_CHUNK]
                images = prepare_split(self.dataset, split, self._transform, indices=chunk)
                done.update({int(i): img for i, img in zip(chunk.tolist(), images.images)})

    def _images(self, ds: Dataset, split: str) -> PreparedImages:
        indices = np.asarray(ds.indices[split])
        labels = torch.from_numpy(ds.pools[split].labels[indices].astype(np.int64))
        if self.streams(split, indices):
            return PreparedImages(images=LazyImages(self.store(split), indices), labels=labels, indices=indices)
        self.decode(split, indices)
        return PreparedImages(images=MemoryImages(self._decoded.setdefault(split, {}), indices, self.image_shape),
                              labels=labels, indices=indices)

    def _digests(self, split: str, indices: np.ndarray) -> list[str]:
        if split in self._stores:
            store, out = self.store(split), []
            for start in range(0, len(indices), 2048):
                chunk = np.asarray(indices[start:start + 2048])
                store.ensure(chunk)
                out += [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in store.read(chunk)]
            return out
        return [hashlib.sha1(self._decoded[split][int(i)].numpy().tobytes()).hexdigest() for i in indices]

    def overlap(self, ds: Dataset) -> dict[str, int]:
        """How many val and test images have the very pixels (after preprocessing) of an image in `ds`'s training
        subset: a duplicate in the test set makes its score optimistic."""
        for split in SPLITS:
            self.decode(split, np.asarray(ds.indices[split]))
        train = set(self._digests("train", np.asarray(ds.indices["train"])))
        return {s: int(sum(d in train for d in self._digests(s, np.asarray(ds.indices[s])))) for s in ("val", "test")}

    def cell_data(self, ds: Dataset, splits: tuple[str, ...] = ("train", "val", "test")) -> CellData:
        return CellData(ds, self.data_cfg, self.transform_key, {s: self._images(ds, s) for s in splits})


def prepare(config: ExperimentConfig) -> Prepared:
    """Load and split the data (every training image; cells take their subsets), load the reference model (fails
    early and clearly when pretrained weights cannot be had), resolve and check the image size, build the transform.
    A read-only instance computes nothing: it refuses here, whoever calls."""
    require_writable("train or measure anything")
    dataset = load_dataset(replace(config.dataset, per_class=None), seed=config.seed)
    pretrained = any(s.pretrained for s in config.strategies)
    backbone = config.backbone if pretrained else replace(config.backbone, weights="none")
    reference, weights = bb.load_template(backbone)
    native = dataset.native_size()
    device = resolve_device(config.device)
    backbone_size = int(resolve_model_data_config(reference)["input_size"][-1])
    size = ImageSize(config.image_size or auto_image_size(native, device.type, backbone_size), native,
                     config.image_size is None, backbone_size if pretrained else 0, device.type)
    data_cfg = bb.data_config(reference, size.pixels)
    return Prepared(config=replace(config, image_size=size.pixels), dataset=dataset, reference=reference,
                    weights=weights, image_size=size, data_cfg=data_cfg, transform_key=bb.transform_key(data_cfg),
                    device=device, _transform=bb.eval_transform(data_cfg))
