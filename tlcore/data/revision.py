"""Dataset revisions: leave images out or give them another class without touching a file.

A revision is a manifest over a source (a built-in name or a folder): the fingerprint of the data it was made on, the
images to exclude and the images to relabel, each named as results name it (`Dataset.item_name`: its path inside
the dataset). It is stored content-addressed under $TLCORE_HOME/revisions/<id>.json, so the same changes always get
the same id and a record or a share link names them exactly. It applies after the split, so an image keeps its split
and a revision that changes only training and validation images keeps the test set; and after the per-class subset,
so N a class on a revision is the original's N a class less the excluded images, never refilled with others: a
before-and-after comparison differs only by the changes. Applying one checks the fingerprint first: a folder that
has changed since is refused, never revised silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from tlcore.core.environment import data_home, require_writable
from tlcore.core.errors import DataError
from tlcore.data.dataset import SPLIT_NAMES, Dataset, ImagePool

REVISION_VERSION = 1
ID_LENGTH = 12
_ID = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")
MAX_CHANGES = 200_000  # a changes file naming more images than this is refused before it is read further
MAX_CSV_BYTES = 32 * 2**20
ACTIONS = ("exclude", "relabel", "keep")


def revisions_dir() -> Path:
    return data_home() / "revisions"


def is_revision_id(text: str) -> bool:
    return bool(_ID.match(text or ""))


def _shown(value: object, limit: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _listed(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class Revision:
    """Changes to one source's labelled images. `exclude` and `relabel` name images by `Dataset.item_name`."""

    source: str
    base_fingerprint: str  # the source's fingerprint (every split, before any subset) when the revision was made
    exclude: tuple[str, ...] = ()
    relabel: tuple[tuple[str, str], ...] = ()  # (image, its new class)
    note: str = ""  # the user's words; not part of the id
    version: int = REVISION_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(sorted(set(map(str, self.exclude)))))
        relabel = {str(name): str(label) for name, label in self.relabel}
        object.__setattr__(self, "relabel", tuple(sorted(relabel.items())))
        both = sorted(set(self.exclude) & set(relabel))
        if both:
            raise DataError(f"An image cannot be both excluded and relabelled: {_listed(both)}. Keep one action "
                            "for each.")

    @property
    def id(self) -> str:
        raw = json.dumps({"source": self.source, "base": self.base_fingerprint, "exclude": self.exclude,
                          "relabel": self.relabel, "v": self.version}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:ID_LENGTH]

    def describe(self) -> str:
        return (f"revision {self.id} of {self.source}: {len(self.exclude)} image(s) excluded, "
                f"{len(self.relabel)} relabelled")

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "base_fingerprint": self.base_fingerprint,
                "exclude": list(self.exclude), "relabel": [list(r) for r in self.relabel], "note": self.note,
                "version": self.version}

    @classmethod
    def from_dict(cls, d: dict) -> "Revision":
        return cls(source=d["source"], base_fingerprint=d["base_fingerprint"], exclude=tuple(d.get("exclude", ())),
                   relabel=tuple(tuple(r) for r in d.get("relabel", ())), note=d.get("note", ""),
                   version=d.get("version", REVISION_VERSION))


# -- storing ---------------------------------------------------------------------------------------------------------
def save_revision(revision: Revision) -> str:
    """Write the manifest (atomically; an existing id is the same changes, kept as it is) and return its id."""
    require_writable("store a dataset revision")
    folder = revisions_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{revision.id}.json"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(revision.to_dict(), indent=1))
        os.replace(tmp, path)
    return revision.id


def load_revision(revision_id: str) -> Revision:
    if not is_revision_id(revision_id):
        raise DataError(f"{_shown(revision_id)} is not a revision id ({ID_LENGTH} hexadecimal digits, as "
                        "`tlcore health --apply` prints it).")
    path = revisions_dir() / f"{revision_id}.json"
    if not path.is_file():
        raise DataError(f"No revision {revision_id} is stored here: make it with `tlcore health --apply FILE` or "
                        "from the Data health gallery.")
    try:
        revision = Revision.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"Revision {revision_id}'s manifest is unreadable ({type(exc).__name__}): make it again.") \
            from exc
    if revision.id != revision_id:
        raise DataError(f"Revision {revision_id}'s manifest was edited (its content gives id {revision.id}): make it "
                        "again rather than editing the stored file.")
    return revision


def list_revisions(source: Optional[str] = None) -> list[Revision]:
    """Stored revisions (of `source` if given), newest first."""
    folder = revisions_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            revision = load_revision(path.stem)
        except DataError:
            continue
        if source is None or revision.source == source:
            found.append(revision)
    return found


# -- making and applying ---------------------------------------------------------------------------------------------
def _names(dataset: Dataset) -> dict[str, tuple[str, int]]:
    """Every labelled image of `dataset` by name -> (split, index into its split's pool)."""
    out = {}
    for split in SPLIT_NAMES:
        for index in dataset.indices[split]:
            out[dataset.item_name(split, int(index))] = (split, int(index))
    return out


def _check(dataset: Dataset, revision: Revision, names: dict[str, tuple[str, int]]) -> None:
    unknown = [n for n in (*revision.exclude, *(r[0] for r in revision.relabel)) if n not in names]
    if unknown:
        raise DataError(f"{len(unknown)} image(s) named by the revision are not in {dataset.label or dataset.name}: "
                        f"{_listed(unknown)}. Use the names the health check lists (paths inside the dataset).")
    classes = sorted({label for _, label in revision.relabel if label not in dataset.classes})
    if classes:
        raise DataError(f"Relabelled to class(es) not in {dataset.label or dataset.name}: {_listed(classes)}; its "
                        f"classes are {dataset.classes}.")


