"""The images to predict and the names results give them: the files of a folder, or the entries of a .zip read in
memory (nothing is extracted). A file is named by its path inside the folder or the zip (a zip's single top folder
left out, as zipping a folder puts one there), with '/' between folders, so `python -m tlcore predict --run ID
folder/` and the dashboard given a zip of that folder list the same rows, and no server path is ever shown. Both
list files in the same order and leave hidden files out.

A zip comes from a visitor, so it is read as hostile input, with the ideas and limits of tlcore.data.uploads: an
entry that would point outside the archive ('..', an absolute path) or a symbolic link refuses it, and so do too
many images, too many bytes unpacked or an entry that unpacks to more than MAX_RATIO times its stored size (a zip
bomb). Each image is read from the zip only when its batch is decoded, at most MAX_ENTRY_BYTES of it; the
50-megapixel rule is checked on its header before it is decoded (tlcore.deploy.load.Preprocessing.open)."""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Union

from tlcore.core.environment import (
    data_roots,
    require_within_data_roots,
    require_writable,
    serving_visitors,
    within_data_roots,
)
from tlcore.core.errors import DataError
from tlcore.data.dataset import IMAGE_EXTENSIONS
from tlcore.data.uploads import MAX_BYTES, MAX_FILES, MAX_RATIO, RATIO_FLOOR

NOT_AN_IMAGE = "not an image file (by extension)"
OUTSIDE_ROOTS = "a link to a file outside the data roots"
MAX_ENTRY_BYTES = 256 * 2**20  # one image file: a 50-megapixel image stored uncompressed (BMP, TIFF) is 150 MiB


@dataclass(frozen=True)
class NamedImage:
    """An image to predict and the name results give it. `open()` gives a path or a file object, called only when
    the image's batch is decoded."""

    name: str
    open: Callable[[], Union[Path, BinaryIO]]


def _order(name: str) -> tuple[str, ...]:
    """Folder by folder, as sorting paths does (so 'a/b.jpg' comes before 'a-c.jpg')."""
    return PurePosixPath(name).parts


def _same(path: Path) -> Path:
    return path


def folder_images(folder: Path, prefix: str = "") -> tuple[list[NamedImage], list[tuple[str, str]]]:
    """Every image under `folder`, named `prefix` + its path inside it; other files skipped with the reason. When the
    dashboard serves visitors, links leading out of the data roots are skipped."""
    images, skipped = [], []
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    for path in sorted(files, key=lambda p: p.relative_to(folder).parts):
        name = prefix + path.relative_to(folder).as_posix()
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((name, NOT_AN_IMAGE))
        elif serving_visitors() and not within_data_roots(path):
            skipped.append((name, OUTSIDE_ROOTS))
        else:
            images.append(NamedImage(name, partial(_same, path)))
    return images, skipped


def _too_many(count: int, where: str, limit: int) -> DataError:
    return DataError(f"{where} holds {count:,} images; at most {limit:,} are predicted at once here. Split it, or "
                     "predict it from a shell: python -m tlcore predict --run <run id> <folder> --out predictions.csv")


def server_folder_images(text: str, max_images: int) -> tuple[list[NamedImage], list[tuple[str, str]]]:
    """The images of a folder on the server that a visitor named: a writable server only, and under the data roots
    (links leading out of them are skipped)."""
    require_writable("read a folder on the server")
    if not text.strip():
        raise DataError("Enter the path of a folder of images on this server.")
    folder = require_within_data_roots(Path(text.strip()).expanduser(), "folder")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"'{folder}' {what}. Give a folder of images (sub-folders are read too) under "
                        f"{', '.join(map(str, data_roots()))}, or upload a .zip.")
    images, skipped = folder_images(folder)
    if len(images) > max_images:
        raise _too_many(len(images), f"'{folder}'", max_images)
    return images, skipped


# ------------------------------------------------------------------------------------------------------------- zips
def _parts(entry: str) -> list[str]:
    return [p for p in PurePosixPath(entry.replace("\\", "/")).parts if p not in ("", ".")]


