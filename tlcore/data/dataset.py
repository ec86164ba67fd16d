"""Datasets: folders of class sub-folders or built-in names, seeded stratified splits, nested per-class subsets,
timm preprocessing done once into uint8 tensors, and clear messages for bad input.

Flow: `DatasetSpec` --load_dataset--> `Dataset` (pools + split indices) --subset(per_class, seed)--> `Dataset`
--prepare(transform)--> `PreparedImages` (uint8 N x 3 x H x W, normalised on the fly by the trainer).
"""

from __future__ import annotations

import hashlib
import os
import struct
import re
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tlcore.core.environment import require_within_data_roots, require_writable, serving_visitors, within_data_roots
from tlcore.core.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
MAX_PIXELS = 50_000_000  # per image: a 7000 x 7000 photo passes, a decompression bomb does not
SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


@dataclass(frozen=True)
class DatasetSpec:
    """What data to use. `source` is a built-in name (see `tlcore.data.builtin.BUILTIN_DATASETS`) or a folder path.

    Without split folders, val and test are drawn per class with `split_seed`, so they never depend on `per_class`
    or on the run seed: every strategy, size and repeat is scored on the same test set.
    """

    source: str = "fashion-mnist"
    per_class: Optional[int] = None  # training images a class; None = all
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    classes: Optional[tuple[str, ...]] = None  # keep only these classes (a sub-task); None = all
    revision: Optional[str] = None  # a stored revision's id (tlcore.data.revision): images excluded or relabelled

    def __post_init__(self) -> None:
        if self.classes is not None:  # from JSON a list: keep the spec hashable
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))


# ----------------------------------------------------------------------------------------------------------- pools
class ImagePool(ABC):
    """An indexable collection of labelled images. Subclasses decide where pixels come from."""

    classes: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def load(self, index: int) -> Image.Image:
        """The image as 8-bit RGB."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever pixels or labels change: part of every stored cell's key."""

    def feature_key(self) -> str:
        """Identifies the pixels behind each index: the feature cache's key. A view that only changes labels (a
        sub-task, a revision) shares its base pool's, so its frozen features are computed once."""
        return self.fingerprint()

    def describe(self, index: int) -> str:
        return f"#{index}"

    def native_size(self) -> int:
        """Typical longer side in pixels, for the automatic image size."""
        return 224


class ArrayPool(ImagePool):
    """Images held in memory as uint8 arrays (N, H, W) or (N, H, W, 3): the built-in datasets."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: Sequence[str], name: str) -> None:
        if images.dtype != np.uint8:
            raise DataError(f"{name}: images must be uint8, got {images.dtype}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.name = name
        self._fingerprint: Optional[str] = None

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(self.images.tobytes())
            h.update(self.labels.tobytes())
            h.update("\0".join(self.classes).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def native_size(self) -> int:
        return int(max(self.images.shape[1:3]))


class FilePool(ImagePool):
    """Images read from files, already checked to decode (see `scan_folder`)."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, classes: Sequence[str],
                 sizes: Sequence[tuple[int, int]] = ()) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.sizes = list(sizes)

    def load(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for path, label in zip(self.paths, self.labels):
            st = path.stat()
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
        return h.hexdigest()[:16]

    def native_size(self) -> int:
        return int(np.median([max(s) for s in self.sizes])) if self.sizes else 224


class RelabeledPool(ImagePool):
    """Another pool seen through a subset of its classes, relabelled 0..k-1; images of other classes get label -1.
    Indices are the base pool's, so its feature-cache rows stay meaningful."""

    def __init__(self, base: ImagePool, classes: Sequence[str]) -> None:
        self.base = base
        self.classes = list(classes)
        mapping = np.full(len(base.classes), -1, dtype=np.int64)
        for new, name in enumerate(self.classes):
            mapping[base.classes.index(name)] = new
        self.labels = mapping[base.labels]

    def load(self, index: int) -> Image.Image:
        return self.base.load(index)

    def describe(self, index: int) -> str:
        return self.base.describe(index)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.base.fingerprint()}|{'|'.join(self.classes)}".encode()).hexdigest()[:16]

    def feature_key(self) -> str:
        return self.base.feature_key()

    def native_size(self) -> int:
        return self.base.native_size()


