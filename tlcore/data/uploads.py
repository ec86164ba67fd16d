"""Uploaded datasets: a .zip of class folders, extracted safely under TLCORE_HOME/datasets/uploads/<content hash>.

An upload comes from a visitor, so the archive is treated as hostile. Refused before anything is written: entries
that would escape the target (absolute paths, '..'), symbolic links, too many files or bytes, an entry whose header
says it unpacks more than MAX_RATIO times its stored size (a photo compresses 1-3x; a zip bomb 1000x), and an archive
that would take the uploads past their quota (TLCORE_UPLOAD_QUOTA). Headers can lie, so while an entry is written its
bytes are counted against the compressed bytes actually read and against both limits, and the archive is refused as
soon as one is passed. An image over MAX_PIXELS (read from its header as it is extracted, however large) refuses the
whole archive. Files that are not images, and images that do not decode, are left out and listed with the reason
(`skipped_files`), and so is a class folder left without images (empty, or all of its files left out), which is
dropped. An archive with fewer than 2 class folders of images is refused. A refused archive leaves nothing on disk,
and its messages name the archive and its entries, never a server path. The same archive uploaded twice is stored
once. `upload_label` names an upload by the archive's own name, never by its server path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterable, Optional, Union

from PIL import Image, UnidentifiedImageError

from tlcore.core.environment import data_home, require_writable
from tlcore.core.errors import ConfigError, DataError
from tlcore.data.dataset import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    class_dirs,
    has_images,
    header_size,
    over_pixel_limit,
    split_folders,
)

MAX_FILES = 50_000
MAX_BYTES = 4 * 2**30
MAX_RATIO = 100  # unpacked / stored size of one entry: photos compress 1-3x, a zip bomb about 1000x
RATIO_FLOOR = 64 * 2**10  # entries smaller than this unpacked are never refused for their ratio (icons, flat images)
DEFAULT_QUOTA = 10 * 2**30  # all uploads together, unless TLCORE_UPLOAD_QUOTA says otherwise
QUOTA_ENV = "TLCORE_UPLOAD_QUOTA"
SKIPPED = ".skipped.json"
COMPLETE = ".complete"  # written last, holding the archive's own name: the upload is whole
CHUNK = 64 * 2**10  # small reads keep the compressed bytes read ahead of the ratio check small
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def uploads_dir() -> Path:
    return data_home() / "datasets" / "uploads"


# ------------------------------------------------------------------------------------------------------ sizes, quota
def parse_size(text: str, what: str = "size") -> int:
    """Bytes from '10737418240', '500M', '10G', '1.5GiB' (K, M, G, T are powers of 1024)."""
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise ConfigError(f"{what}={text!r} is not a size. Write a number of bytes (10737418240) or a number with "
                          "K, M, G or T (500M, 10G).")
    power = "kmgt".index(match[2].lower()) + 1 if match[2] else 0
    return int(float(match[1]) * 1024**power)


def upload_quota() -> int:
    """How many bytes all uploads together may take: TLCORE_UPLOAD_QUOTA, or 10 GiB."""
    text = os.environ.get(QUOTA_ENV, "").strip()
    return parse_size(text, QUOTA_ENV) if text else DEFAULT_QUOTA


def _human(n: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while n >= 1024 and power < len(units) - 1:
        n, power = n / 1024, power + 1
    return f"{n:,.0f} bytes" if power == 0 else f"{n:,.1f}".rstrip("0").rstrip(".") + f" {units[power]}"


def _folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:  # removed meanwhile by another upload's clean-up
                pass
    return total


def _quota_error(name: str, need: int, used: int, quota: int, more: bool = False) -> DataError:
    need_text = f"more than {_human(need)}" if more else _human(need)
    return DataError(f"'{name}' needs {need_text}, and uploads may take {_human(quota)} in all ({QUOTA_ENV}); "
                     f"{_human(used)} is in use. The archive was refused. Raise the quota where tlcore runs (e.g. "
                     f"{QUOTA_ENV}=20G), remove old uploads, upload a smaller subset, or point tlcore at a folder on "
                     "the server.")


def _forms(path: Union[str, Path]) -> set[Path]:
    absolute = Path(os.path.abspath(Path(path).expanduser()))
    return {absolute, absolute.resolve()}


def _evictable(uploads: Path, keep: Iterable[Union[str, Path]]) -> list[Path]:
    """Complete uploads that no kept path (a dataset path a stored record mentions) is or lies in, least recently
    used first (`.complete` is touched on each use)."""
    kept = set().union(*(_forms(k) for k in keep))
    kept |= {parent for k in kept for parent in k.parents}
    folders = [f for f in uploads.iterdir() if not f.name.startswith(".") and (f / COMPLETE).is_file()]
    folders = [f for f in folders if not _forms(f) & kept]
    return sorted(folders, key=lambda f: (f / COMPLETE).stat().st_mtime)


def _make_room(uploads: Path, name: str, need: int, quota: int,
               keep: Optional[Iterable[Union[str, Path]]]) -> int:
    """Bytes in use once `need` more fits the quota: with `keep` given, the least recently used unreferenced uploads
    are removed (only if that makes enough room); otherwise, or if it cannot, the archive is refused."""
    used = _folder_size(uploads) if uploads.exists() else 0
    if used + need <= quota:
        return used
    victims, freed = [], 0
    candidates = _evictable(uploads, keep) if keep is not None and uploads.exists() else []
    for folder in candidates:
        if used - freed + need <= quota:
            break
        victims.append(folder)
        freed += _folder_size(folder)
    if used - freed + need > quota:
        raise _quota_error(name, need, used, quota)
    for folder in victims:
        shutil.rmtree(folder, ignore_errors=True)
    return used - freed


@dataclass
class _Budget:
    """The bytes this archive may still write: the per-archive limit, and what the quota leaves of the uploads."""

    name: str
    max_bytes: int
    quota: int
    used: int
    written: int = 0

    def spend(self, n: int) -> None:
        self.written += n
        if self.written > self.max_bytes:  # sizes in the header can lie
            raise DataError(f"'{self.name}' unpacks to more than {self.max_bytes / 2**20:,.0f} MiB; the archive was "
                            "refused. Upload a smaller subset, or point tlcore at a folder on the server.")
        if self.used + self.written > self.quota:
            raise _quota_error(self.name, self.written, self.used, self.quota, more=True)


# ------------------------------------------------------------------------------------------------- skipped entries
def skipped_files(root: Path) -> list[str]:
    """The archive entries left out when it was extracted, as 'entry: reason' (not an image file, an image that does
    not decode, a class folder dropped for having no images: 'pets/cat/: empty class folder, dropped: ...'). Reads
    the plain list of names older versions wrote, whose entries were all non-image files."""
    for folder in (Path(root), Path(root).parent):
        if (folder / SKIPPED).exists():
            items = json.loads((folder / SKIPPED).read_text())
            return [f"{i['path']}: {i['reason']}" if isinstance(i, dict) else f"{i}: {_NOT_AN_IMAGE}" for i in items]
    return []


_NOT_AN_IMAGE = "not an image file"


def _undecodable(path: Path) -> Optional[str]:
    """Why an extracted image cannot be used, or None: a full decode (JPEGs at reduced scale, as the dataset scan
    does), so a broken or disguised file is never kept."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG":
                    img.draft("RGB", (64, 64))
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL.Image.MAX_IMAGE_PIXELS set lower
        return f"larger than Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,} pixels) set in this process"
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt or truncated image ({exc})"
    return None


