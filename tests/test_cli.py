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


@pytest.mark.slow
def test_skipped_files_are_summarised_and_listed_in_full(image_folder, tiny_weights, tmp_path, capsys):
    bad = image_folder / "class_0"
    (bad / "empty.png").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(next(image_folder.glob("class_1/*.png")).read_bytes()[:200])
    (bad / "notes.txt").write_text("not an image")
    (bad / "huge.png").write_bytes(_png_header(20000, 20000))
    out = tmp_path / "out"
    code = main(["compare", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--per-class", "all", "--image-size", "32", "--strategies", "feature-extraction",
                 "--preset", "quick", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "4 file(s) skipped (first 3:" in printed and "the full list is in the result's JSON" in printed
    skipped = json.loads((out / "comparison.json").read_text())["dataset"]["skipped"]
    assert sorted(s["path"] for s in skipped) == sorted(f"class_0/{n}" for n in ("empty.png", "truncated.jpg",
                                                                                 "notes.txt", "huge.png"))
    assert all(s["reason"] for s in skipped) and str(tmp_path) not in json.dumps(skipped)  # no server paths
    assert main(["recommend", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--image-size", "32", "--no-evidence"]) == 0
    assert "4 file(s) skipped (first 3:" in capsys.readouterr().out  # measuring says so too


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
