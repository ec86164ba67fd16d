"""The time a run will take, said before it starts: from this machine's rates, measured once and kept; never kept
when measured on a busy machine; a busy machine is said."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.engine import rates as rates_module
from tlcore.experiments.config import SweepConfig
from tlcore.experiments.estimate import estimate_comparison, estimate_sweep


def _config(folder, weights) -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetSpec(str(folder), per_class=8),
                            backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=[make_strategy("feature-extraction"), make_strategy("fine-tune", epochs=2),
                                        make_strategy("scratch", epochs=4)], image_size=32)


def test_an_estimate_per_strategy_from_rates_measured_once(image_folder, tiny_weights, isolated_home, monkeypatch):
    monkeypatch.setattr(rates_module, "machine_busy", lambda *a, **k: "")
    first = estimate_comparison(_config(image_folder, tiny_weights), check_load=False)
    assert set(first.seconds) == {"feature-extraction", "fine-tune", "scratch"} and first.image_size == 32
    assert first.images == {"train": 24, "val": 3, "test": 6} and min(first.seconds.values()) > 0
    assert first.text().startswith("Estimated at most") and "busy" not in first.text()
    stored = json.loads((isolated_home / "calibration.json").read_text())
    assert list(stored) == [first.rates.key] and "test_efficientnet|32|cpu" in first.rates.key
    again = estimate_comparison(_config(image_folder, tiny_weights), check_load=False)
    assert again.rates == first.rates  # read back, not measured again
    sweep = estimate_sweep(SweepConfig(_config(image_folder, tiny_weights), sizes=(2, 4), repeats=2), check_load=False)
    assert set(sweep.seconds) == {"feature-extraction", "fine-tune", "scratch"}


def test_the_estimate_counts_each_schedule_in_full():
    """The arithmetic, on fixed rates: images through the frozen pass, optimizer steps of each schedule, val passes."""
    from tlcore.engine.rates import MachineRates
    from tlcore.experiments.estimate import HEAD_FIT_SECONDS, THROUGHPUT_IMAGES, strategy_seconds

    rates = MachineRates(forward=0.001, fine_tune=0.01, scratch=0.02, key="", measured_at=0.0)
    images = {"train": 640, "val": 100, "test": 200}
    fe = strategy_seconds(make_strategy("feature-extraction"), images, rates, features_shared=False)
    assert fe == pytest.approx(940 * 0.001 + HEAD_FIT_SECONDS + THROUGHPUT_IMAGES * 0.001)
    scratch = make_strategy("scratch", epochs=10, batch_size=64, min_steps=0)
    expected = 10 * 10 * 64 * 0.02 + 10 * 100 * 0.001 + 200 * 0.001 + THROUGHPUT_IMAGES * 0.001
    assert strategy_seconds(scratch, images, rates, features_shared=True) == pytest.approx(expected)
    longer = make_strategy("scratch", epochs=20, batch_size=64, min_steps=0)
    assert strategy_seconds(longer, images, rates, True) > 1.9 * strategy_seconds(scratch, images, rates, True) - 1
    small = make_strategy("scratch", epochs=10, batch_size=64, min_steps=300)  # rounds of at least 30 steps
    assert strategy_seconds(small, images, rates, True) == pytest.approx(expected + 10 * 20 * 64 * 0.02)


def test_rates_measured_on_a_busy_machine_are_used_not_kept_and_the_estimate_says_busy(
        image_folder, tiny_weights, isolated_home, monkeypatch):
    from tlcore.experiments import estimate

    busy = "other work is using 1.8 of 2 cores, load average 3.0"
    monkeypatch.setattr(rates_module, "machine_busy", lambda *a, **k: busy)
    monkeypatch.setattr(estimate, "machine_busy", lambda *a, **k: busy)
    result = estimate_comparison(_config(image_folder, tiny_weights))
    assert result.rates.busy == busy and not (isolated_home / "calibration.json").exists()
    assert result.text().endswith(f"The machine is busy now ({busy}): expect longer.")


def test_memory_and_disk_are_estimated_and_a_run_that_cannot_fit_is_refused_before_it_starts(
        image_folder, tiny_weights, isolated_home, monkeypatch, capsys):
    from tlcore.cli import main
    from tlcore.experiments import estimate as estimate_module
    from tlcore.experiments import prepare as prepare_module
    from tlcore.experiments.estimate import resources

    fe = [make_strategy("feature-extraction")]
    # 1,000 images of 96 px (27,648 bytes each) at 1,280 features: what stays in memory and what goes to disk
    small = resources({"train": 600, "val": 200, "test": 200}, 96, 1280, fe)
    assert small.decoded_mb == 0 and small.feature_cache_mb == round(1000 * 1280 * 4 / 2**20, 3)
    monkeypatch.setattr(prepare_module, "IN_MEMORY_BYTES", 700 * 27648)  # train fits, val and test stream
    streamed = resources({"train": 600, "val": 200, "test": 200}, 96, 1280, fe)
    assert streamed.decoded_mb == round(400 * 27648 / 2**20, 3)
    big = resources({"train": 50000, "val": 6000, "test": 10000}, 96, 1280, fe)
    assert big.peak_memory_mb > small.peak_memory_mb and "of memory at its peak" in big.text()

    monkeypatch.setattr(rates_module, "machine_busy", lambda *a, **k: "")
    monkeypatch.setattr(estimate_module, "available_memory_bytes", lambda: 100 * 2**20)
    code = main(["compare", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--image-size", "32", "--strategies", "feature-extraction", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "does not fit this machine" in err and "100 MB available" in err
    assert not (isolated_home / "cache" / "features").exists()  # refused before anything was computed
    monkeypatch.setattr(estimate_module, "available_memory_bytes", lambda: 64 * 2**30)
    monkeypatch.setattr(estimate_module, "free_disk_bytes", lambda path: 0)
    assert main(["compare", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
                 str(tiny_weights), "--image-size", "32", "--strategies", "feature-extraction", "--no-progress"]) == 2
    assert "of disk under TLCORE_HOME and 0 MB is free" in capsys.readouterr().err


def test_the_frozen_prefix_rows_are_estimated_as_the_runner_caches_them(image_folder, tiny_weights, isolated_home,
                                                                          monkeypatch):
    """The estimate's bytes a fine-tune image (from the architecture, on the meta device) are those the runner
    writes; beyond the in-memory budget they count as disk, below it as memory."""
    import numpy as np

    from tlcore.engine import features as features_module
    from tlcore.experiments.compare import compare
    from tlcore.experiments.estimate import prefix_row_bytes, resources

    ft = make_strategy("fine-tune", epochs=1, batch_size=8, stages=1)
    per_image = prefix_row_bytes("test_efficientnet", 32, ft)
    assert per_image > 0 and prefix_row_bytes("test_efficientnet", 32, make_strategy("feature-extraction")) == 0
    assert prefix_row_bytes("test_efficientnet", 32, make_strategy("fine-tune", stages="all")) == 0
    monkeypatch.setattr(features_module, "ROWS_IN_MEMORY_BYTES", 0)
    config = _config(image_folder, tiny_weights)
    run = compare(replace(config, strategies=[ft]), cache=None).runs[0]
    assert run.status == "completed" and run.extra["frozen_prefix_cached"]
    rows = next((isolated_home / "cache" / "rows").glob("*.float32"))
    done = np.fromfile(rows.with_suffix(".done"), dtype=np.uint8)
    assert os.path.getsize(rows) == len(done) * per_image  # one row of the estimated size an image of the pool
    counts = {"train": 600, "val": 200, "test": 200}
    on_disk = resources(counts, 32, 1280, [ft], per_image)
    assert on_disk.prefix_mb == round(1000 * per_image / 2**20, 3) and "frozen-layer outputs" in on_disk.text()
    monkeypatch.setattr(features_module, "ROWS_IN_MEMORY_BYTES", 2**30)
    held = resources(counts, 32, 1280, [ft], per_image)
    assert held.prefix_mb == on_disk.prefix_mb  # on disk either way: held rows go through the feature cache
    assert held.peak_memory_mb >= on_disk.peak_memory_mb + round(1000 * per_image / 2**20) - 1
