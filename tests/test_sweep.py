"""Dataset-size sweeps: nested subsets on a constant test set, feature reuse across sizes, resuming an interrupted
sweep from the store, intervals and crossovers on curves with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tlcore import BackboneSpec, CancelToken, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.core.errors import ConfigError
from tlcore.engine.features import FeatureCache
from tlcore.experiments.learning_curves import find_crossovers, mean_interval, summarize
from tlcore.records.store import Store
from tlcore.experiments.config import ALL, SweepConfig, parse_sizes
from tlcore.experiments.sweep import SweepResult, load_sweep, run_sweep

FAST = {"epochs": 2, "batch_size": 8, "patience": 2, "min_steps": 0}


def experiment(folder, weights, strategies=None) -> ExperimentConfig:
    strategies = strategies or [make_strategy("feature-extraction", head_max_iter=40),
                                make_strategy("fine-tune", stages=1, **FAST), make_strategy("scratch", **FAST)]
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=strategies, image_size=32, seed=0)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store.db")


def test_parse_sizes():
    assert parse_sizes("50, 5,all,10,5") == (5, 10, 50, ALL)
    assert parse_sizes([0, 25, None, "all"]) == (25, ALL)  # 'all' is None inside tlcore, whatever it was called
    for bad in ("", "5,x", "0.5", "-3"):
        with pytest.raises(ConfigError):
            parse_sizes(bad)
    with pytest.raises(ConfigError, match="repeats"):
        SweepConfig(repeats=0)


@pytest.mark.slow
def test_nested_subsets_constant_test_set_and_feature_reuse(image_folder, tiny_weights, store):
    cache = FeatureCache(use_disk=False)
    fe = [make_strategy("feature-extraction", head_max_iter=40)]
    config = SweepConfig(experiment(image_folder, tiny_weights, fe), sizes=[2, 4, 6], repeats=2)
    result = run_sweep(config, cache=cache, store=store)
    assert [c.run.status for c in result.cells] == ["completed"] * 6
    assert [(c.seed, c.size) for c in result.cells] == [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6)]
    for seed in (0, 1):
        subsets = [set(c.run.extra["train_indices"]) for c in result.cells if c.seed == seed]
        assert [len(s) for s in subsets] == [6, 12, 18]  # 3 classes
        assert subsets[0] < subsets[1] < subsets[2]  # nested
    seeds = {c.seed: set(c.run.extra["train_indices"]) for c in result.cells if c.size == 2}
    assert seeds[0] != seeds[1]  # another seed, another subset
    assert len({c.run.test_images for c in result.cells}) == 1
    assert len({tuple(np.asarray(c.run.confusion).sum(1)) for c in result.cells}) == 1  # same test labels
    # features: computed once for each image ever used (largest subsets of both seeds, val, test), then reused
    union = set().union(*(set(c.run.extra["train_indices"]) for c in result.cells if c.size == 6))
    n_eval = result.dataset["sizes"]["val"] + result.dataset["sizes"]["test"]
    assert result.feature_cache["rows_computed"] == len(union) + n_eval
    used = sum(len(c.run.extra["train_indices"]) + n_eval for c in result.cells)
    assert result.feature_cache["rows_reused"] == used + 2 * (18 + n_eval) - result.feature_cache["rows_computed"]



@pytest.mark.slow
def test_a_long_only_strategy_is_not_run_below_long_from_and_the_report_says_so(image_folder, tiny_weights, store):
    from tlcore.views.text import NOT_RUN, sweep_report
    exp = experiment(image_folder, tiny_weights)
    config = SweepConfig(exp, sizes=[2, 4, 6], repeats=1, long_from=4, long_strategies=exp.strategies,
                         long_only=("scratch",))
    result = run_sweep(config, cache=FeatureCache(use_disk=False), store=store)
    ran = {(c.run.strategy, c.size) for c in result.cells}
    assert ("scratch", 2) not in ran and {("scratch", 4), ("scratch", 6)} <= ran
    assert len(result.cells) == config.cells_total == 8
    assert set(result.summary().query("strategy == 'scratch'")["size"]) == {"4", "6"}
    report = sweep_report(result)
    assert "scratch runs only from 4 images a class in this sweep" in report and "(2 a class)" in report
    rows = [line.split() for line in report.splitlines() if line.startswith("scratch  ")]  # the two tables
    assert len(rows) == 2 and all(row[1:3] == NOT_RUN.split() for row in rows)  # their size-2 column
    statement = next(c.statement for c in result.crossovers() if c.name.startswith("scratch"))
    assert "between 2 images a class" not in statement  # scratch's own sizes, not the sweep's

def test_fine_tune_cells_share_the_frozen_stages_output(image_folder, tiny_weights, store):
    """Every fine-tune cell of a sweep freezes the same pretrained bottom: its output is computed once per image for
    the whole sweep (largest subset, val, test), and the other cells reuse it."""
    from tlcore.views.text import sweep_headline
    cache = FeatureCache(use_disk=False)
    ft = [make_strategy("fine-tune", stages=1, lp_ft=False, **FAST)]
    result = run_sweep(SweepConfig(experiment(image_folder, tiny_weights, ft), sizes=[2, 4, 6], repeats=1),
                       cache=cache, store=store)
    assert all(c.run.status == "completed" and c.run.extra["frozen_prefix_cached"] for c in result.cells)
    n_eval = result.dataset["sizes"]["val"] + result.dataset["sizes"]["test"]
    largest = max(result.cells, key=lambda c: c.size)
    assert result.feature_cache["rows_computed"] == len(largest.run.extra["train_indices"]) + n_eval
    assert all(c.run.extra["max_logit_diff_full_vs_cached"] < 1e-3 for c in result.cells)
    assert "fine-tune's frozen stages" in sweep_headline(result)

@pytest.mark.slow
def test_interrupted_sweep_resumes_without_recomputing(image_folder, tiny_weights, store):
    config = SweepConfig(experiment(image_folder, tiny_weights), sizes=[3, ALL], repeats=1)
    cancel = CancelToken()
    seen = []

    def stop_after_two(cell):
        seen.append(cell)
        if len(seen) == 2:
            cancel.cancel()

    first = run_sweep(config, cancel=cancel, store=store, on_cell=stop_after_two)
    assert first.status == "cancelled" and len(first.cells) == 2
    assert store.record(first.record_id)["status"] == "cancelled"
    assert len(store.runs(first.record_id)) == 2  # stored as they finished

    second = run_sweep(config, store=store)
    assert second.status == "completed" and len(second.cells) == 6
    assert [c.resumed for c in second.cells] == [True, True, False, False, False, False]
    assert [c.run.run_id for c in second.cells[:2]] == [c.run.run_id for c in first.cells]
    # the stored record rebuilds to the same result
    loaded = load_sweep(second.record_id, store)
    pd.testing.assert_frame_equal(loaded.summary(), second.summary())
    # and --fresh recomputes everything
    third = run_sweep(SweepConfig(experiment(image_folder, tiny_weights, [make_strategy("scratch", **FAST)]),
                                  sizes=[3], repeats=1), store=store, resume=False)
    assert not third.cells[0].resumed


def test_sweep_result_round_trips_through_json(image_folder, tiny_weights, store, tmp_path):
    config = SweepConfig(experiment(image_folder, tiny_weights, [make_strategy("feature-extraction",
                                                                               head_max_iter=20)]),
                         sizes=[2, 4], repeats=2)
    result = run_sweep(config, store=store)
    json_path, cells_csv, summary_csv = result.save(tmp_path / "out")
    again = SweepResult.load(json_path)
    pd.testing.assert_frame_equal(again.summary(), result.summary())
    assert len(pd.read_csv(cells_csv)) == 4 and len(pd.read_csv(summary_csv)) == 2
    assert SweepConfig.from_dict(again.config).sizes == (2, 4)


# ------------------------------------------------------------------------------------- statistics on known curves
def _cells(curves: dict[str, dict[int, list[float]]], kinds=None) -> pd.DataFrame:
    rows = []
    for strategy, by_size in curves.items():
        for size, accs in by_size.items():
            for seed, acc in enumerate(accs):
                rows.append({"strategy": strategy, "kind": (kinds or {}).get(strategy, strategy), "size": str(size),
                             "seed": seed, "images_per_class": float(size), "status": "completed",
                             "accuracy": acc, "accuracy_low": acc - 0.03, "accuracy_high": acc + 0.03,
                             "train_seconds": 1.0 + size / 10, "trainable_params": 1000, "still_improving": False})
    return pd.DataFrame(rows)


def test_intervals_shrink_as_repeats_grow():
    widths = []
    for repeats in (2, 3, 4, 8, 16):
        values = [0.78, 0.82] * (repeats // 2) + [0.80] * (repeats % 2)
        mean, low, high = mean_interval(values)
        assert low < mean < high and mean == pytest.approx(0.80)
        widths.append(high - low)
    assert all(a > b for a, b in zip(widths, widths[1:]))
    # one repeat: the test set's binomial (Wilson) interval of that run
    one = summarize(_cells({"feature-extraction": {5: [0.7]}}))
    assert one.loc[0, "accuracy_low"] == pytest.approx(0.67) and one.loc[0, "interval"].startswith("Wilson")


def test_crossovers_with_known_answers():
    fe = {5: [0.60, 0.62, 0.61], 25: [0.70, 0.71, 0.70], 100: [0.75, 0.76, 0.75], 500: [0.78, 0.78, 0.79]}
    ft = {5: [0.55, 0.58, 0.56], 25: [0.70, 0.72, 0.71], 100: [0.82, 0.83, 0.82], 500: [0.88, 0.89, 0.88]}
    sc = {5: [0.30, 0.33, 0.31], 25: [0.50, 0.52, 0.51], 100: [0.70, 0.71, 0.70], 500: [0.875, 0.88, 0.88]}
    summary = summarize(_cells({"feature-extraction": fe, "fine-tune": ft, "scratch": sc}))
    found = {c.name: c for c in find_crossovers(summary)}
    assert found["fine-tune beats feature extraction"].size == "100"  # at 25 the means differ, intervals overlap
    assert found["scratch within 1 point of the best"].size == "500"
    assert "100 images a class" in found["fine-tune beats feature extraction"].statement


def test_no_crossover_is_said_plainly():
    fe = {5: [0.60, 0.62], 50: [0.80, 0.81]}
    ft = {5: [0.55, 0.57], 50: [0.80, 0.83]}  # ahead on the mean at 50, but two repeats: overlapping intervals
    sc = {5: [0.30, 0.33], 50: [0.50, 0.52]}
    found = {c.name: c for c in find_crossovers(summarize(_cells({"feature-extraction": fe, "fine-tune": ft,
                                                                   "scratch": sc})))}
    ft_fe = found["fine-tune beats feature extraction"]
    assert ft_fe.size is None and "did not beat" in ft_fe.statement and "intervals overlap" in ft_fe.statement
    scratch = found["scratch within 1 point of the best"]
    assert scratch.size is None and "did not come within" in scratch.statement
    assert "between 5 images a class and 50 images a class" in scratch.statement


def test_default_sweep_runs_scratch_only_from_50_a_class_on_its_full_schedule():
    from tlcore.experiments.config import SweepConfig, build_sweep_config
    from tlcore.engine.strategies import make_strategy

    config = build_sweep_config("default")
    short = {s.kind: s for s in config.strategies_at(25)}
    long = {s.kind: s for s in config.strategies_at(50)}
    assert "scratch" not in short and long["scratch"] == make_strategy("scratch")  # the comparison's schedule
    assert long["scratch"].epochs == 20 and config.strategies_at(100) == config.strategies_at(50)
    assert short["fine-tune"] == long["fine-tune"] and short["feature-extraction"] == long["feature-extraction"]
    assert config.skipped() == [("scratch", [5, 10, 25])]
    assert config.cells_total == 2 * (5 * 2 + 2)  # 2 repeats: FE and FT at 5 sizes, scratch at 2
    assert SweepConfig.from_dict(config.to_dict()) == config  # --config re-runs exactly this
    user = build_sweep_config("default", strategy_options={"scratch": {"lr": 0.01}})
    assert user.strategies_at(100)[2].lr == 0.01 and user.experiment.strategies[2].lr == 0.01  # the user's wins
    calibration = build_sweep_config("default", long_schedules=False)  # what recommend --validate runs
    assert calibration.strategies_at(100) == calibration.strategies_at(5) == calibration.experiment.strategies
    assert calibration.strategies_at(5)[2].epochs == 5 and calibration.skipped() == []
    with pytest.raises(ConfigError, match="long_only"):
        SweepConfig(config.experiment, long_only=("scratch",))  # no long schedule to run it with
    with pytest.raises(ConfigError, match="long_only"):
        replace(config, long_only=("nope",))
    with pytest.raises(ConfigError, match="Add a size of 50 or more"):  # scratch alone, at sizes it skips
        build_sweep_config("default", sizes="5,10", strategies=["scratch"])
    assert build_sweep_config("default", sizes="5,10").skipped() == [("scratch", [5, 10])]  # the others still run
    assert build_sweep_config("quick").strategies_at(50)[2].epochs == 5  # the quick sweep stays short


@pytest.mark.slow
def test_adaptive_repeats_go_to_the_cheap_strategies_where_the_interval_is_wide(image_folder, tiny_weights):
    """After the fixed repeats, a size whose feature-extraction interval is wider than the target gets more seeds of
    feature extraction only, up to max_repeats; the summary says how many repeats each (strategy, size) got."""
    from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy, run_sweep
    from tlcore.experiments.config import SweepConfig

    exp = ExperimentConfig(dataset=DatasetSpec(str(image_folder)),
                           backbone=BackboneSpec("test_efficientnet", str(tiny_weights)),
                           strategies=[make_strategy("feature-extraction", head_max_iter=20),
                                       make_strategy("scratch", epochs=1, batch_size=8, min_steps=0)], image_size=32)
    config = SweepConfig(exp, sizes=(2, 4), repeats=2, max_repeats=4, target_half_width=0.001)
    sweep = run_sweep(config)
    repeats = {(r["strategy"], r["size"]): r["repeats"] for r in sweep.summary().to_dict("records")}
    assert repeats == {("feature-extraction", "2"): 4, ("feature-extraction", "4"): 4, ("scratch", "2"): 2,
                       ("scratch", "4"): 2}
    again = run_sweep(config)  # the same cells, taken from the store: deterministic
    assert all(c.resumed for c in again.cells) and len(again.cells) == len(sweep.cells) == 12
    loose = run_sweep(SweepConfig(exp, sizes=(2,), repeats=2, max_repeats=4, target_half_width=0.99))
    assert len(loose.cells) == 4  # already narrow enough: no more seeds
    assert SweepConfig.from_dict(config.to_dict()) == config
