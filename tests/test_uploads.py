"""Zip uploads: extracted under TLCORE_HOME by content hash; traversal, absolute paths, symlinks and oversize archives
are refused before anything is written."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from tlcore.data import DatasetSpec, load_dataset
from tlcore.errors import DataError
from tlcore.uploads import extract_zip


def _zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def test_class_folders_extract_once_and_load(image_folder, isolated_home):
    entries = {f"photos/{p.parent.name}/{p.name}": p.read_bytes() for p in image_folder.rglob("*.png")}
    archive = _zip(entries)
    root = extract_zip(archive, "photos.zip")
    assert root.name == "photos" and isolated_home in root.parents
    assert extract_zip(archive, "again.zip") == root  # same content, stored once
    assert len(list((isolated_home / "datasets" / "uploads").iterdir())) == 1
    ds = load_dataset(DatasetSpec(str(root)))
    assert ds.classes == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../evil.png"])
def test_paths_escaping_the_target_are_refused(tmp_path, isolated_home, name):
    with pytest.raises(DataError, match="outside the dataset folder"):
        extract_zip(_zip({"ok/a.png": b"x", name: b"x"}), "bad.zip")
    assert not (tmp_path / "evil.png").exists()
    assert not list(isolated_home.rglob("evil.png")) and not list(isolated_home.rglob(".extract-*"))


def test_symlinks_are_refused(isolated_home):
    with pytest.raises(DataError, match="symbolic link"):
        extract_zip(_zip({"c/a.png": b"x"}, links={"c/link.png": "/etc/passwd"}), "links.zip")


def test_too_many_files_and_too_many_bytes_are_refused(isolated_home):
    with pytest.raises(DataError, match="entries; the limit is 3"):
        extract_zip(_zip({f"c/{i}.png": b"x" for i in range(5)}), "many.zip", max_files=3)
    with pytest.raises(DataError, match="MiB"):
        extract_zip(_zip({"c/big.png": b"0" * 5000}), "big.zip", max_bytes=1000)


def test_not_a_zip_is_a_clear_message(isolated_home):
    with pytest.raises(DataError, match="not a readable .zip"):
        extract_zip(b"definitely not a zip", "notes.txt")