def make_revision(full: Dataset, exclude: Iterable[str] = (), relabel: Iterable[tuple[str, str]] = (),
                  note: str = "") -> Revision:
    """A revision of `full` (its source: every split, no subset or sub-task), checked: every image named is in the
    data and every new class is one of its classes."""
    if full.spec.revision:
        raise DataError("A revision is made over the original data, not over another revision: name the original "
                        "and list every change.")
    if full.spec.per_class is not None or full.spec.classes:
        raise DataError("A revision is made over the whole source (every class, no per-class subset).")
    revision = Revision(full.spec.source, full.source_fingerprint(), tuple(exclude), tuple(relabel), note)
    _check(full, revision, _names(full))
    return revision


class RevisedPool(ImagePool):
    """A pool with some labels changed by a revision. Pixels and indices are the base pool's, so its feature-cache
    rows are reused; its fingerprint differs, so results and stored cells do not mix."""

    def __init__(self, base: ImagePool, labels: np.ndarray, revision_id: str) -> None:
        self.base = base
        self.classes = list(base.classes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.revision_id = revision_id

    def load(self, index: int):
        return self.base.load(index)

    def describe(self, index: int) -> str:
        return self.base.describe(index)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.base.fingerprint()}|revision {self.revision_id}".encode()).hexdigest()[:16]

    def feature_key(self) -> str:
        return self.base.feature_key()

    def native_size(self) -> int:
        return self.base.native_size()


def apply_revision(full: Dataset, revision: Revision) -> Dataset:
    """`full` (every split, no subset or sub-task) with `revision`'s changes; refused when the data has changed
    since the revision was made, or names images it does not have."""
    if revision.base_fingerprint != full.source_fingerprint():
        raise DataError(f"Revision {revision.id} was made on {revision.source} with fingerprint "
                        f"{revision.base_fingerprint}, but the data now has {full.source_fingerprint()}: files were "
                        "added, removed or changed since (or the split's val and test fractions or seed differ). It "
                        "is not applied; run the health check again and make a new revision.")
    names = _names(full)
    _check(full, revision, names)
    excluded: dict[str, set[int]] = {s: set() for s in SPLIT_NAMES}
    for name in revision.exclude:
        split, index = names[name]
        excluded[split].add(index)
    pools: dict[str, ImagePool] = {}
    relabelled_in: dict[str, int] = {s: 0 for s in SPLIT_NAMES}
    for split in SPLIT_NAMES:
        pool = full.pools[split]
        shared = next((pools[s] for s in pools if full.pools[s] is pool), None)  # one pool behind several splits
        if shared is None:
            labels = pool.labels.copy()
            for name, label in revision.relabel:
                where, index = names[name]
                if full.pools[where] is pool:
                    labels[index] = full.classes.index(label)
            shared = RevisedPool(pool, labels, revision.id) if revision.relabel else pool
        pools[split] = shared
    for name, _ in revision.relabel:
        relabelled_in[names[name][0]] += 1
    indices = {s: np.array([i for i in full.indices[s] if int(i) not in excluded[s]], dtype=np.int64)
               for s in SPLIT_NAMES}
    changed = ", ".join(f"{len(excluded[s])} excluded and {relabelled_in[s]} relabelled in {s}"
                        for s in SPLIT_NAMES if excluded[s] or relabelled_in[s]) or "no change"
    note = f"Revision {revision.id}: {changed}; the files are untouched."
    return replace(full, pools=pools, indices=indices, notes=[*full.notes, note],
                   spec=replace(full.spec, revision=revision.id))


# -- a changes file ---------------------------------------------------------------------------------------------------
def read_changes(path: Path | str) -> tuple[list[str], list[tuple[str, str]]]:
    """(images to exclude, (image, class) to relabel) from a CSV with columns `name`, `action` (exclude, relabel or
    keep) and `label` (the new class, for relabel): the file `tlcore health --fixes` writes, edited."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Changes file {path} does not exist.")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DataError(f"Changes file {path} is {path.stat().st_size / 2**20:.0f} MB, more than the "
                        f"{MAX_CSV_BYTES // 2**20} MB a list of changes needs.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"Changes file {path} is not UTF-8 text (a CSV): {exc.reason}.") from exc
    return parse_changes(text, str(path))


def parse_changes(text: str, where: str = "the changes") -> tuple[list[str], list[tuple[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("name", "action") if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{where} has no column(s) {', '.join(missing)}: it needs name, action (exclude, relabel "
                        "or keep) and label (the new class for relabel), as `tlcore health --fixes` writes them.")
    exclude, relabel, bad = [], [], []
    for line, row in enumerate(reader, start=2):
        if line - 1 > MAX_CHANGES:
            raise DataError(f"{where} lists more than {MAX_CHANGES:,} images; split the changes.")
        name, action = (row.get("name") or "").strip(), (row.get("action") or "").strip().lower()
        label = (row.get("label") or "").strip()
        if action not in ACTIONS or not name or (action == "relabel" and not label):
            bad.append(f"line {line} ({_shown(name or action, 30)})")
        elif action == "exclude":
            exclude.append(name)
        elif action == "relabel":
            relabel.append((name, label))
    if bad:
        raise DataError(f"{where}: {len(bad)} row(s) need a name and an action of {', '.join(ACTIONS)} (relabel with "
                        f"a label): {_listed(bad)}.")
    return exclude, relabel
