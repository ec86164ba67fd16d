"""Zip uploads: extracted under TLCORE_HOME by content hash; traversal, absolute paths, symlinks and oversize archives
are refused before anything is written."""

from __future__ import annotations

import io
from pathlib import Path
import stat
import zipfile

import pytest

from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.core.errors import DataError
from tlcore.data.uploads import extract_zip


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


def _png(width: int, height: int, colour=(120, 30, 200)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")  # a flat image compresses to almost nothing
    return buf.getvalue()


def test_pixel_bomb_is_refused_before_extraction_completes(isolated_home):
    bomb = _png(4000, 3000)  # 12 megapixels in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(DataError, match="megapixels an image"):
        extract_zip(_zip({"c/ok.png": _png(8, 8), "c/bomb.png": bomb}), "bomb.zip", max_pixels=10_000_000)
    assert not list(isolated_home.rglob("bomb.png")) and not list(isolated_home.rglob(".extract-*"))


def test_non_image_files_are_listed_and_skipped(isolated_home):
    from tlcore.data.uploads import skipped_files

    root = extract_zip(_zip({"d/a/1.png": _png(8, 8), "d/a/2.png": _png(8, 8, (1, 2, 3)), "d/b/1.png": _png(9, 9),
                             "d/b/2.png": _png(9, 9, (9, 9, 9)), "d/b/notes.txt": b"hello", "d/README.md": b"#"}),
                       "mixed.zip")
    assert sorted(skipped_files(root)) == ["d/README.md", "d/b/notes.txt"]
    assert not list(root.rglob("*.txt")) and not list(root.rglob("*.md"))


def test_dataset_card_finds_duplicates_and_train_test_overlap(tmp_path):
    from tlcore.data.card import dataset_card

    root = tmp_path / "data"
    for split in ("train", "test"):
        for c, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            (root / split / c).mkdir(parents=True)
    shades = {c: [(i * 20 + (c == "b") * 5, 40, 40) for i in range(6)] for c in "ab"}
    for c in "ab":
        for i, shade in enumerate(shades[c]):
            (root / "train" / c / f"{i}.png").write_bytes(_png(12, 10, shade))
        (root / "test" / c / "t0.png").write_bytes(_png(12, 10, (1, 250, 1 + (c == "b"))))
    (root / "train" / "a" / "copy.png").write_bytes(_png(12, 10, shades["a"][0]))  # duplicate inside train
    (root / "test" / "b" / "leak.png").write_bytes(_png(12, 10, shades["b"][3]))  # a training image in test
    (root / "train" / "b" / "broken.png").write_bytes(b"not a png")
    card = dataset_card(DatasetSpec(str(root)))
    assert card.counts.loc["a", "train"] + card.counts.loc["a", "val"] == 7
    assert card.counts.loc["b", "test"] == 2
    assert any(sorted(Path(p).name for p in group) == ["0.png", "copy.png"] for group in card.duplicates)
    assert [(Path(a).name, Path(b).name) for a, b in card.train_test_overlap] == [("3.png", "leak.png")]
    assert any("broken.png" in p["path"] for p in card.problems)
    assert card.sizes.loc["width", "max"] == 12 and any("inflated" in n for n in card.notes)
    assert all(len(v) >= 1 for v in card.samples.values())
