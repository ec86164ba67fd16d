"""Zip uploads: extracted under TLCORE_HOME by content hash; traversal, absolute paths, symlinks, oversize archives,
zip bombs (by their headers, and by what they really unpack to) and uploads past the quota are refused and leave
nothing on disk; images that do not decode are left out and listed. The hostile archives are real, built here."""

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
    assert sorted(skipped_files(root)) == ["d/README.md: not an image file", "d/b/notes.txt: not an image file"]
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


# ------------------------------------------------------------------------------------------------ hostile archives
def _noise_png(seed: int, size: int = 48) -> bytes:
    """An incompressible image: its size on disk is what a quota counts."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _left_on_disk(home: Path) -> tuple[int, list[Path]]:
    """Bytes under the uploads folder, and any temporary extraction folders left behind."""
    uploads = home / "datasets" / "uploads"
    if not uploads.exists():
        return 0, []
    return (sum(p.stat().st_size for p in uploads.rglob("*") if p.is_file()),
            [p for p in uploads.iterdir() if p.name.startswith(".extract-")])


@pytest.mark.slow
def test_zip_bomb_is_refused_before_anything_is_written(isolated_home):
    buf, zeros = io.BytesIO(), bytes(2**20)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("data/cat/big.png", "w",
                                                                      force_zip64=True) as entry:
        for _ in range(1024):  # 1 GiB of zeros, streamed: memory stays at one chunk
            entry.write(zeros)
    bomb = buf.getvalue()
    assert len(bomb) < 2 * 2**20
    with pytest.raises(DataError, match=r"'bomb.zip' contains 'data/cat/big.png', which looks like a zip bomb") as exc:
        extract_zip(bomb, "bomb.zip")
    assert "nothing of it was kept" in str(exc.value) and "upload again" in str(exc.value)
    size, leftovers = _left_on_disk(isolated_home)
    assert size < 4096 and leftovers == []


def _lying_zip(entry: str, data: bytes, padding: bytes, claimed: int | None = None) -> bytes:
    """One deflated entry whose headers claim the padding after its data as part of it (the stored size then looks
    large enough for the unpacked size, so only counting what is really read can catch it), and claim `claimed` as
    its unpacked size when given."""
    import struct
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = packer.compress(data) + packer.flush() + padding
    crc, fname, size = zlib.crc32(data), entry.encode(), len(data) if claimed is None else claimed
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(body), size, len(fname), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(body), size, len(fname),
                          0, 0, 0, 0, 0, 0)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(fname),
                      len(local) + len(fname) + len(body), 0)
    return local + fname + body + central + fname + end


def test_a_header_that_lies_is_caught_while_streaming(isolated_home):
    import numpy as np

    padding = np.random.default_rng(0).integers(0, 256, 512 * 2**10, dtype=np.uint8).tobytes()
    liar = _lying_zip("d/c/zeros.png", bytes(16 * 2**20), padding)
    info = zipfile.ZipFile(io.BytesIO(liar)).infolist()[0]
    assert info.file_size < 100 * info.compress_size  # the header alone looks like a photo
    with pytest.raises(DataError, match="zip bomb: it unpacked past .* more than its header said"):
        extract_zip(liar, "liar.zip")
    assert _left_on_disk(isolated_home) == (0, [])
    # the archive itself is valid: with no ratio limit it is read through, the zeros are left out as no image, and
    # with no image left it is refused for holding no class folder with images
    with pytest.raises(DataError, match=r"'liar.zip' holds no class folder with images.*d/c/zeros.png: not an image "
                                        r"Pillow can read"):
        extract_zip(liar, "liar.zip", max_ratio=10**9)
    assert _left_on_disk(isolated_home) == (0, [])


def test_the_streaming_guard_stops_as_soon_as_the_ratio_passes():
    from tlcore.data.uploads import _Budget, _copy_entry

    out = io.BytesIO()
    with pytest.raises(DataError, match="'t.zip' contains 'x.png', which looks like a zip bomb"):
        _copy_entry(io.BytesIO(bytes(10 * 2**20)), out, lambda: 100, "x.png", _Budget("t.zip", 2**40, 2**40, 0),
                    max_ratio=10, floor=1000)
    assert len(out.getvalue()) <= 64 * 2**10  # stopped at the first chunk past the limit, not at the end


def test_the_upload_quota_refuses_what_does_not_fit(isolated_home, monkeypatch):
    monkeypatch.setenv("TLCORE_UPLOAD_QUOTA", "24K")
    first = extract_zip(_zip({"a/x/1.png": _noise_png(1), "a/y/1.png": _noise_png(2)}), "first.zip")
    used, _ = _left_on_disk(isolated_home)
    assert 12 * 2**10 < used < 24 * 2**10
    with pytest.raises(DataError, match=r"'second.zip' needs .* uploads may take 24 KiB in all \(TLCORE_UPLOAD_QUOTA\)"
                                        r"; .* is in use.*TLCORE_UPLOAD_QUOTA=20G"):
        extract_zip(_zip({"b/x/1.png": _noise_png(3), "b/y/1.png": _noise_png(4)}), "second.zip")
    assert _left_on_disk(isolated_home) == (used, [])  # the first is intact, nothing of the second remains
    assert sorted(p.name for p in first.rglob("*.png")) == ["1.png", "1.png"]
    assert extract_zip(_zip({"a/x/1.png": _noise_png(1), "a/y/1.png": _noise_png(2)}), "again.zip") == first


def test_the_quota_counts_the_bytes_really_written():
    from tlcore.data.uploads import _Budget

    budget = _Budget("small.zip", max_bytes=2**30, quota=1000, used=600)
    budget.spend(400)
    with pytest.raises(DataError, match=r"'small.zip' needs more than 401 bytes.*1,000 bytes in all.*600 bytes is in"):
        budget.spend(1)


def test_a_header_that_understates_the_size_is_refused_as_damaged(isolated_home, monkeypatch):
    monkeypatch.setenv("TLCORE_UPLOAD_QUOTA", "100K")  # the header says 10 kB: it would pass the quota
    liar = _lying_zip("d/c/1.png", _noise_png(9, size=256), b"", claimed=10_000)
    with pytest.raises(DataError, match="'under.zip' is damaged .* 'd/c/1.png' cannot be read"):
        extract_zip(liar, "under.zip")
    assert _left_on_disk(isolated_home) == (0, [])


def test_least_recently_used_unreferenced_uploads_make_room(isolated_home, monkeypatch):
    import os
    import time

    monkeypatch.setenv("TLCORE_UPLOAD_QUOTA", "40K")
    archives = {k: _zip({f"{k}/x/1.png": _noise_png(10 * i), f"{k}/y/1.png": _noise_png(10 * i + 1)})
                for i, k in enumerate("abcd")}
    a, b = extract_zip(archives["a"], "a.zip"), extract_zip(archives["b"], "b.zip")
    now = time.time()
    os.utime(a.parent / ".complete", (now - 200, now - 200))
    os.utime(b.parent / ".complete", (now - 100, now - 100))
    assert extract_zip(archives["a"], "a.zip") == a  # a used again: now b is the least recently used
    with pytest.raises(DataError, match="TLCORE_UPLOAD_QUOTA"):
        extract_zip(archives["c"], "c.zip")  # without the referenced paths nothing is removed
    assert a.exists() and b.exists()
    c = extract_zip(archives["c"], "c.zip", keep=frozenset())
    assert a.exists() and c.exists() and not b.parent.exists()
    with pytest.raises(DataError, match="TLCORE_UPLOAD_QUOTA"):  # both in use by stored records: kept
        extract_zip(archives["d"], "d.zip", keep=frozenset({str(a), str(c / "x")}))
    assert a.exists() and c.exists() and _left_on_disk(isolated_home)[1] == []


def test_quota_sizes_parse(monkeypatch):
    from tlcore.core.errors import ConfigError
    from tlcore.data.uploads import DEFAULT_QUOTA, parse_size, upload_quota

    assert [parse_size(t) for t in ("123", "500M", "10G", "1.5GiB", "2 kb")] == [
        123, 500 * 2**20, 10 * 2**30, 3 * 2**29, 2048]
    monkeypatch.delenv("TLCORE_UPLOAD_QUOTA", raising=False)
    assert upload_quota() == DEFAULT_QUOTA == 10 * 2**30
    monkeypatch.setenv("TLCORE_UPLOAD_QUOTA", "lots")
    with pytest.raises(ConfigError, match="TLCORE_UPLOAD_QUOTA='lots' is not a size"):
        upload_quota()


def test_images_that_do_not_decode_are_deleted_and_listed(isolated_home):
    import numpy as np

    from tlcore.data.uploads import skipped_files

    garbage = np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    noise = _noise_png(5)
    root = extract_zip(_zip({"d/a/1.png": _png(8, 8), "d/a/2.png": _png(8, 8, (1, 2, 3)), "d/b/1.png": _png(9, 9),
                             "d/b/bad.png": garbage, "d/b/cut.png": noise[:len(noise) // 2], "d/b/x.txt": b"x"}),
                       "broken.zip")
    assert not (root / "b" / "bad.png").exists() and not (root / "b" / "cut.png").exists()
    assert (root / "b" / "1.png").exists()
    skipped = sorted(skipped_files(root))
    assert skipped[0] == "d/b/bad.png: not an image Pillow can read"
    assert skipped[1].startswith("d/b/cut.png: corrupt or truncated image")
    assert skipped[2] == "d/b/x.txt: not an image file"


def test_skipped_lists_from_older_versions_still_read(tmp_path):
    from tlcore.data.uploads import skipped_files

    (tmp_path / "d").mkdir()
    (tmp_path / ".skipped.json").write_text('["d/notes.txt"]')
    assert skipped_files(tmp_path / "d") == ["d/notes.txt: not an image file"]


def test_upload_label_names_the_archive_never_the_server_path(isolated_home, tmp_path):
    from tlcore.data.uploads import upload_label

    photos = extract_zip(_zip({"photos/a/1.png": _png(8, 8), "photos/b/1.png": _png(9, 9)}), "photos.zip")
    assert upload_label(photos) == "photos.zip" and upload_label(str(photos)) == "photos.zip"
    assert upload_label(photos / "a") == "photos.zip/a" and upload_label(photos.parent) == "photos.zip"
    flat = extract_zip(_zip({"a/1.png": _png(8, 8, (5, 5, 5)), "b/1.png": _png(9, 9, (5, 5, 5))}),
                       "C:\\Users\\me\\flat.zip")
    assert upload_label(flat) == "flat.zip" and upload_label(flat / "b") == "flat.zip/b"
    uploads = isolated_home / "datasets" / "uploads"
    for other in (tmp_path, uploads, uploads / "0123456789abcdef0123", isolated_home / "datasets"):
        assert upload_label(other) is None


# ------------------------------------------------------------------------------------- class folders and messages
REPO = Path(__file__).resolve().parents[1]


def _bits_png(width: int, height: int) -> bytes:
    """A real 1-bit PNG: a huge image in a few kB, written in well under a second."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, "PNG")
    return buf.getvalue()