# --------------------------------------------------------------------------------------------- checks before writing
def _check_members(zf: zipfile.ZipFile, name: str, max_files: int, max_bytes: int) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    if len(members) > max_files:
        raise DataError(f"'{name}' holds {len(members):,} entries; the limit is {max_files:,}. Upload a smaller "
                        "subset, or point tlcore at a folder on the server.")
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise DataError(f"'{name}' would unpack to {total / 2**20:,.0f} MiB; the limit is {max_bytes / 2**20:,.0f} "
                        "MiB. Upload a smaller subset, or point tlcore at a folder on the server.")
    for m in members:
        path = PurePosixPath(m.filename.replace("\\", "/"))
        if path.is_absolute() or (path.parts and path.parts[0].endswith(":")) or ".." in path.parts:
            raise DataError(f"'{name}' contains the entry '{m.filename}', which would be written outside the "
                            "dataset folder; the archive was refused. Re-create it from inside the dataset folder.")
        if stat.S_ISLNK(m.external_attr >> 16):
            raise DataError(f"'{name}' contains a symbolic link '{m.filename}'; links are refused. Archive the "
                            "files themselves.")
    return members


def _parts(entry: str) -> list[str]:
    return [p for p in PurePosixPath(entry.replace("\\", "/")).parts if p not in ("", ".")]


