"""Uploaded datasets: a .zip of class folders, extracted safely under TLCORE_HOME/datasets/uploads/<content hash>.

Entries that would escape the target (absolute paths, '..'), symbolic links, too many files and too many bytes are
refused before anything is written; an image over the pixel limit (read from its header as it is extracted) refuses
the whole archive before extraction completes; files that are not images are listed and skipped; the same archive
uploaded twice is stored once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Union

from PIL import Image

from tlcore.data.dataset import IMAGE_EXTENSIONS
from tlcore.core.environment import data_home, require_writable
from tlcore.core.errors import DataError

MAX_FILES = 50_000
MAX_BYTES = 4 * 2**30
MAX_PIXELS = 50_000_000  # per image: a 7000 x 7000 photo passes, a decompression bomb does not
SKIPPED = ".skipped.json"


def skipped_files(root: Path) -> list[str]:
    """The archive entries that were not images and were left out when it was extracted."""
    for folder in (Path(root), Path(root).parent):
        if (folder / SKIPPED).exists():
            return json.loads((folder / SKIPPED).read_text())
    return []


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


def extract_zip(archive: Union[bytes, str, Path, BinaryIO], name: str = "upload.zip", max_files: int = MAX_FILES,
                max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Path:
    """Extract and return the dataset root (the single top folder if the archive has one)."""
    require_writable("store an upload")
    data = archive if isinstance(archive, bytes) else (
        Path(archive).read_bytes() if isinstance(archive, (str, Path)) else archive.read())
    digest = hashlib.sha256(data).hexdigest()[:20]
    target = data_home() / "datasets" / "uploads" / digest
    if not (target / ".complete").exists():
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise DataError(f"'{name}' is not a readable .zip archive. Zip the dataset folder (one sub-folder per "
                            "class) and upload it again.") from None
        with zf:
            members = _check_members(zf, name, max_files, max_bytes)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
            try:
                written, skipped = 0, []
                for m in members:
                    if m.is_dir():
                        continue
                    parts = [p for p in PurePosixPath(m.filename.replace("\\", "/")).parts if p not in ("", ".")]
                    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
                        continue
                    if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                        skipped.append(m.filename)
                        continue
                    dest = tmp.joinpath(*parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, open(dest, "wb") as out:
                        while chunk := src.read(1 << 20):
                            written += len(chunk)
                            if written > max_bytes:  # sizes in the header can lie
                                raise DataError(f"'{name}' unpacks to more than {max_bytes / 2**20:,.0f} MiB; "
                                                "refused.")
                            out.write(chunk)
                    _check_pixels(dest, m.filename, name, max_pixels)
                (tmp / SKIPPED).write_text(json.dumps(skipped))
                (tmp / ".complete").write_text(name)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        inner = [p for p in entries[0].iterdir() if p.is_dir()]
        if inner:
            return entries[0]
    return target


def _check_pixels(path: Path, entry: str, name: str, max_pixels: int) -> None:
    """Read only the image header: a huge image is refused before it is ever decoded."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # unreadable images are reported by the dataset scan, not here
        return
    if width * height > max_pixels:
        raise DataError(f"'{name}' contains '{entry}' of {width} x {height} = {width * height / 1e6:,.0f} megapixels; "
                        f"the limit is {max_pixels / 1e6:,.0f} megapixels an image. The archive was refused; "
                        "downscale that image or leave it out.")