def _three(colour: int) -> dict[str, bytes]:
    return {f"{i}.png": _png(8, 8, (colour, i, 0)) for i in range(3)}


def _assert_private(message: str, home: Path) -> None:
    for private in (str(home), str(REPO), "/datasets/uploads", ".extract-"):
        assert private not in message, f"{private!r} in {message!r}"


@pytest.mark.parametrize("entries, message", [
    ({"pets/cat/1.png": b"", "pets/cat/2.png": b""},
     r"'pets.zip' has 1 class folder with images \('cat'\); at least 2 are needed"),
    ({"pets/cat/notes.txt": b"x", "pets/dog/": b"", "pets/readme.md": b"#"},
     r"'pets.zip' holds no class folder with images.*pets/cat/notes.txt: not an image file"),
    ({}, r"'pets.zip' holds no class folder with images, so there is nothing to train on"),
    ({"pets/train/cat/1.png": b"", "pets/train/dog/1.png": b"", "pets/val/cat/": b""},
     r"'pets.zip': its 'pets/val/' folder holds no class folder with images.*pets/val/cat/: empty class folder"),
], ids=["one-class", "zero-images", "empty-zip", "empty-val"])
def test_an_archive_that_makes_no_dataset_is_refused_by_its_name(isolated_home, entries, message):
    entries = {k: (_png(8, 8, (len(k), 0, 0)) if k.endswith(".png") else v) for k, v in entries.items()}
    with pytest.raises(DataError, match=message) as exc:
        extract_zip(_zip(entries), "pets.zip")
    assert "nothing of it was kept" in str(exc.value) and "upload" in str(exc.value).split("kept.")[-1]
    _assert_private(str(exc.value), isolated_home)
    assert _left_on_disk(isolated_home) == (0, [])


