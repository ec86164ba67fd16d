"""Data layer: stratified and nested splits, split folders, image mode conversion and every bad input's message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image_folder
from tlcore.data.dataset import DatasetSpec, open_rgb, prepare_split, to_rgb
from tlcore.data.load import load_dataset
from tlcore.core.errors import DataError


def _spec(path, **kw) -> DatasetSpec:
    return DatasetSpec(str(path), **kw)


def test_split_is_stratified_disjoint_and_covers_every_image(image_folder):
    ds = load_dataset(_spec(image_folder, val_fraction=0.25, test_fraction=0.25))
    parts = [set(ds.indices[s].tolist()) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(parts[0] | parts[1] | parts[2]) == 36
    for split in ("train", "val", "test"):
        counts = ds.counts(split)
        assert set(counts) == {"class_0", "class_1", "class_2"}
        assert len(set(counts.values())) == 1, f"{split} is not stratified: {counts}"
    assert ds.counts("test")["class_0"] == 3 and ds.counts("val")["class_0"] == 3


def test_per_class_subsets_are_nested_and_val_test_fixed(image_folder):
    small = load_dataset(_spec(image_folder, per_class=2), seed=5)
    large = load_dataset(_spec(image_folder, per_class=4), seed=5)
    full = load_dataset(_spec(image_folder), seed=5)
    assert set(small.indices["train"]) < set(large.indices["train"]) < set(full.indices["train"]) | {-1}
    assert all(n == 2 for n in small.counts("train").values())
    assert all(n == 4 for n in large.counts("train").values())
    for split in ("val", "test"):
        assert np.array_equal(small.indices[split], large.indices[split])
        assert np.array_equal(small.indices[split], full.indices[split])
    other_seed = load_dataset(_spec(image_folder, per_class=2), seed=6)
    assert np.array_equal(other_seed.indices["test"], small.indices["test"])  # test set independent of the seed


def test_builtin_fashion_mnist_nested_and_constant_test():
    a = load_dataset(DatasetSpec("fashion-mnist", per_class=10), seed=0)
    b = load_dataset(DatasetSpec("fashion-mnist", per_class=50), seed=0)
    assert len(a.indices["train"]) == 100 and len(b.indices["train"]) == 500
    assert set(a.indices["train"]) <= set(b.indices["train"])
    assert len(a.indices["test"]) == 1000 and np.array_equal(a.indices["test"], b.indices["test"])
    assert a.pools["test"] is not a.pools["train"]  # the official test images, never training images


def test_digits_builtin_loads():
    ds = load_dataset("digits")
    assert ds.num_classes == 10 and sum(ds.counts("train").values()) > 1000


def test_split_folders(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=6)
    make_image_folder(tmp_path / "d" / "test", per_class=2, seed=1)
    ds = load_dataset(_spec(tmp_path / "d"))
    assert len(ds.indices["test"]) == 6 and ds.pools["test"] is not ds.pools["train"]
    assert all(n >= 1 for n in ds.counts("val").values())
    assert len(ds.indices["train"]) + len(ds.indices["val"]) == 18


def test_missing_folder_message(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(_spec(tmp_path / "nope"))


def test_unknown_builtin_message():
    with pytest.raises(DataError, match="neither a built-in dataset"):
        load_dataset("cifar-eleven")


def test_empty_folder_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no sub-folders"):
        load_dataset(_spec(tmp_path / "empty"))


def test_one_class_message(tmp_path):
    make_image_folder(tmp_path / "one", classes=1)
    with pytest.raises(DataError, match="at least 2 are needed"):
        load_dataset(_spec(tmp_path / "one"))


def test_class_with_too_few_images_named(tmp_path):
    root = make_image_folder(tmp_path / "few", per_class=8)
    for p in sorted((root / "class_2").iterdir())[2:]:
        p.unlink()
    with pytest.raises(DataError, match="Class 'class_2'.* has 2 usable image"):
        load_dataset(_spec(root))


def test_empty_class_folder_named(tmp_path):
    root = make_image_folder(tmp_path / "e")
    (root / "class_9").mkdir()
    with pytest.raises(DataError, match="class_9"):
        load_dataset(_spec(root))


def test_corrupt_truncated_and_non_image_files_are_skipped_and_listed(image_folder):
    good = sorted((image_folder / "class_0").iterdir())[0].read_bytes()
    (image_folder / "class_0" / "truncated.png").write_bytes(good[: len(good) // 2])
    (image_folder / "class_1" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (image_folder / "class_1" / "notes.txt").write_text("hello")
    ds = load_dataset(_spec(image_folder))
    reasons = {p.path.rsplit("/", 1)[-1]: p.reason for p in ds.problems}
    assert set(reasons) == {"truncated.png", "garbage.jpg", "notes.txt"}
    assert "corrupt or truncated" in reasons["truncated.png"]
    assert "not an image" in reasons["garbage.jpg"] and "not an image" in reasons["notes.txt"]
    assert sum(len(v) for v in ds.indices.values()) == 36
    assert any("3 file(s) skipped" in n for n in ds.notes)


def test_nothing_usable_is_an_error_listing_files(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "bad" / c).mkdir(parents=True)
        (tmp_path / "bad" / c / "x.png").write_bytes(b"not png")
    with pytest.raises(DataError, match="No usable images.*x.png"):
        load_dataset(_spec(tmp_path / "bad"))


def test_decompression_bomb_refused(image_folder, monkeypatch):
    Image.new("L", (300, 300)).save(image_folder / "class_0" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 // 2 - 1)  # so 300x300 exceeds 2x the limit
    ds = load_dataset(_spec(image_folder))
    bomb = [p for p in ds.problems if p.path.endswith("huge.png")]
    assert bomb and "decompression-bomb" in bomb[0].reason


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "L", "I;16", "1"])
def test_modes_become_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16))
    elif mode == "P":
        img = base.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        img = base.convert(mode)
    path = tmp_path / f"img.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
    img.save(path)
    rgb = open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (20, 20)
    if mode == "I;16":  # 16-bit data keeps its dynamic range instead of clipping to white
        arr = np.asarray(rgb)
        assert 50 < arr.mean() < 200 and arr.std() > 30


def test_rgba_transparent_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(img))[0, 0].tolist() == [255, 255, 255]


def test_prepare_split_shapes_and_grey_to_rgb():
    import timm

    from tlcore.engine.backbone import data_config, eval_transform

    ds = load_dataset(DatasetSpec("fashion-mnist", per_class=3))
    cfg = data_config(timm.create_model("test_efficientnet"), 48)
    prepared = prepare_split(ds, "train", eval_transform(cfg))
    assert tuple(prepared.images.shape) == (30, 3, 48, 48) and prepared.images.dtype.is_floating_point is False
    assert (prepared.images[:, 0] == prepared.images[:, 1]).all()  # grey copied to 3 channels


def test_torchvision_dataset_offline_says_how_to_get_it():
    with pytest.raises(DataError, match="offline.*download=True"):
        load_dataset("cifar10")


def test_class_folders_without_usable_images_are_named(tmp_path):
    """In a folder on the server a class folder is never dropped silently: without usable images in train it is an
    error naming it; in val/ or test/ the dataset says which split lacks the class."""
    root = make_image_folder(tmp_path / "e")
    (root / "class_8").mkdir()
    (root / "class_8" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"class folder\(s\) \['class_8'\] contain no usable images"):
        load_dataset(_spec(root))
    split = tmp_path / "s"
    make_image_folder(split / "train", per_class=6)
    make_image_folder(split / "val", per_class=2, seed=1)
    for p in (split / "val" / "class_1").iterdir():
        p.unlink()
    ds = load_dataset(_spec(split))
    assert ds.counts("val")["class_1"] == 0
    assert "val/class_1/: class folder with no usable images, so val has no 'class_1' images." in ds.notes


@pytest.mark.parametrize("side", [8000, 20000], ids=["64MP", "400MP"])
def test_an_image_over_50_megapixels_in_a_folder_is_skipped_by_the_same_rule(image_folder, side):
    """Above 50 megapixels (read from the header) an image in a server folder is skipped and listed with the rule's
    own words, however large, and Pillow's DecompressionBombWarning never escapes."""
    import warnings

    Image.new("1", (side, side)).save(image_folder / "class_0" / "huge.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(_spec(image_folder))
    huge = [p.reason for p in ds.problems if p.path.endswith("huge.png")]
    expected = (f"refused: {side} x {side} = {side * side // 1_000_000} megapixels; the limit is 50 megapixels an "
                "image. Downscale it to use it")
    assert huge == [expected]
    assert any("huge.png: refused" in n for n in ds.notes)


def test_header_size_reads_any_first_bytes_without_raising(tmp_path):
    """An empty or truncated file is a file Pillow cannot read, not a crash of the folder scan."""
    import io

    from tlcore.data.dataset import header_size

    for prefix in (b"", b"B", b"BM", b"\x89PNG", b"GIF8", b"\xff\xd8"):
        assert header_size(io.BytesIO(prefix)) is None


def test_a_gif_whose_frame_claims_a_huge_size_is_read_without_pillows_warning():
    """Pillow's own bomb check (a warning above 89 MP) must not reach the user: the 50-megapixel rule says it."""
    import io
    import warnings

    from PIL import Image

    from tlcore.data.dataset import header_size, over_pixel_limit

    buffer = io.BytesIO()
    Image.new("P", (1, 1)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    frame = data.index(b",")
    for at in (6, frame + 5):  # the logical screen and the frame: 12000 x 12000
        data[at:at + 4] = (12000).to_bytes(2, "little") * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        size = header_size(io.BytesIO(bytes(data)))
    assert size == (12000, 12000) and "144 megapixels; the limit is 50 megapixels" in over_pixel_limit(size)
