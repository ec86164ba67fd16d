"""The time a run will take, said before it starts: from this machine's rates, measured once and kept; never kept
when measured on a busy machine; a busy machine is said."""

from __future__ import annotations

import json

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
    assert first.images["train"] == 24 and first.seconds["scratch"] > first.seconds["feature-extraction"] > 0
    assert first.text().startswith("Estimated at most") and "busy" not in first.text()
    stored = json.loads((isolated_home / "calibration.json").read_text())
    assert list(stored) == [first.rates.key] and "test_efficientnet|32|cpu" in first.rates.key
    again = estimate_comparison(_config(image_folder, tiny_weights), check_load=False)
    assert again.rates == first.rates  # read back, not measured again
    longer = estimate_comparison(ExperimentConfig(**{**_config(image_folder, tiny_weights).__dict__, "strategies": [
        make_strategy("scratch", epochs=8)]}), check_load=False)
    assert longer.seconds["scratch"] > first.seconds["scratch"]  # twice the epochs
    sweep = estimate_sweep(SweepConfig(_config(image_folder, tiny_weights), sizes=(2, 4), repeats=2), check_load=False)
    assert set(sweep.seconds) == {"feature-extraction", "fine-tune", "scratch"}


def test_rates_measured_on_a_busy_machine_are_used_not_kept_and_the_estimate_says_busy(
        image_folder, tiny_weights, isolated_home, monkeypatch):
    from tlcore.experiments import estimate

    busy = "other work is using 1.8 of 2 cores, load average 3.0"
    monkeypatch.setattr(rates_module, "machine_busy", lambda *a, **k: busy)
    monkeypatch.setattr(estimate, "machine_busy", lambda *a, **k: busy)
    result = estimate_comparison(_config(image_folder, tiny_weights))
    assert result.rates.busy == busy and not (isolated_home / "calibration.json").exists()
    assert result.text().endswith(f"The machine is busy now ({busy}): expect longer.")