def test_no_message_refusing_an_upload_shows_a_server_path(isolated_home):
    """Every way an upload is refused at extraction, and the dataset's own checks on an extracted upload, name the
    archive and the entries inside it, never TLCORE_HOME or where tlcore is installed."""
    from tlcore.data.dataset import DatasetSpec
    from tlcore.data.load import load_dataset

    refused = {
        "one.zip": _zip({"one/cat/1.png": _png(8, 8)}),
        "none.zip": _zip({"none/cat/a.txt": b"x"}),
        "empty.zip": _zip({}),
        "huge.zip": _zip({"h/a/1.png": _png(8, 8), "h/b/1.png": _bits_png(8000, 8000)}),
        "notazip.zip": b"PK nothing",
        "escape.zip": _zip({"../x/1.png": b"x"}),
    }
    for name, data in refused.items():
        with pytest.raises(DataError) as exc:
            extract_zip(data, name)
        assert f"'{name}'" in str(exc.value)
        _assert_private(str(exc.value), isolated_home)
    assert _left_on_disk(isolated_home) == (0, [])
    # extracted, then refused by the dataset rules (a class needs 3 images for train/val/test): named by the archive
    few = extract_zip(_zip({**{f"few/a/{k}": v for k, v in _three(10).items()}, "few/b/1.png": _png(9, 9)}), "few.zip")
    with pytest.raises(DataError, match=r"Class 'b' of 'few.zip' has 1 usable image") as exc:
        load_dataset(DatasetSpec(str(few)))
    _assert_private(str(exc.value), isolated_home)
    ok = extract_zip(_zip({**{f"ok/a/{k}": v for k, v in _three(10).items()},
                           **{f"ok/b/{k}": v for k, v in _three(20).items()}}), "ok.zip")
    with pytest.raises(DataError, match=r"Class\(es\) \['z'\] are not in 'ok.zip'") as exc:
        load_dataset(DatasetSpec(str(ok), classes=("a", "z")))
    _assert_private(str(exc.value), isolated_home)