def _refuse_unsafe(zf: zipfile.ZipFile, name: str) -> None:
    """Entries that point outside the archive, and links: the archive is refused, naming the entry."""
    for m in zf.infolist():
        path = PurePosixPath(m.filename.replace("\\", "/"))
        if path.is_absolute() or (path.parts and path.parts[0].endswith(":")) or ".." in path.parts:
            raise DataError(f"'{name}' contains the entry '{m.filename}', which points outside the archive ('..' or "
                            "an absolute path); it was refused. Zip the images from inside their folder and upload "
                            "again.")
        if stat.S_ISLNK(m.external_attr >> 16):
            raise DataError(f"'{name}' contains a symbolic link '{m.filename}'; links are refused. Zip the image "
                            "files themselves and upload again.")


def _files(zf: zipfile.ZipFile, name: str) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """The archive's files with their path parts; folders, hidden files and macOS metadata left out."""
    if len(zf.infolist()) > MAX_FILES:
        raise DataError(f"'{name}' holds {len(zf.infolist()):,} entries; the limit is {MAX_FILES:,}. Split it into "
                        "smaller archives.")
    _refuse_unsafe(zf, name)
    files = []
    for m in zf.infolist():
        parts = _parts(m.filename)
        if m.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        files.append((m, parts))
    return files


def _top_folder(files: list[tuple[zipfile.ZipInfo, list[str]]]) -> int:
    """1 when every file lies in one top folder (zipping a folder puts it there), else 0: the parts to leave out."""
    tops = {parts[0] for _, parts in files}
    return 1 if len(tops) == 1 and all(len(parts) > 1 for _, parts in files) else 0


def _check_sizes(images: list[zipfile.ZipInfo], name: str, max_images: int) -> None:
    if len(images) > max_images:
        raise _too_many(len(images), f"'{name}'", max_images)
    total = sum(m.file_size for m in images)
    if total > MAX_BYTES:
        raise DataError(f"'{name}' would unpack to {total / 2**20:,.0f} MiB; the limit is {MAX_BYTES / 2**20:,.0f} "
                        "MiB. Split it into smaller archives.")
    for m in images:
        if m.file_size > RATIO_FLOOR and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise DataError(f"'{name}' contains '{m.filename}', which looks like a zip bomb: it unpacks to "
                            f"{m.file_size / 2**20:,.1f} MiB from {m.compress_size / 2**10:,.0f} KiB, over "
                            f"{MAX_RATIO} times its stored size (photos compress about 1-3 times). The archive was "
                            "refused. Leave that entry out and upload again.")


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> BinaryIO:
    """One entry's bytes as a file object named like the file (messages name it as they name a file on disk)."""
    if info.file_size > MAX_ENTRY_BYTES:
        raise DataError(f"'{shown}' unpacks to {info.file_size / 2**20:,.0f} MiB; the limit is "
                        f"{MAX_ENTRY_BYTES / 2**20:,.0f} MiB a file. Downscale it, or leave it out.")
    try:
        with zf.open(info) as src:
            data = src.read(MAX_ENTRY_BYTES + 1)  # zipfile stops at the header's size: never more than this
    # zipfile raises NotImplementedError for compression methods it does not support, RuntimeError when encrypted
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"'{shown}' cannot be read from the zip ({exc}); re-create the archive (a plain .zip "
                        "without a password).") from None
    buffer = io.BytesIO(data)
    buffer.name = PurePosixPath(shown).name
    return buffer


def zip_images(data: Union[bytes, BinaryIO], name: str,
               max_images: int) -> tuple[list[NamedImage], list[tuple[str, str]]]:
    """The images of a .zip held in memory (its bytes, or a file object such as an upload), named by their path
    inside it; other files skipped with the reason. `name` (the archive's own name) is what messages call it."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise DataError(f"'{name}' is not a readable .zip archive. Zip the images (or a folder of them) and upload "
                        "it again.") from None
    files = _files(zf, name)
    skip = _top_folder(files)
    images, skipped, infos = [], [], []
    for info, parts in sorted(files, key=lambda item: item[1][skip:]):
        shown = "/".join(parts[skip:])
        if PurePosixPath(shown).suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((shown, NOT_AN_IMAGE))
        else:
            images.append(NamedImage(shown, partial(_read_entry, zf, info, shown)))
            infos.append(info)
    _check_sizes(infos, name, max_images)
    if not images:
        raise DataError(f"'{name}' holds no image files" + (f" ({len(skipped)} other files)" if skipped else "") +
                        ". Zip JPEG, PNG, BMP, GIF, TIFF or WebP images (sub-folders are fine) and upload again.")
    return images, skipped