def _plan(members: list[zipfile.ZipInfo]) -> tuple[list[tuple[zipfile.ZipInfo, list[str]]], list[list[str]],
                                                   list[dict]]:
    """The image entries to write (with their path parts), the folders to make (so a class folder without images
    is seen and reported) and the entries left out; macOS metadata and hidden files are ignored."""
    todo, folders, skipped = [], [], []
    for m in members:
        parts = _parts(m.filename)
        if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        if m.is_dir():
            folders.append(parts)
        elif PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append({"path": m.filename, "reason": _NOT_AN_IMAGE})
            folders.append(parts[:-1])  # its folder still exists: a class of only such files is reported as dropped
        else:
            todo.append((m, parts))
    return todo, folders, skipped


def _ratio_error(name: str, entry: str, unpacked: int, stored: int, max_ratio: float, header: bool) -> DataError:
    how = (f"its header says it unpacks to {_human(unpacked)} from {_human(stored)}" if header else
           f"it unpacked past {_human(unpacked)} from {_human(stored)} read, more than its header said")
    return DataError(f"'{name}' contains '{entry}', which looks like a zip bomb: {how}, over {max_ratio:,.0f} times "
                     "its stored size (photos compress about 1-3 times). The archive was refused and nothing of it "
                     "was kept. Leave that entry out, or zip the real image files, and upload again.")


def _check_ratios(todo: list[tuple[zipfile.ZipInfo, list[str]]], name: str, max_ratio: float) -> None:
    for m, _ in todo:
        if m.file_size > RATIO_FLOOR and m.file_size > max_ratio * m.compress_size:
            raise _ratio_error(name, m.filename, m.file_size, m.compress_size, max_ratio, header=True)