# --------------------------------------------------------------------------------------------------- image decoding
def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: grey, palette, RGBA (onto white), CMYK, 16-bit and float images."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode == "F":
            scale = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        else:  # integer images: keep the absolute scale of 16-bit data rather than stretching each image
            scale = arr / (65535.0 if hi > 255 else 255.0)
        return Image.fromarray(np.clip(scale * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: Path, draft_size: Optional[int] = None) -> Image.Image:
    """Open and fully decode an image as RGB; decompression bombs are errors (always DecompressionBombError, which
    callers catch), not warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))  # decode at reduced scale: a fast integrity check
                img.load()
                return to_rgb(img)
        except Image.DecompressionBombWarning as exc:
            raise Image.DecompressionBombError(str(exc)) from None


def header_size(source: Union[str, Path, BinaryIO]) -> Optional[tuple[int, int]]:
    """(width, height) as the image's header states them, without decoding; None when no Pillow format reads it.

    Pillow's own decompression-bomb check is left out on purpose: above its limit `Image.open` warns or raises
    before the size can be read, so an oversize image would look like an unreadable one. Callers compare the size
    with MAX_PIXELS (`over_pixel_limit`) and say so in their own words. This follows `Image.open`: each format whose
    check accepts the first bytes tries to read the header."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fp:
            return _header_size(fp)
    start = source.tell()
    try:
        return _header_size(source)
    finally:
        source.seek(start)


def _header_size(fp: BinaryIO) -> Optional[tuple[int, int]]:
    Image.init()
    start = fp.tell()
    prefix = fp.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            result = not accept or accept(prefix)
        except (struct.error, IndexError, ValueError):  # a format's check given fewer bytes than it reads
            continue
        if isinstance(result, str) or not result:  # a string: the format's reason it cannot read this file
            continue
        fp.seek(start)
        try:
            with warnings.catch_warnings():  # a plugin that checks the size itself (GIF frames) must stay silent
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with factory(fp, "") as img:
                    return img.size
        except Image.DecompressionBombError as exc:  # over twice Pillow's limit: its message has the pixel count
            found = re.search(r"\((\d+) pixels\)", str(exc))
            return int(found[1]) if found else 2 * (Image.MAX_IMAGE_PIXELS or MAX_PIXELS) + 1, 1
        except (SyntaxError, IndexError, TypeError, struct.error, OSError, ValueError, EOFError):
            continue
    return None


def _megapixels(pixels: int, limit: int) -> str:
    whole = f"{pixels / 1e6:,.0f}"
    return whole if pixels <= limit or round(pixels / 1e6) > limit / 1e6 else f"{pixels / 1e6:,.2f}"


def over_pixel_limit(size: Optional[tuple[int, int]], max_pixels: int = MAX_PIXELS) -> Optional[str]:
    """'12000 x 12000 = 144 megapixels; the limit is 50 megapixels an image' when the image is too large, else None:
    the one wording of the pixel rule for uploads, folders and single images."""
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    width, height = size
    dimensions = f"{width} x {height} = " if height > 1 else ""  # (pixels, 1): only the count is known
    return (f"{dimensions}{_megapixels(width * height, max_pixels)} megapixels; the limit is "
            f"{max_pixels / 1e6:,.0f} megapixels an image")


@dataclass
class FileProblem:
    path: str
    reason: str


def _check_file(path: Path) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    try:
        over = over_pixel_limit(header_size(path))
    except OSError as exc:
        return None, f"cannot be read ({exc})"
    if over:
        return None, f"refused: {over}. Downscale it to use it"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                size = img.size
                if img.format == "JPEG":
                    img.draft("RGB", (64, 64))
                img.load()
        return size, None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL.Image.MAX_IMAGE_PIXELS set lower
        return None, (f"refused: larger than Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,} pixels) "
                      "set in this process; downscale it to use it")
    except UnidentifiedImageError:
        return None, "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"corrupt or truncated ({exc})"


# ---------------------------------------------------------------------------------------------------- folder scan
@dataclass
class FolderScan:
    """The usable files of one folder of class sub-folders, with everything that was skipped and why."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray
    sizes: list[tuple[int, int]]
    problems: list[FileProblem] = field(default_factory=list)


def class_dirs(root: Path) -> list[Path]:
    """The class folders of root: its sub-folders, hidden ones left out, by name."""
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def split_folders(root: Path) -> dict[str, Path]:
    """The folders whose sub-folders are the classes, as `load_folder` reads root: its train/ [val/] [test/] folders
    (any spelling in SPLIT_ALIASES) when it has a train folder, else root itself as 'train'."""
    subdirs = {SPLIT_ALIASES[d.name.lower()]: d for d in class_dirs(root) if d.name.lower() in SPLIT_ALIASES}
    return subdirs if "train" in subdirs else {"train": root}


def has_images(folder: Path) -> bool:
    """Whether a class folder holds any file `scan_folder` would read (an image extension, not hidden)."""
    return any(p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
               for p in folder.rglob("*"))


def scan_folder(root: Path, classes: Optional[list[str]] = None) -> FolderScan:
    """List and decode-check every file under root/<class>/. Unreadable files are skipped and recorded. When the
    dashboard serves visitors, the folder must lie under the data roots and links leading out of them are skipped;
    a read-only instance reads no folder at all."""
    require_writable("read a folder on the server")
    root = require_within_data_roots(Path(root), "dataset folder")
    if not root.exists():
        raise DataError(f"Dataset folder '{root}' does not exist. Give a folder holding one sub-folder per class "
                        "(e.g. data/cats/*.jpg, data/dogs/*.jpg) or a built-in name such as 'fashion-mnist'.")
    if not root.is_dir():
        raise DataError(f"'{root}' is a file, not a folder. Give a folder of class sub-folders "
                        "(unzip an archive first, or upload the .zip in the dashboard).")
    folders = class_dirs(root)
    if classes is None:
        classes = [d.name for d in folders]
    files: list[tuple[Path, int]] = []
    problems: list[FileProblem] = []
    index = {name: i for i, name in enumerate(classes)}
    for d in folders:
        if d.name not in index:
            problems.append(FileProblem(str(d), f"class '{d.name}' is not among the training classes; skipped"))
            continue
        for path in sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                problems.append(FileProblem(str(path), "not an image file (by extension); skipped"))
                continue
            if serving_visitors() and not within_data_roots(path):
                problems.append(FileProblem(str(path), "a link to a file outside the data roots; skipped"))
                continue
            files.append((path, index[d.name]))
    stray = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    for p in stray:
        problems.append(FileProblem(str(p), "file at the top level, outside any class folder; skipped"))

    with ThreadPoolExecutor(max_workers=4) as pool:
        checks = list(pool.map(lambda item: _check_file(item[0]), files))
    paths, labels, sizes = [], [], []
    for (path, label), (size, problem) in zip(files, checks):
        if problem:
            problems.append(FileProblem(str(path), problem))
        else:
            paths.append(path)
            labels.append(label)
            sizes.append(size)
    return FolderScan(root, list(classes), paths, np.asarray(labels, dtype=np.int64), sizes, problems)


def summarize_problems(problems: list[FileProblem], limit: int = 5) -> str:
    head = "; ".join(f"{p.path}: {p.reason}" for p in problems[:limit])
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return f"{len(problems)} file(s) skipped: {head}{more}"


# ------------------------------------------------------------------------------------------------------- datasets
@dataclass
class Dataset:
    """Pools of images and the indices of each split into them. `train_pool` may equal `eval_pool`."""

    name: str
    classes: list[str]
    pools: dict[str, ImagePool]  # split -> pool
    indices: dict[str, np.ndarray]  # split -> indices into pools[split]
    spec: DatasetSpec
    problems: list[FileProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subset_seed: Optional[int] = None
    label: Optional[str] = None  # what messages call it instead of `name` (an upload's archive name)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def labels(self, split: str) -> np.ndarray:
        return self.pools[split].labels[self.indices[split]]

    def counts(self, split: str) -> dict[str, int]:
        counts = np.bincount(self.labels(split), minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def native_size(self) -> int:
        return self.pools["train"].native_size()

    def fingerprint(self) -> str:
        """Identifies the pixels and labels of every split (not the per-class subset)."""
        h = hashlib.sha256()
        for split in SPLIT_NAMES:
            h.update(f"{split}:{self.pools[split].fingerprint()}:".encode())
            h.update(np.asarray(self.indices[split], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def source_fingerprint(self) -> str:
        """Identifies the data and its split, whatever per-class subset is taken: the pools (pixels, labels, classes)
        and the val and test indices. Runs with the same source fingerprint share a test set."""
        h = hashlib.sha256()
        for split in SPLIT_NAMES:
            h.update(f"{split}:{self.pools[split].fingerprint()}:".encode())
        for split in ("val", "test"):
            h.update(np.asarray(self.indices[split], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "classes": self.classes,
            "per_class": self.spec.per_class,
            "subset_seed": self.subset_seed,
            "sizes": {s: int(len(self.indices[s])) for s in SPLIT_NAMES},
            "train_counts": self.counts("train"),
            "skipped_files": len(self.problems),
            "skipped": [{"path": self._relative(p.path), "reason": p.reason} for p in self.problems],
            "fingerprint": self.source_fingerprint(),
            "notes": list(self.notes),
        }

    def _relative(self, path: str) -> str:
        """A skipped file's path inside the dataset folder: results and share links never show the server's paths."""
        return _inside(path, Path(self._folder()))

    def _folder(self) -> str:
        """The folder `name` names, without the '[classA,classB]' a sub-task adds."""
        suffix = f"[{','.join(self.spec.classes)}]" if self.spec.classes else ""
        return self.name[:-len(suffix)] if suffix and self.name.endswith(suffix) else self.name

    def item_name(self, split: str, index: int) -> str:
        """One image of a split (`index` into its pool) as results name it: its path inside the dataset folder (an
        upload's: inside the archive), or 'name[index]' for an array dataset; never a server path."""
        pool = self.pools[split]
        while getattr(pool, "base", None) is not None:  # a sub-task's or a revision's view of its pool
            pool = pool.base
        if isinstance(pool, FilePool):
            return self._relative(str(pool.paths[index]))
        return pool.describe(index)

    def shown_path(self, path: str) -> str:
        """A file of this dataset as messages name it: in an upload, the archive's name and the path inside it."""
        return f"{self.label}/{self._relative(path)}" if self.label else path

    def restrict(self, classes: Optional[Sequence[str]]) -> "Dataset":
        """Only `classes` (a sub-task), relabelled in the order given; every split keeps its images of those classes."""
        if not classes:
            return self
        unknown = [c for c in classes if c not in self.classes]
        if unknown:
            raise DataError(f"Class(es) {unknown} are not in '{self.label or self.name}'; its classes are "
                            f"{self.classes}.")
        if len(set(classes)) < 2:
            raise DataError(f"A sub-task needs at least 2 distinct classes (got {list(classes)}).")
        pools: dict[str, ImagePool] = {}
        for split, pool in self.pools.items():
            pools[split] = next((p for p in pools.values() if getattr(p, "base", None) is pool), None) or \
                RelabeledPool(pool, classes)
        indices = {s: self.indices[s][pools[s].labels[self.indices[s]] >= 0] for s in self.indices}
        return replace(self, name=f"{self.name}[{','.join(classes)}]", classes=list(classes), pools=pools,
                       indices=indices, spec=replace(self.spec, classes=tuple(classes)))

    def subset(self, per_class: Optional[int], seed: int) -> "Dataset":
        """N training images a class, nested: for one seed the 10-a-class subset lies inside the 50-a-class one.

        Val and test are untouched. A class with fewer than N images keeps all of them (noted).
        """
        if per_class is None:
            return replace(self, subset_seed=seed, spec=replace(self.spec, per_class=None))
        if per_class < 1:
            raise DataError(f"per_class must be at least 1 (got {per_class}).")
        labels = self.labels("train")
        rng = np.random.default_rng([seed, 7919])
        chosen, short = [], []
        for c, name in enumerate(self.classes):
            members = np.flatnonzero(labels == c)
            order = members[rng.permutation(len(members))]  # one fixed order per (seed, class): nesting
            if len(order) < per_class:
                short.append(f"'{name}' ({len(order)})")
            chosen.append(order[:per_class])
        notes = list(self.notes)
        if short:
            notes.append(f"Fewer training images than the {per_class} a class asked for in {len(short)} of "
                         f"{self.num_classes} classes, so all of theirs are used: {', '.join(short[:8])}"
                         + (f" and {len(short) - 8} more" if len(short) > 8 else "") + ".")
        picked = np.sort(np.concatenate(chosen))
        indices = dict(self.indices, train=self.indices["train"][picked])
        return replace(self, indices=indices, notes=notes, subset_seed=seed,
                       spec=replace(self.spec, per_class=per_class))


def stratified_split(labels: np.ndarray, classes: list[str], val_fraction: float, test_fraction: float,
                     seed: int, make_val: bool = True, make_test: bool = True,
                     where: str = "") -> dict[str, np.ndarray]:
    """Per-class seeded split guaranteeing at least one image of every class in each split made.

    scikit-learn's stratified splitters can leave a small class out of a split entirely; a per-class draw cannot.
    """
    needed = 1 + int(make_val) + int(make_test)
    rng = np.random.default_rng([seed, 104729])
    out = {"train": [], "val": [], "test": []}
    for c, name in enumerate(classes):
        members = np.flatnonzero(labels == c)
        if len(members) < needed:
            raise DataError(
                f"Class '{name}'{where} has {len(members)} usable image(s); at least {needed} are needed to make "
                f"train{'/val' if make_val else ''}{'/test' if make_test else ''} splits. Add images to that class, "
                "remove the class folder, or provide explicit train/ val/ test/ folders.")
        members = members[rng.permutation(len(members))]
        n = len(members)
        n_test = max(1, round(n * test_fraction)) if make_test else 0
        n_val = max(1, round(n * val_fraction)) if make_val else 0
        while n - n_test - n_val < 1:  # keep at least one training image
            if n_val > 1:
                n_val -= 1
            else:
                n_test -= 1
        out["test"].append(members[:n_test])
        out["val"].append(members[n_test:n_test + n_val])
        out["train"].append(members[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, dtype=np.int64) for k, v in out.items()}


def _check_fractions(spec: DatasetSpec) -> None:
    for name in ("val_fraction", "test_fraction"):
        value = getattr(spec, name)
        if not 0 < value < 1:
            raise DataError(f"{name} must be between 0 and 1 (got {value}).")
    if spec.val_fraction + spec.test_fraction >= 0.9:
        raise DataError(f"val_fraction + test_fraction = {spec.val_fraction + spec.test_fraction:.2f} leaves too "
                        "little for training; keep the sum below 0.9.")


def dataset_from_pools(name: str, spec: DatasetSpec, train_pool: ImagePool, test_pool: Optional[ImagePool] = None,
                       val_pool: Optional[ImagePool] = None, problems: Optional[list[FileProblem]] = None,
                       label: Optional[str] = None) -> Dataset:
    """Assemble splits from whatever pools exist, carving the missing val/test splits out of train. Messages call
    the dataset `label` when given (an upload's archive name), else `name`."""
    _check_fractions(spec)
    classes = train_pool.classes
    shown = label or name
    if len(classes) < 2:
        raise DataError(f"Dataset '{shown}' has {len(classes)} class(es) {classes}; at least 2 are needed to train a "
                        "classifier. Put each class's images in its own sub-folder.")
    empty = [c for c, n in zip(classes, np.bincount(train_pool.labels, minlength=len(classes))) if n == 0]
    if empty:
        raise DataError(f"Dataset '{shown}': class folder(s) {empty} contain no usable images. Add images or remove "
                        "the folder(s).")
    split = stratified_split(train_pool.labels, classes, spec.val_fraction, spec.test_fraction, spec.split_seed,
                             make_val=val_pool is None, make_test=test_pool is None, where=f" of '{shown}'")
    pools = {"train": train_pool, "val": val_pool or train_pool, "test": test_pool or train_pool}
    indices = {"train": split["train"],
               "val": split["val"] if val_pool is None else np.arange(len(val_pool)),
               "test": split["test"] if test_pool is None else np.arange(len(test_pool))}
    for s in ("val", "test"):
        if len(indices[s]) == 0:
            raise DataError(f"Dataset '{shown}': the {s} split has no usable images. Add images to {s}/ or remove "
                            f"the {s}/ folder so it is drawn from train.")
    return Dataset(name=name, classes=list(classes), pools=pools, indices=indices, spec=spec,
                   problems=list(problems or []), label=label)


def load_folder(root: Path, spec: DatasetSpec, label: Optional[str] = None) -> Dataset:
    """A folder of class sub-folders, or one with train/ [val/] [test/] split folders, each of class sub-folders.
    `label` is what messages call the folder instead of its path (an upload's archive name)."""
    root = Path(root).expanduser()
    shown = label or str(root)
    splits = split_folders(root) if root.is_dir() else {"train": root}
    if splits["train"] != root:
        train = scan_folder(splits["train"])
        problems = list(train.problems)
        others, notes = {}, []
        for s in ("val", "test"):
            if s in splits:
                scan = scan_folder(splits[s], classes=train.classes)
                problems += scan.problems
                others[s] = FilePool(scan.paths, scan.labels, train.classes, scan.sizes)
                notes += _empty_class_notes(scan, s)
        _require_images(train, root, shown, problems)
        ds = dataset_from_pools(str(root), spec, FilePool(train.paths, train.labels, train.classes, train.sizes),
                                test_pool=others.get("test"), val_pool=others.get("val"), problems=problems,
                                label=label)
        ds.notes += notes
    else:
        scan = scan_folder(root)
        if not scan.classes:
            raise DataError(f"Dataset folder '{shown}' has no sub-folders. Put each class's images in its own "
                            "sub-folder: root/<class name>/<image files>.")
        _require_images(scan, root, shown, scan.problems)
        ds = dataset_from_pools(str(root), spec, FilePool(scan.paths, scan.labels, scan.classes, scan.sizes),
                                problems=scan.problems, label=label)
    if ds.problems:
        ds.notes.append(summarize_problems([FileProblem(ds._relative(p.path), p.reason) for p in ds.problems]))
    return ds


def _empty_class_notes(scan: FolderScan, split: str) -> list[str]:
    """A val/ or test/ class folder without usable images leaves that split without the class: say so (in train/ it
    is an error, see `dataset_from_pools`)."""
    counts = np.bincount(scan.labels, minlength=len(scan.classes))
    present = {d.name for d in class_dirs(scan.root)}
    empty = [c for c, n in zip(scan.classes, counts) if n == 0 and c in present]
    return [f"{split}/{c}/: class folder with no usable images, so {split} has no '{c}' images." for c in empty]


def _require_images(scan: FolderScan, root: Path, shown: str, problems: list[FileProblem]) -> None:
    if len(scan.paths) == 0:
        relative = [FileProblem(_inside(p.path, root), p.reason) for p in problems]
        detail = f" {summarize_problems(relative)}" if problems else ""
        raise DataError(f"No usable images found in '{shown}'.{detail} Supported formats: "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}.")


def _inside(path: str, root: Path) -> str:
    """A path as seen from inside root (its file name when it lies elsewhere): messages never show server paths of
    files in a dataset."""
    full, base = os.path.abspath(path), os.path.abspath(root)
    return os.path.relpath(full, base) if full.startswith(base + os.sep) else os.path.basename(path)


# ---------------------------------------------------------------------------------------------------- preparation
@dataclass
class PreparedImages:
    """Decoded, resized, cropped images as uint8 (N, 3, H, W): decoded once, normalised per batch on the fly."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray  # into the split's pool, for galleries and feature-cache lookups

    def __len__(self) -> int:
        return len(self.labels)


def prepare_split(dataset: Dataset, split: str, transform, indices: Optional[np.ndarray] = None) -> PreparedImages:
    """Run the timm eval transform (built with use_prefetcher=True, so it yields uint8 CHW arrays) once per image."""
    pool = dataset.pools[split]
    idx = dataset.indices[split] if indices is None else indices

    def one(i: int) -> np.ndarray:
        try:
            return np.asarray(transform(pool.load(int(i))), dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            text = str(exc)
            if dataset.label:  # a file inside an upload: named by the archive, never by the server's path
                text = text.replace(os.path.abspath(dataset._folder()), dataset.label)
            raise DataError(f"Could not read {dataset.shown_path(pool.describe(int(i)))}: {text}. Remove or replace "
                            "the file.") from exc

    with ThreadPoolExecutor(max_workers=2) as ex:
        arrays = list(ex.map(one, idx))
    if not arrays:
        raise DataError(f"The {split} split of '{dataset.label or dataset.name}' is empty.")
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.from_numpy(pool.labels[idx].astype(np.int64))
    return PreparedImages(images=images, labels=labels, indices=np.asarray(idx))
