"""Loading a dataset by name or folder: the one entry point the rest of tlcore uses. It sits above the built-in
registry and the folder reader, so neither needs to import the other. An upload's folder is read like any folder and
named in messages by its archive's name (`upload_label`)."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

from tlcore.core.errors import DataError
from tlcore.data.builtin import BUILTIN_DATASETS, load_builtin
from tlcore.data.dataset import Dataset, DatasetSpec, load_folder
from tlcore.data.uploads import upload_label


def parse_dataset(text: str) -> DatasetSpec:
    """'fashion-mnist', a folder, or a sub-task 'fashion-mnist:Sandal|Sneaker|Ankle boot' (a path that exists as
    written is never split)."""
    name, sep, classes = text.rpartition(":")
    if not sep or Path(text).expanduser().exists() or not classes.strip():
        return DatasetSpec(text)
    return DatasetSpec(name.strip(), classes=tuple(c.strip() for c in classes.split("|") if c.strip()))


def dataset_label(spec: DatasetSpec) -> str:
    """The inverse of `parse_dataset`."""
    return spec.source + (f":{'|'.join(spec.classes)}" if spec.classes else "")


def load_dataset(spec: DatasetSpec | str, seed: int = 0) -> Dataset:
    """Load a built-in dataset or a folder, split it and take the per-class subset for `seed`. A string is read as
the CLI reads `--dataset` (`parse_dataset`), so 'fashion-mnist:Sandal|Sneaker' is the 2-class sub-task."""
    if isinstance(spec, str):
        spec = parse_dataset(spec)
    if spec.source in BUILTIN_DATASETS:
        full = _cached_builtin(spec)
    else:
        path = Path(spec.source).expanduser()
        if not path.exists() and os.sep not in spec.source and "/" not in spec.source:
            raise DataError(f"'{spec.source}' is neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}) nor an "
                            "existing folder. Check the spelling or give a path to a folder of class sub-folders.")
        full = load_folder(path, replace(spec, per_class=None, classes=None), label=upload_label(path))
    return full.restrict(spec.classes).subset(spec.per_class, seed)


_BUILTIN_CACHE: dict[DatasetSpec, Dataset] = {}
_BUILTIN_LOCK = threading.Lock()


def _cached_builtin(spec: DatasetSpec) -> Dataset:
    key = replace(spec, per_class=None, classes=None)
    with _BUILTIN_LOCK:
        if key not in _BUILTIN_CACHE:
            _BUILTIN_CACHE[key] = load_builtin(key)
        return _BUILTIN_CACHE[key]