# ------------------------------------------------------------------------------------------------------- extraction
class _CountingReader(BytesIO):
    """The archive in memory, counting the bytes zipfile reads from it: an entry's real compressed size, whatever
    its header claims."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def _copy_entry(src: BinaryIO, out: BinaryIO, consumed: Callable[[], int], entry: str, budget: _Budget,
                max_ratio: float = MAX_RATIO, floor: int = RATIO_FLOOR) -> int:
    """Copy one entry, stopping as soon as it grows past `max_ratio` times the compressed bytes read for it
    (`consumed()`) or passes the budget. Returns the bytes written."""
    written = 0
    while chunk := src.read(CHUNK):
        written += len(chunk)
        if written > floor and written > max_ratio * max(consumed(), 1):
            raise _ratio_error(budget.name, entry, written, consumed(), max_ratio, header=False)
        budget.spend(len(chunk))
        out.write(chunk)
    return written


def _extract_entry(zf: zipfile.ZipFile, reader: _CountingReader, m: zipfile.ZipInfo, dest: Path, budget: _Budget,
                   max_ratio: float) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(m) as src, open(dest, "wb") as out:
            start = reader.consumed  # after the entry's local header
            _copy_entry(src, out, lambda: reader.consumed - start, m.filename, budget, max_ratio)
    # zipfile raises NotImplementedError for compression methods it does not support: a damaged-or-unsupported entry
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"'{budget.name}' is damaged or uses an unsupported feature: the entry '{m.filename}' cannot "
                        f"be read ({exc}). Re-create the archive (a plain .zip without a password) and upload "
                        "again.") from None


def _extract(zf: zipfile.ZipFile, reader: _CountingReader, todo: list[tuple[zipfile.ZipInfo, list[str]]],
             folders: list[list[str]], skipped: list[dict], target: Path, budget: _Budget, max_pixels: int,
             max_ratio: float) -> None:
    """Write into a temporary folder beside the target, check its classes and move it into place whole; on any error
    it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    try:
        for parts in folders:
            tmp.joinpath(*parts).mkdir(parents=True, exist_ok=True)
        for m, parts in todo:
            dest = tmp.joinpath(*parts)
            _extract_entry(zf, reader, m, dest, budget, max_ratio)
            _check_pixels(dest, m.filename, budget.name, max_pixels)
            reason = _undecodable(dest)
            if reason:
                dest.unlink()
                skipped.append({"path": m.filename, "reason": reason})
        _drop_empty_classes(tmp, skipped)
        _check_classes(tmp, budget.name, skipped)
        (tmp / SKIPPED).write_text(json.dumps(skipped))
        (tmp / COMPLETE).write_text(budget.name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_archive(archive: Union[bytes, str, Path, BinaryIO]) -> bytes:
    if isinstance(archive, bytes):
        return archive
    return Path(archive).read_bytes() if isinstance(archive, (str, Path)) else archive.read()


def extract_zip(archive: Union[bytes, str, Path, BinaryIO], name: str = "upload.zip", max_files: int = MAX_FILES,
                max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, max_ratio: float = MAX_RATIO,
                quota: Optional[int] = None, keep: Optional[Iterable[Union[str, Path]]] = None) -> Path:
    """Extract and return the dataset root (the single top folder if the archive has one).

    `quota` defaults to TLCORE_UPLOAD_QUOTA. When the uploads would pass it, `keep` decides: None refuses the archive;
    a collection of the dataset folders that stored records use (`DatasetSpec.source`) lets the least recently used
    uploads that none of them is or lies in be removed to make room (tlcore.data cannot read the run store: it sits
    below it)."""
    require_writable("store an upload")
    data = _read_archive(archive)
    target = uploads_dir() / hashlib.sha256(data).hexdigest()[:20]
    if (target / COMPLETE).exists():
        _touch(target)
        return _dataset_root(target)
    reader = _CountingReader(data)
    try:
        zf = zipfile.ZipFile(reader)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise DataError(f"'{name}' is not a readable .zip archive. Zip the dataset folder (one sub-folder per "
                        "class) and upload it again.") from None
    with zf:
        todo, folders, skipped = _plan(_check_members(zf, name, max_files, max_bytes))
        _check_ratios(todo, name, max_ratio)
        quota = upload_quota() if quota is None else quota
        need = sum(m.file_size for m, _ in todo)
        used = _make_room(target.parent, name, need, quota, keep)
        _extract(zf, reader, todo, folders, skipped, target, _Budget(name, max_bytes, quota, used), max_pixels,
                 max_ratio)
    return _dataset_root(target)


def _touch(folder: Path) -> None:
    """Mark an upload as used now: eviction removes the least recently used first."""
    try:
        os.utime(folder / COMPLETE)
    except OSError:
        pass


def _dataset_root(target: Path) -> Path:
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        inner = [p for p in entries[0].iterdir() if p.is_dir()]
        if inner:
            return entries[0]
    return target


def upload_label(path: Union[str, Path]) -> Optional[str]:
    """The archive's own name for a folder inside an upload: 'photos.zip' for the dataset root, 'photos.zip/flowers'
    for a folder in it; None for any other path. History and share links show this, never the server path."""
    uploads = uploads_dir()
    given = Path(os.path.abspath(Path(path).expanduser()))
    for base, p in ((uploads, given), (uploads.resolve(), given.resolve())):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        if not rel.parts or not (base / rel.parts[0] / COMPLETE).is_file():
            return None
        folder = base / rel.parts[0]
        name = PurePosixPath((folder / COMPLETE).read_text().strip().replace("\\", "/")).name
        if not name:
            return None
        root = _dataset_root(folder)
        inner = p.relative_to(root) if p == root or root in p.parents else p.relative_to(folder)
        return f"{name}/{inner.as_posix()}" if inner.parts else name
    return None


def _check_pixels(path: Path, entry: str, name: str, max_pixels: int) -> None:
    """Read only the image header: a huge image is refused before it is ever decoded, however far above the limit
    (Pillow's own decompression-bomb limit plays no part)."""
    try:
        over = over_pixel_limit(header_size(path), max_pixels)
    except OSError:  # unreadable images are left out and listed by `_undecodable`
        return
    if over:
        raise DataError(f"'{name}' contains '{entry}' of {over}. The archive was refused and nothing of it was kept; "
                        "downscale that image or leave it out, and upload again.")


# ---------------------------------------------------------------------------------------------------- class folders
def _drop_empty_classes(tmp: Path, skipped: list[dict]) -> None:
    """Remove the class folders (found as `load_folder` finds them) that hold no usable image, and list each with
    the reason: otherwise the class would vanish without a word."""
    for folder in split_folders(_dataset_root(tmp)).values():
        for d in class_dirs(folder):
            if has_images(d):
                continue
            inside = d.relative_to(tmp).parts
            left_out = any(_parts(s["path"])[:len(inside)] == list(inside) for s in skipped)
            reason = ("class folder dropped: every file in it was left out (listed here)" if left_out else
                      "empty class folder, dropped: no images in it")
            skipped.append({"path": "/".join(inside) + "/", "reason": reason})
            shutil.rmtree(d)


def _check_classes(tmp: Path, name: str, skipped: list[dict]) -> None:
    """Refuse an archive that would not make a dataset: fewer than 2 class folders with images, or a val/ or test/
    folder without any. Messages name the archive and the folders inside it."""
    root = _dataset_root(tmp)
    splits = split_folders(root)

    def inside(folder: Path) -> str:
        return "/".join(folder.relative_to(tmp).parts) + "/"

    # dropping empty class folders can leave a single top folder without sub-folders: then it is the one "class"
    classes = [d.name for d in class_dirs(splits["train"]) if has_images(d)]
    where = f" in '{inside(splits['train'])}'" if splits["train"] != root else ""
    left_out = f" Left out: {_summary(skipped)}." if skipped else ""
    layout = ("A dataset is a folder with one sub-folder of images per class (e.g. pets/cat/*.jpg, pets/dog/*.jpg, "
              "optionally inside train/ val/ test/); zip that folder and upload it again.")
    if not classes:
        raise DataError(f"'{name}' holds no class folder with images{where}, so there is nothing to train on; the "
                        f"archive was refused and nothing of it was kept.{left_out} {layout}")
    if len(classes) == 1:
        raise DataError(f"'{name}' has 1 class folder with images{where} ('{classes[0]}'); at least 2 are needed to "
                        f"train a classifier. The archive was refused and nothing of it was kept.{left_out} {layout}")
    for split in ("val", "test"):
        if split in splits and not any(has_images(d) for d in class_dirs(splits[split])):
            raise DataError(f"'{name}': its '{inside(splits[split])}' folder holds no class folder with images. The "
                            f"archive was refused and nothing of it was kept.{left_out} Put images in it (one "
                            f"sub-folder per class, as in train/), or leave it out of the archive so {split} is "
                            "drawn from train, and upload again.")


def _summary(skipped: list[dict], limit: int = 3) -> str:
    head = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:limit])
    return head + (f" (and {len(skipped) - limit} more)" if len(skipped) > limit else "")
