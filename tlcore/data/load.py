"""Loading a dataset by name or folder: the one entry point the rest of tlcore uses. It sits above the built-in
registry and the folder reader, so neither needs to import the other. An upload's folder is read like any folder and
named in messages by its archive's name (`upload_label`)."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from tlcore.core.errors import DataError
from tlcore.data.builtin import BUILTIN_DATASETS, load_builtin
from tlcore.data.dataset import Dataset, DatasetSpec, load_folder
from tlcore.data.revision import apply_revision, is_revision_id, load_revision
from tlcore.data.uploads import upload_label


def parse_dataset(text: str) -> DatasetSpec:
    """'fashion-mnist', a folder, a sub-task 'fashion-mnist:Sandal|Sneaker|Ankle boot', a revision
    'fashion-mnist@<revision id>', or both 'fashion-mnist@<id>:Sandal|Sneaker' (a path that exists as written is
    never split)."""
    if Path(text).expanduser().exists():
        return DatasetSpec(text)
    name, sep, classes = text.rpartition(":")
    if not sep or not classes.strip():
        name, classes = text, ""
    source, at, revision = name.rpartition("@")
    if not at or not is_revision_id(revision.strip()) or Path(name).expanduser().exists():
        source, revision = name, None
    chosen = tuple(c.strip() for c in classes.split("|") if c.strip()) or None
    return DatasetSpec(source.strip() if (chosen or revision) else text, classes=chosen,
                       revision=revision.strip() if revision else None)


def dataset_label(spec: DatasetSpec) -> str:
    """The inverse of `parse_dataset`."""
    return (spec.source + (f"@{spec.revision}" if spec.revision else "")
            + (f":{'|'.join(spec.classes)}" if spec.classes else ""))


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
        full = load_folder(path, replace(spec, per_class=None, classes=None, revision=None),
                           label=upload_label(path))
    original = full.restrict(spec.classes).subset(spec.per_class, seed)
    if not spec.revision:
        return original
    revision = load_revision(spec.revision)
    if revision.source != spec.source:
        raise DataError(f"Revision {revision.id} revises {revision.source}, not {spec.source}: name its source "
                        f"({revision.source}@{revision.id}).")
    revised = apply_revision(full, revision).restrict(spec.classes)
    train = revised.indices["train"]
    if spec.per_class is not None:  # the original's subset, less what the revision excludes: never refilled
        train = train[np.isin(train, original.indices["train"])]
    return replace(revised, indices=dict(revised.indices, train=train), subset_seed=seed,
                   notes=[*original.notes, revised.notes[-1]], spec=replace(revised.spec, per_class=spec.per_class))


def load_source(spec: DatasetSpec | str) -> Dataset:
    """The whole source a revision is made over: every split and class, no subset, no revision."""
    spec = parse_dataset(spec) if isinstance(spec, str) else spec
    return load_dataset(replace(spec, per_class=None, classes=None, revision=None))


_BUILTIN_CACHE: dict[DatasetSpec, Dataset] = {}
_BUILTIN_LOCK = threading.Lock()


def _cached_builtin(spec: DatasetSpec) -> Dataset:
    key = replace(spec, per_class=None, classes=None, revision=None)
    with _BUILTIN_LOCK:
        if key not in _BUILTIN_CACHE:
            _BUILTIN_CACHE[key] = load_builtin(key)
        return _BUILTIN_CACHE[key]


