"""The command line: a run writes JSON and CSV; bad input exits 2 with a one-line message and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tlcore.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compare_writes_table_json_and_csv(image_folder, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compare", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--per-class", "0", "--image-size", "32", "--epochs", "1", "--scratch-epochs",
                 "1", "--batch-size", "8", "--ft-stages", "1", "--preset", "quick", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for name in ("feature-extraction", "fine-tune", "scratch"):
        assert name in printed
    data = json.loads((out / "comparison.json").read_text())
    assert [r["status"] for r in data["runs"]] == ["completed"] * 3
    assert data["config"]["backbone"]["name"] == "test_efficientnet" and data["config"]["seed"] == 0
    assert data["environment"]["torch"] and data["runs"][0]["weights"]["sha256"]
    csv = (out / "comparison.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("strategy,status,accuracy")
    # --config re-runs the saved config: same seed, same numbers
    assert main(["compare", "--config", str(out / "comparison.json"), "--out", str(tmp_path / "again"),
                 "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "comparison.json").read_text())
    assert [r["accuracy"] for r in again["runs"]] == [r["accuracy"] for r in data["runs"]]
    assert again["config"] == data["config"]


@pytest.mark.slow
def test_bad_dataset_exits_2_with_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tlcore", "compare", "--dataset", str(tmp_path / "missing"),
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_strategy_exits_2(image_folder, capsys):
    code = main(["compare", "--dataset", str(image_folder), "--strategies", "linear-svm", "--no-progress"])
    assert code == 2 and "Unknown strategy 'linear-svm'" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    for option in ("--dataset", "--per-class", "--backbone", "--weights", "--strategies", "--ft-stages", "--lp-ft",
                   "--backbone-lr-ratio", "--bn-policy", "--image-size", "--seed", "--device", "--out"):
        assert option in text


def test_datasets_command_lists_builtins(capsys):
    assert main(["datasets"]) == 0
    text = capsys.readouterr().out
    assert "fashion-mnist" in text and "digits" in text and "cifar10" in text


@pytest.mark.slow
def test_sweep_prints_table_and_crossovers_writes_files_and_resumes(image_folder, tiny_weights, tmp_path, capsys):
    args = ["sweep", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
            str(tiny_weights), "--sizes", "2,all", "--repeats", "2", "--image-size", "32", "--epochs", "1",
            "--scratch-epochs", "1", "--batch-size", "8", "--ft-stages", "1", "--preset", "quick", "--no-progress",
            "--out", str(tmp_path / "sweep")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "test accuracy: mean [95% interval]" in printed and "crossovers:" in printed
    assert "12 cells (0 from the store)" in printed
    data = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert len(data["cells"]) == 12 and len(data["summary"]) == 6 and len(data["crossovers"]) == 2
    assert (tmp_path / "sweep" / "sweep_summary.csv").exists()
    assert main(args) == 0  # the same command again: every cell comes from the store
    assert "12 cells (12 from the store)" in capsys.readouterr().out
    # the saved JSON's config is the same sweep: same content keys, nothing recomputed
    assert main(["sweep", "--config", str(tmp_path / "sweep" / "sweep.json"), "--no-progress"]) == 0
    assert "12 cells (12 from the store)" in capsys.readouterr().out


def test_sweep_bad_sizes_exit_2(capsys):
    assert main(["sweep", "--sizes", "5,ten", "--no-progress"]) == 2
    assert "'ten' is not a whole number of images per class" in capsys.readouterr().err


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and holds no pixels: a decompression bomb for whoever decodes it."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _huge_png(path, side: int = 8000) -> None:
    """A real PNG over 50 megapixels, a few kB on disk (1-bit zeros)."""
    from PIL import Image

    Image.new("1", (side, side)).save(path)


@pytest.mark.slow
def test_skipped_files_are_summarised_and_listed_in_full(image_folder, tiny_weights, tmp_path, capsys):
    bad = image_folder / "class_0"
    (bad / "empty.png").write_bytes(b"")
    (bad / "empty2.png").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(next(image_folder.glob("class_1/*.png")).read_bytes()[:200])
    (bad / "notes.txt").write_text("not an image")
    _huge_png(bad / "huge.png")
    (image_folder / "README.txt").write_text("about these images")
    out = tmp_path / "out"
    code = main(["compare", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--per-class", "all", "--image-size", "32", "--strategies", "feature-extraction",
                 "--preset", "quick", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = ("6 file(s) skipped: 2 not readable by Pillow (e.g. class_0/empty.png), 1 not an image file "
               "(class_0/notes.txt), 1 outside any class folder (README.txt), 1 over 50 megapixels "
               "(class_0/huge.png), 1 truncated (class_0/truncated.jpg); the full list is in the result's JSON")
    assert summary in printed
    skipped = json.loads((out / "comparison.json").read_text())["dataset"]["skipped"]
    assert sorted(s["path"] for s in skipped) == sorted(["README.txt"] + [f"class_0/{n}" for n in (
        "empty.png", "empty2.png", "truncated.jpg", "notes.txt", "huge.png")])
    assert all(s["reason"] for s in skipped) and str(tmp_path) not in json.dumps(skipped)  # no server paths
    assert main(["recommend", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--image-size", "32", "--no-evidence"]) == 0
    assert summary in capsys.readouterr().out  # measuring says so too


def test_skipped_files_are_summarised_by_kind_with_a_count_and_one_example():
    from tlcore.views.text import skipped_text

    reasons = {"cat/empty.jpg": "not an image Pillow can read", "cat/a.jpg": "not an image Pillow can read",
               "cat/truncated.jpg": "corrupt or truncated (image file is truncated (3 bytes not processed))",
               "cat/b.jpg": "corrupt or truncated (image file is truncated)",
               "dog/c.jpg": "corrupt or truncated image (image file is truncated (9 bytes not processed))",
               "dog/d.png": "'d.png' could not be decoded (image file is truncated); replace the file.",
               "cat/huge.png": "refused: 8000 x 8000 = 64 megapixels; the limit is 50 megapixels an image. "
                               "Downscale it to use it",
               "dog/huge.gif": "'huge.gif' is 144 megapixels; the limit is 50 megapixels an image. Downscale it first.",
               "dog/broken.png": "corrupt or truncated (broken data stream when reading image file)",
               "README.txt": "file at the top level, outside any class folder; skipped"}
    text = skipped_text({"skipped": [{"path": p, "reason": r} for p, r in reasons.items()]})
    assert text == ("10 file(s) skipped: 4 truncated (e.g. cat/truncated.jpg), 2 not readable by Pillow (e.g. "
                    "cat/empty.jpg), 2 over 50 megapixels (e.g. cat/huge.png), 1 corrupt (dog/broken.png), 1 outside "
                    "any class folder (README.txt); the full list is in the result's JSON")
    assert skipped_text({"skipped": []}) == ""


@pytest.fixture
def head_run(image_folder, tiny_weights) -> str:
    from tlcore import build_config, compare

    config = build_config("quick", dataset=str(image_folder), backbone="test_efficientnet", weights=str(tiny_weights),
                          per_class="all", image_size=32, strategies=["feature-extraction"],
                          strategy_options={"feature-extraction": {"head_max_iter": 40}})
    return compare(config).runs[0].run_id


def _frames_gif(side: int) -> bytes:
    """A small GIF whose first frame claims side x side: Pillow's decompression-bomb check runs on its header."""
    import struct

    head = b"GIF89a" + struct.pack("<HHBBB", 100, 100, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return head + b"," + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x4c\x01\x00;"


def test_predict_on_a_folder_without_a_usable_image_exits_2_naming_the_reasons(head_run, image_folder, tmp_path,
                                                                                 capsys):
    import warnings

    bad = tmp_path / "bad"
    (bad / "cat").mkdir(parents=True)
    (bad / "cat" / "empty.jpg").write_bytes(b"")
    (bad / "cat" / "truncated.png").write_bytes(next(image_folder.glob("class_1/*.png")).read_bytes()[:200])
    (bad / "cat" / "frames.gif").write_bytes(_frames_gif(12_000))  # Pillow warns about its size
    _huge_png(bad / "huge.png")
    (bad / "README.txt").write_text("notes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        code = main(["predict", "--run", head_run, str(bad)])
    out, err = capsys.readouterr()
    assert code == 2 and "Empty DataFrame" not in out
    assert err == (f"error: No image in '{bad}' could be used: 2 over 50 megapixels (e.g. cat/frames.gif), 1 not "
                   "an image file (README.txt), 1 not readable by Pillow (cat/empty.jpg), 1 truncated "
                   "(cat/truncated.png). Give JPEG, PNG, BMP, GIF, TIFF or WebP images of at most 50 megapixels "
                   "each.\n")
    assert main(["predict", "--run", head_run, str(tmp_path / "bad" / "README.txt")]) == 2
    assert "No image files in" in capsys.readouterr().err


def test_predict_names_files_inside_the_folder_and_summarises_the_skipped_ones(head_run, image_folder, tmp_path,
                                                                               capsys):
    (image_folder / "class_0" / "empty.png").write_bytes(b"")
    (image_folder / "notes.txt").write_text("notes")
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--run", head_run, str(image_folder), "--top-k", "2", "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    rows = out.read_text().splitlines()
    assert rows[0] == "image,class_1,probability_1,class_2,probability_2" and len(rows) == 37
    assert rows[1].startswith("class_0/img_000.png,") and str(tmp_path) not in out.read_text()
    assert err.splitlines()[0] == ("2 file(s) skipped: 1 not an image file (notes.txt), 1 not readable by Pillow "
                                   "(class_0/empty.png)")
    assert "  class_0/empty.png: 'empty.png' is not an image Pillow can read" in err
    assert main(["predict", "--run", head_run, str(image_folder), "--top-k", "0"]) == 2
    assert "--top-k 0: give 1 or more classes" in capsys.readouterr().err


def test_predict_and_export_options_all_say_what_they_do(capsys):
    import argparse

    from tlcore.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("predict", "export"):
        undocumented = [a.dest for a in commands[name]._actions if not a.help]
        assert not undocumented, (name, undocumented)
    helps = {a.dest: a.help for a in commands["export"]._actions}
    assert "pip install -r requirements-export.txt" in helps["format"] and "MODEL_CARD.md" in helps["out"]
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "--top-k TOP_K" in capsys.readouterr().out


@pytest.mark.slow
def test_progress_into_a_pipe_is_one_line_per_phase_and_epoch(image_folder, tiny_weights, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tlcore", "compare", "--dataset", str(image_folder), "--backbone",
                           "test_efficientnet", "--weights", str(tiny_weights), "--per-class", "all",
                           "--image-size", "32", "--strategies", "scratch", "--scratch-epochs", "3",
                           "--batch-size", "8", "--preset", "quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(__import__("os").environ, TLCORE_HOME=str(tmp_path / "home")))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr and len(lines) < 40, lines
    assert any(line.startswith("scratch: training, epoch 3/3") for line in lines), lines
