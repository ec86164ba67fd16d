"""Frozen-backbone features: one fast forward pass per image, cached in memory and on disk.

The cache is keyed by backbone, weights sha256, the image pool's pixels (`feature_key`) and the preprocessing; it
stores rows by pool index, so a smaller nested subset (or the val/test split of a second run) is served without any
forward pass and a larger one computes only the rows it lacks.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from tlcore.data.dataset import Dataset, PreparedImages
from tlcore.data.decoded import DecodedStore, LazyImages
from tlcore.core.environment import cache_dir
from tlcore.core.progress import Reporter

FEATURE_VERSION = 1


class Normalizer:
    """uint8 NCHW batch -> normalised float batch on the device (timm's prefetcher convention: mean, std x 255)."""

    def __init__(self, cfg: dict, device: torch.device, channels_last: bool = True) -> None:
        self.mean = torch.tensor([m * 255 for m in cfg["mean"]], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([s * 255 for s in cfg["std"]], device=device).view(1, 3, 1, 1)
        self.device = device
        self.channels_last = channels_last

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).float().sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class _Embed(torch.nn.Module):
    """forward_features + forward_head(pre_logits=True): the pooled features the classifier sees."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


@dataclass
class ExtractOptions:
    """How features are computed. Defaults are what won benchmarks/bench_engine.py part 1 on CPU: prepared uint8
    images, batches of 128, channels_last, inference_mode, and fp32 on every device: their test rows score feature
    extraction (tlcore.engine.precision). `bf16` is for measuring only."""

    batch_size: int = 128
    channels_last: bool = True
    bf16: bool = False


def computed_as(options: ExtractOptions, device: torch.device) -> str:
    """'cpu|fp32', 'cuda|fp32', ...: how features are computed, part of their cache key."""
    return f"{device.type}|{'bf16' if options.bf16 else 'fp32'}"


def extract_features(model: torch.nn.Module, images: torch.Tensor, cfg: dict, device: torch.device,
                     options: Optional[ExtractOptions] = None, reporter: Optional[Reporter] = None,
                     progress_span: tuple[float, float] = (0.0, 1.0), embedding=None,
                     phase: str = "features") -> torch.Tensor:
    """Pooled pre-logit features for uint8 images, float32 on the CPU. The model is not modified. `embedding(model)`
    makes another module to run the same way (the layer-wise probe's, tlcore.advice.probe; fine-tune's frozen
    stages, reported as `phase`); its `num_features`, if it has one, is the width of an empty result."""
    options = options or ExtractOptions()
    if len(images) == 0:
        width = getattr(model, "num_features", 0) if embedding is None else getattr(embedding(model), "num_features", 0)
        return torch.zeros(0, width)
    norm = Normalizer(cfg, device, options.channels_last)
    bs = options.batch_size
    modes = {m: m.training for m in model.modules()}
    model = _placed(model, device, options.channels_last).eval()
    embed = _Embed(model) if embedding is None else embedding(model)
    use_autocast = options.bf16
    out = []
    n_batches = (len(images) + bs - 1) // bs
    lo, hi = progress_span
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            for b, start in enumerate(range(0, len(images), bs)):
                x = norm(images[start:start + bs])
                out.append(embed(x).float().cpu())
                if reporter:
                    reporter(phase, lo + (hi - lo) * (b + 1) / n_batches, batch=b + 1, batches=n_batches)
    finally:
        for module, training in modes.items():  # the caller's model keeps its modes (a shared template's too)
            module.training = training
    return torch.cat(out)


def _placed(model: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """`model` on `device` in the memory format asked for, without changing the caller's: `nn.Module.to` moves a
    module in place, and the model may be the process's shared template (tlcore.engine.backbone.load_template), which
    another thread may be using on another device. A copy is made only when something must change."""
    tensors = [*model.parameters(), *model.buffers()]
    on_device = all(t.device == device or (t.device.type == device.type and device.index is None) for t in tensors)
    in_format = not channels_last or all(t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last)
                                         for t in model.parameters())
    if on_device and in_format:
        return model
    placed = copy.deepcopy(model).to(device)
    return placed.to(memory_format=torch.channels_last) if channels_last else placed


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    rows_computed: int = 0
    rows_reused: int = 0


# rows computed and written at a time: what a run killed part way loses at most
CHUNK_ROWS = int(os.environ.get("TLCORE_FEATURE_CHUNK", "2048"))
MEMORY_BYTES = 64 * 2**20  # features a cache keeps in memory; beyond it parts are read back from disk when asked


@dataclass
class _Part:
    """Rows computed together, written to disk as one file (atomically: a part is whole or absent)."""

    indices: np.ndarray
    path: Optional[Path] = None
    features: Optional[torch.Tensor] = None  # None: on disk only (read when asked)

    def load(self) -> torch.Tensor:
        if self.features is not None:
            return self.features
        return torch.load(self.path, map_location="cpu", weights_only=True)["features"]


@dataclass
class _Entry:
    rows: dict[int, tuple[int, int]] = field(default_factory=dict)  # pool index -> (part, row in the part)
    parts: list[_Part] = field(default_factory=list)
    seen: set = field(default_factory=set)  # part files read


class FeatureCache:
    """Rows of features by pool index under a key; thread-safe; on disk under TLCORE_HOME/cache/features, one
    directory a key and one file per part of at most CHUNK_ROWS rows, so that an interrupted extraction keeps what
    it finished, a reader never sees half a part, and no more than MEMORY_BYTES of features stay in memory."""

    def __init__(self, root: Optional[Path] = None, use_disk: bool = True, memory_bytes: int = MEMORY_BYTES) -> None:
        self.root = root
        self.use_disk = use_disk
        self.memory_bytes = memory_bytes
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._held = 0  # bytes of features held in memory
        self.stats = CacheStats()

    def _dir(self) -> Path:
        root = self.root or (cache_dir() / "features")
        root.mkdir(parents=True, exist_ok=True)
        return root

    @staticmethod
    def key(backbone: str, weights_sha: str, pool_fingerprint: str, transform_key: str,
            computed_as: str = "cpu|fp32") -> str:
        """`computed_as`: the device type and precision (`precision_of`): bf16 rows from one machine and fp32 rows
        from another are different numbers and never share a matrix, also under one shared TLCORE_HOME."""
        raw = f"v{FEATURE_VERSION}|{backbone}|{weights_sha}|{pool_fingerprint}|{transform_key}"
        if computed_as != "cpu|fp32":  # the key CPU fp32 rows always had: caches made before stay valid
            raw += f"|{computed_as}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def _add(self, entry: _Entry, part: _Part, features: torch.Tensor) -> None:
        number = len(entry.parts)
        for row, i in enumerate(part.indices.tolist()):
            entry.rows.setdefault(int(i), (number, row))
        if part.path is None or self._held + features.numel() * 4 <= self.memory_bytes:
            part.features = features
            self._held += features.numel() * 4
        entry.parts.append(part)

    def _load(self, key: str) -> _Entry:
        """The key's entry, with any part written since (by this process or another) added."""
        entry = self._entries.get(key)
        if entry is not None:
            self.stats.memory_hits += 1
        else:
            entry = self._entries[key] = _Entry()
        if not self.use_disk:
            return entry
        legacy = self._dir() / f"{key}.pt"  # a whole cache file, as versions before parts wrote it
        folder = self._dir() / key
        paths = ([legacy] if legacy.exists() else []) + (sorted(folder.glob("part-*.pt")) if folder.is_dir() else [])
        for path in paths:
            if path.name in entry.seen:
                continue
            entry.seen.add(path.name)
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                indices, features = blob["indices"].numpy(), blob["features"]
            except Exception:  # a torn or stale cache file is only a cache miss
                continue
            self._add(entry, _Part(indices, path), features)
            self.stats.disk_hits += 1
        return entry

    def _write(self, key: str, indices: np.ndarray, features: torch.Tensor) -> Optional[Path]:
        if not self.use_disk:
            return None
        folder = self._dir() / key
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{threading.get_ident()}.pt"
        tmp = folder / f".tmp-{name}"
        torch.save({"indices": torch.as_tensor(indices, dtype=torch.long), "features": features}, tmp)
        os.replace(tmp, folder / name)  # atomic: readers see the whole part or none of it
        return folder / name

    def get_or_compute(self, key: str, indices: np.ndarray, compute, chunk_rows: Optional[int] = None) -> torch.Tensor:
        """Features for `indices`, computing only the rows not cached yet: `compute(missing, done, total)` for at
        most `chunk_rows` of them at a time (`done` of `total` missing rows computed before), each chunk written
        before the next starts."""
        with self._lock:
            entry = self._load(key)
            missing = np.asarray(sorted({int(i) for i in indices if int(i) not in entry.rows}), dtype=np.int64)
        chunk_rows = max(1, chunk_rows or CHUNK_ROWS)
        for start in range(0, len(missing), chunk_rows):
            chunk = missing[start:start + chunk_rows]
            new = compute(chunk, start, len(missing)).contiguous()
            with self._lock:
                path = self._write(key, chunk, new)
                if path is not None:
                    entry.seen.add(path.name)
                self._add(entry, _Part(chunk, path), new)
                self.stats.rows_computed += len(chunk)
        with self._lock:  # `entry` has every part this call found or wrote
            self.stats.rows_reused += len(indices) - len(missing)
            where = np.array([entry.rows[int(i)] for i in indices], dtype=np.int64).reshape(-1, 2)
            out = None
            for number in np.unique(where[:, 0]).tolist():
                features = entry.parts[number].load()
                if out is None:
                    out = torch.empty((len(where), *features.shape[1:]), dtype=features.dtype)
                mine = np.flatnonzero(where[:, 0] == number)
                out[torch.from_numpy(mine)] = features[torch.from_numpy(where[mine, 1])]
            if out is None:  # nothing asked: the width of any part, if there is one
                shape = next((p.load().shape[1:] for p in entry.parts), (0,))
                out = torch.zeros((0, *shape))
            return out


_DEFAULT_CACHE: Optional[FeatureCache] = None


def default_cache() -> FeatureCache:
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = FeatureCache()
    return _DEFAULT_CACHE


@dataclass(frozen=True)
class FeatureContext:
    """Everything the features of a prepared split depend on, gathered once and passed whole to `split_features`:
    the model that computes them and the backbone name and weights id their cache key carries, the dataset (its image
    pools key the rows), its prepared splits, the preprocessing (timm data config and its key), the device, the cache
    and how the features are computed (`options`; `embedding` and `phase`: see extract_features; an embedding needs a
    `backbone_name` of its own, so its rows never mix with those of the pooled features)."""

    model: torch.nn.Module
    backbone_name: str
    weights_sha: str
    dataset: Dataset
    splits: dict[str, PreparedImages]
    cfg: dict
    transform_key: str
    device: torch.device
    cache: Optional[FeatureCache] = None  # None: default_cache()
    options: ExtractOptions = field(default_factory=ExtractOptions)
    embedding: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None
    phase: str = "features"


def _split_key(context: FeatureContext, split: str, cache: FeatureCache) -> str:
    return cache.key(context.backbone_name, context.weights_sha, context.dataset.pools[split].feature_key(),
                     context.transform_key, computed_as(context.options, context.device))


def split_features(context: FeatureContext, split: str, reporter: Optional[Reporter] = None,
                   progress_span: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Features of one prepared split of `context`, through its cache: only the rows not cached yet are computed."""
    prepared = context.splits[split]
    cache = context.cache or default_cache()
    key = _split_key(context, split, cache)
    position = {int(i): p for p, i in enumerate(prepared.indices.tolist())}

    def compute(missing: np.ndarray, done: int, total: int) -> torch.Tensor:
        rows = torch.as_tensor([position[int(i)] for i in missing], dtype=torch.long)
        lo, hi = progress_span
        span = (lo + (hi - lo) * done / total, lo + (hi - lo) * (done + len(missing)) / total)
        return extract_features(context.model, prepared.images[rows], context.cfg, context.device, context.options,
                                reporter=reporter, progress_span=span, embedding=context.embedding,
                                phase=context.phase)

    return cache.get_or_compute(key, prepared.indices, compute)


# a split's rows held in memory at most (bytes); beyond it they are written to disk and read back a batch at a time
ROWS_IN_MEMORY_BYTES = int(float(os.environ.get("TLCORE_IN_MEMORY_MB", "256")) * 2**20)


def split_rows(context: FeatureContext, split: str, reporter: Optional[Reporter] = None,
               progress_span: tuple[float, float] = (0.0, 1.0),
               in_memory_bytes: Optional[int] = None) -> "torch.Tensor | LazyImages":
    """`split_features` for rows too wide to hold a whole split of (fine-tune's frozen-prefix activations, kilobytes
    an image): a split whose rows fit in `in_memory_bytes` comes back as one tensor, through the feature cache; a
    larger one is computed into a DecodedStore on disk by pool index, a batch at a time (a run killed part way keeps
    the rows written; other cells and processes share them), and comes back as a view that reads the rows a batch
    asks for."""
    prepared = context.splits[split]
    limit = ROWS_IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
    if len(prepared.indices) == 0:
        return split_features(context, split, reporter, progress_span)
    position = {int(i): p for p, i in enumerate(prepared.indices.tolist())}

    def compute(pool_indices: np.ndarray) -> np.ndarray:
        rows = torch.as_tensor([position[int(i)] for i in pool_indices], dtype=torch.long)
        return extract_features(context.model, prepared.images[rows], context.cfg, context.device, context.options,
                                embedding=context.embedding, phase=context.phase).numpy()

    first = compute(prepared.indices[:1])
    if len(prepared.indices) * first[0].nbytes <= limit:
        return split_features(context, split, reporter, progress_span)
    key = _split_key(context, split, context.cache or default_cache())
    store = DecodedStore(cache_dir() / "rows" / key, len(context.dataset.pools[split]), first.shape[1:], compute,
                         dtype=np.float32)
    lo, hi = progress_span

    def on_batch(done: int, total: int) -> None:
        if reporter:
            reporter(context.phase, lo + (hi - lo) * done / total, batch=done, batches=total)

    store.ensure(prepared.indices, on_batch)
    return LazyImages(store, prepared.indices)
