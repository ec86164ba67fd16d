"""Decoded images on disk: what lets a 100k-photo folder run in the memory of a small one.

A split's images, decoded, resized and cropped by the eval transform (uint8 CHW), are written by pool index into one
file per pool and preprocessing under the cache directory, in batches, and read back in batches by position
(`os.pread`, not a memory map, so that what was read does not stay in the process's resident memory). A second
file holds one byte a row, set only after its row was written: a process killed part way leaves rows unmarked, which
the next run decodes again, so a half-written row is never read back as complete. Any number of processes may share
the files (they write the same bytes for the same row).

`LazyImages` is the view a cell gets instead of a stacked tensor: indexing it decodes what is missing and reads the
rows asked for, so training and feature extraction hold one batch of pixels at a time.

The store holds any fixed-shape rows computed from pool indices: fine-tune's frozen-prefix activations (float32) are
kept the same way when a split's would not fit in memory (tlcore.engine.features.split_rows).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

DECODE_BATCH = 256  # images decoded (and written) at a time: bounds the pixels held while decoding


class DecodedStore:
    """One pool's decoded images at one preprocessing (or other rows of `dtype`), by pool index, on disk."""

    def __init__(self, path: Path, pool_size: int, shape: Sequence[int],
                 decode: Callable[[np.ndarray], np.ndarray], dtype=np.uint8) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.pool_size = int(pool_size)
        self._decode = decode  # pool indices -> array of dtype (n, *shape)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = ".u8" if self.dtype == np.uint8 else f".{self.dtype.name}"
        self.pixels_path, self.done_path = path.with_suffix(suffix), path.with_suffix(".done")
        flags = os.O_RDWR | os.O_CREAT
        self._pixels = os.open(self.pixels_path, flags, 0o600)
        self._done = os.open(self.done_path, flags, 0o600)
        if os.fstat(self._pixels).st_size < self.pool_size * self.row_bytes:
            os.ftruncate(self._pixels, self.pool_size * self.row_bytes)  # sparse: only written rows take disk
        if os.fstat(self._done).st_size < self.pool_size:
            os.ftruncate(self._done, self.pool_size)

    def close(self) -> None:
        for fd in (self._pixels, self._done):
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self.close()

    def done(self) -> np.ndarray:
        """Which rows are complete (re-read: another process may have written some)."""
        return np.frombuffer(os.pread(self._done, self.pool_size, 0), dtype=np.uint8).astype(bool)

    def ensure(self, indices: np.ndarray, on_batch: Callable[[int, int], None] | None = None) -> int:
        """Decode and write the rows of `indices` not on disk yet, a batch at a time; how many were decoded."""
        with self._lock:
            wanted = np.unique(np.asarray(indices, dtype=np.int64))
            missing = wanted[~self.done()[wanted]] if len(wanted) else wanted
            for start in range(0, len(missing), DECODE_BATCH):
                batch = missing[start:start + DECODE_BATCH]
                pixels = np.ascontiguousarray(self._decode(batch), dtype=self.dtype)
                for row, index in zip(pixels, batch.tolist()):
                    os.pwrite(self._pixels, row.tobytes(), index * self.row_bytes)
                for index in batch.tolist():  # marked only once its pixels are written
                    os.pwrite(self._done, b"\x01", index)
                if on_batch:
                    on_batch(start + len(batch), len(missing))
            return len(missing)

    def read(self, indices: np.ndarray) -> torch.Tensor:
        """The rows of `indices`, in that order, as one tensor (n, *shape); every row must be complete."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), *self.shape), dtype=self.dtype)
        flat = out.reshape(len(indices), -1)
        for position, index in enumerate(indices.tolist()):
            flat[position] = np.frombuffer(os.pread(self._pixels, self.row_bytes, index * self.row_bytes),
                                           dtype=self.dtype)
        return torch.from_numpy(out)


class ImageView(ABC):
    """A split's images as a read-only, indexable stand-in for a uint8 (N, C, H, W) tensor: `images[idx]` returns
    those rows, stacked, and nothing else is copied; subclasses say where a row comes from."""

    dtype = torch.uint8

    def __init__(self, indices: np.ndarray, shape: Sequence[int]) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.image_shape = tuple(int(s) for s in shape)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.indices), *self.image_shape))

    def __len__(self) -> int:
        return len(self.indices)

    @abstractmethod
    def _rows(self, pool_indices: np.ndarray) -> torch.Tensor:
        """The rows of these pool indices, stacked."""

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        chosen = self.indices[idx]
        if np.ndim(chosen) == 0:
            return self._rows(np.array([chosen]))[0]
        return self._rows(chosen)


class LazyImages(ImageView):
    """Rows from a DecodedStore: indexing decodes what is missing, then reads the rows asked for."""

    def __init__(self, store: DecodedStore, indices: np.ndarray) -> None:
        super().__init__(indices, store.shape)
        self.store = store
        self.dtype = torch.from_numpy(np.empty(0, dtype=store.dtype)).dtype

    def _rows(self, pool_indices: np.ndarray) -> torch.Tensor:
        self.store.ensure(pool_indices)
        return self.store.read(pool_indices)


class MemoryImages(ImageView):
    """Rows decoded in memory ({pool index: uint8 CHW tensor}, shared by every cell of the process): a batch is
    stacked when asked for, so a cell never holds a second copy of its split."""

    def __init__(self, decoded: dict, indices: np.ndarray, shape: Sequence[int]) -> None:
        super().__init__(indices, shape)
        self.decoded = decoded

    def _rows(self, pool_indices: np.ndarray) -> torch.Tensor:
        if not len(pool_indices):
            return torch.zeros((0, *self.image_shape), dtype=torch.uint8)
        return torch.stack([self.decoded[int(i)] for i in pool_indices.tolist()])