def test_class_folders_without_images_are_dropped_and_listed(isolated_home):
    from tlcore.data.dataset import DatasetSpec
    from tlcore.data.load import load_dataset
    from tlcore.data.uploads import skipped_files

    garbage = b"\x89PNG but not really" * 50
    entries = {**{f"pets/dog/{k}": v for k, v in _three(10).items()},
               **{f"pets/bird/{k}": v for k, v in _three(20).items()},
               "pets/cat/": b"", "pets/fish/notes.txt": b"x", "pets/owl/broken.png": garbage}
    root = extract_zip(_zip(entries), "pets.zip")
    skipped = skipped_files(root)
    assert "pets/cat/: empty class folder, dropped: no images in it" in skipped
    assert "pets/fish/: class folder dropped: every file in it was left out (listed here)" in skipped
    assert "pets/owl/: class folder dropped: every file in it was left out (listed here)" in skipped
    assert "pets/fish/notes.txt: not an image file" in skipped
    assert "pets/owl/broken.png: not an image Pillow can read" in skipped
    assert sorted(p.name for p in root.iterdir()) == ["bird", "dog"]
    assert load_dataset(DatasetSpec(str(root))).classes == ["bird", "dog"]


@pytest.mark.parametrize("side", [8000, 12000, 20000], ids=["64MP", "144MP", "400MP"])
def test_an_image_over_50_megapixels_refuses_the_archive_however_large(isolated_home, side):
    """Pillow warns above 89 megapixels and refuses above 179: neither may turn the refusal into a skipped file,
    even where warnings are errors."""
    import warnings

    archive = _zip({"d/a/1.png": _png(8, 8), "d/b/1.png": _png(9, 9), "d/a/big.png": _bits_png(side, side)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as exc:
            extract_zip(archive, "big.zip")
    megapixels = side * side // 1_000_000
    assert str(exc.value) == (f"'big.zip' contains 'd/a/big.png' of {side} x {side} = {megapixels} megapixels; the "
                              "limit is 50 megapixels an image. The archive was refused and nothing of it was kept; "
                              "downscale that image or leave it out, and upload again.")
    assert _left_on_disk(isolated_home) == (0, [])


@pytest.mark.parametrize("side", [8000, 20000], ids=["64MP", "400MP"])
def test_a_single_image_over_50_megapixels_gets_the_same_rule(side):
    """The 'Try it' and Anatomy uploads: the same limit and wording, never Pillow's DecompressionBomb text."""
    import warnings

    import timm

    from tlcore.deploy.load import Preprocessing
    from tlcore.engine.backbone import data_config

    upload = io.BytesIO(_bits_png(side, side))
    upload.name = "big.png"
    preprocessing = Preprocessing(data_config(timm.create_model("test_efficientnet"), 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as exc:
            preprocessing.open(upload)
    megapixels = side * side // 1_000_000
    assert str(exc.value) == (f"'big.png' is {side} x {side} = {megapixels} megapixels; the limit is 50 megapixels "
                              "an image. Downscale it first.")
