"""The three strategies end to end on tiny real images with timm's test_efficientnet: what trains, what stays
frozen, what is measured, caching, cancellation and failure."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tlcore import BackboneSpec, CancelToken, DatasetSpec, ExperimentConfig, compare, make_strategy
from tlcore.engine.backbone import load_template, stage_groups
from tlcore.engine.strategies import default_option
from tlcore.engine.features import FeatureCache
from tlcore.experiments.prepare import prepare
from tlcore.engine.train import FLAT_TOLERANCE, STOP_BELOW_LR, Plateau, early_stop_from, warmup_cosine
from tlcore.experiments.runner import Runner

FAST = {"epochs": 2, "batch_size": 8, "patience": 2, "min_steps": 0}


def config(folder, weights, strategies=None, **kw) -> ExperimentConfig:
    strategies = strategies or [make_strategy("feature-extraction", head_max_iter=40),
                                make_strategy("fine-tune", stages=1, **FAST), make_strategy("scratch", **FAST)]
    return ExperimentConfig(dataset=DatasetSpec(str(folder), **kw), backbone=BackboneSpec("test_efficientnet",
                            str(weights)), strategies=strategies, image_size=32, seed=0)


def build_runner(config: ExperimentConfig, cache: FeatureCache, keep_models: bool = False) -> Runner:
    """A Runner on the config's own cell (its size and seed), the way cells.py makes one."""
    prepared = prepare(config)
    data = prepared.cell_data(prepared.subset(config.dataset.per_class, config.seed))
    return Runner(prepared, data, config.seed, cache=cache, keep_models=keep_models)


def run_all(runner: Runner):
    return [runner.run(spec) for spec in runner.config.strategies]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_three_strategies_measured_side_by_side(image_folder, tiny_weights, tmp_path):
    cache = FeatureCache(tmp_path / "features")
    runner = build_runner(config(image_folder, tiny_weights), cache=cache, keep_models=True)
    timed = []  # throughput: every strategy's deployed model timed alike, on the same sample
    original = runner._timed_sample
    runner._timed_sample = lambda model, reporter=None: timed.append(model) or original(model)
    runs = run_all(runner)
    assert [r.status for r in runs] == ["completed"] * 3, [r.error for r in runs]
    assert len(timed) == 3
    fe, ft, sc = runs
    for r in runs:
        assert 0 <= r.accuracy <= 1 and r.accuracy_low <= r.accuracy <= r.accuracy_high
        assert len(r.test_predictions) == r.test_images == len(runner.data.splits["test"].labels) == 6
        assert len(r.confusion) == 3 and sum(map(sum, r.confusion)) == 6
        assert set(r.per_class_accuracy) == {"class_0", "class_1", "class_2"}
        assert r.throughput_ips > 0 and r.peak_memory_mb > 0 and r.curve
        assert r.timings["total"] >= r.train_seconds > 0
    # trainable parameters, counted from what really trained
    head = 3 * 256 + 3
    assert fe.trainable_params == head
    assert sc.trainable_params == sc.total_params == fe.total_params
    groups = stage_groups(runner.models["fine-tune"])
    assert ft.trainable_params == head + groups[-1].num_params
    assert ft.phases[0]["trainable_params"] == head  # the LP-FT warm-up phase
    assert fe.weights["source"] == ft.weights["source"] == "file" and sc.weights["source"] == "none"
    # the full model with the new head gives the logits of the head on cached features
    assert fe.extra["max_logit_diff_full_vs_cached"] < 1e-3
    # JSON round trip and a flat table, from the same comparison run through compare()
    result = compare(config(image_folder, tiny_weights), cache=cache)
    assert [r.accuracy for r in result.runs] == [r.accuracy for r in runs]
    json_path, csv_path, html_path = result.save(tmp_path / "out")
    assert json.loads(json_path.read_text())["runs"][0]["strategy"] == "feature-extraction"
    assert csv_path.name == "comparison.csv" and html_path.read_text().startswith("<!doctype html>")
    assert list(result.to_frame()["strategy"]) == ["feature-extraction", "fine-tune", "scratch"]


def test_feature_extraction_leaves_backbone_and_bn_stats_untouched(image_folder, tiny_weights, tmp_path):
    runner = build_runner(config(image_folder, tiny_weights, [make_strategy("feature-extraction")]),
                          cache=FeatureCache(tmp_path / "f"), keep_models=True)
    template, _ = load_template(runner.config.backbone)
    before = _state(template)
    run_all(runner)
    after = runner.models["feature-extraction"].state_dict()
    head = {"classifier.weight", "classifier.bias"}
    # FrozenBatchNorm2d keeps every tensor but the step counter num_batches_tracked
    assert {k for k in before if k not in after} <= {k for k in before if k.endswith("num_batches_tracked")}
    for key, value in before.items():
        if key in head or key not in after:
            continue
        assert torch.equal(after[key], value), f"{key} changed under feature extraction"
    assert _state(template).keys() == before.keys() and all(torch.equal(_state(template)[k], before[k]) for k in before)


@pytest.mark.parametrize("bn_policy", ["train", "frozen"])
def test_fine_tune_changes_only_named_stages(image_folder, tiny_weights, tmp_path, bn_policy):
    spec = make_strategy("fine-tune", stages=2, lp_ft=False, bn_policy=bn_policy, lr=1e-2, **FAST)
    runner = build_runner(config(image_folder, tiny_weights, [spec]), cache=FeatureCache(tmp_path / "f"),
                          keep_models=True)
    template, _ = load_template(runner.config.backbone)
    before = _state(template)
    result = run_all(runner)[0]
    model = runner.models["fine-tune"]
    groups = stage_groups(model)
    trainable_modules = {n for g in groups[-2:] for n in g.modules}
    after = model.state_dict()
    changed = {k for k in before.keys() & after.keys()
               if "classifier" not in k and "num_batches" not in k and not torch.equal(before[k], after[k])}
    owner = {k: k.rsplit(".", 1)[0] for k in changed}
    assert changed and all(m in trainable_modules for m in owner.values()), sorted(changed)
    stats_changed = {k for k in changed if "running_" in k}
    assert bool(stats_changed) == (bn_policy == "train")
    assert result.trainable_stages == [g.label for g in groups[-2:]]
    changed_params = sum(after[k].numel() for k in changed if "running" not in k and "num_batches" not in k)
    assert result.trainable_params == changed_params + sum(p.numel() for p in model.get_classifier().parameters())


@pytest.mark.slow
def test_second_run_reuses_feature_cache(image_folder, tiny_weights, tmp_path):
    cache = FeatureCache(tmp_path / "features")
    cfg = config(image_folder, tiny_weights, [make_strategy("feature-extraction")])
    first = compare(cfg, cache=cache).runs[0]
    computed = cache.stats.rows_computed
    assert computed == 36
    fresh = FeatureCache(tmp_path / "features")  # a new process: served from disk
    second = compare(cfg, cache=fresh).runs[0]
    assert fresh.stats.rows_computed == 0 and fresh.stats.disk_hits >= 1
    assert second.accuracy == first.accuracy and second.test_predictions == first.test_predictions


def test_smaller_subset_served_from_cache(image_folder, tiny_weights, tmp_path):
    cache = FeatureCache(tmp_path / "features")
    compare(config(image_folder, tiny_weights, [make_strategy("feature-extraction")], per_class=4), cache=cache)
    computed = cache.stats.rows_computed
    compare(config(image_folder, tiny_weights, [make_strategy("feature-extraction")], per_class=2), cache=cache)
    assert cache.stats.rows_computed == computed


def test_runs_are_deterministic(image_folder, tiny_weights, tmp_path):
    cfg = config(image_folder, tiny_weights, [make_strategy("scratch", **FAST)])
    a = compare(cfg).runs[0]
    b = compare(cfg).runs[0]
    assert a.test_predictions == b.test_predictions and a.curve[-1]["train_loss"] == b.curve[-1]["train_loss"]


def test_cancel_stops_within_a_batch_and_keeps_finished_runs(image_folder, tiny_weights):
    cancel = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event)
        if event.strategy == "scratch" and event.phase == "epoch" and event.batch == 1:
            cancel.cancel()

    strategies = [make_strategy("feature-extraction", head_max_iter=20),
                  make_strategy("scratch", epochs=50, batch_size=4, min_steps=0), make_strategy("fine-tune", **FAST)]
    start = time.perf_counter()
    result = compare(config(image_folder, tiny_weights, strategies), callbacks=[on_event], cancel=cancel)
    assert time.perf_counter() - start < 60
    assert [r.status for r in result.runs] == ["completed", "cancelled", "cancelled"]
    assert result.runs[0].accuracy is not None
    batches_after_cancel = [e for e in seen if e.strategy == "scratch" and e.phase == "epoch" and e.batch > 1]
    assert not batches_after_cancel


@pytest.mark.slow
def test_nan_loss_fails_with_reason(image_folder, tiny_weights):
    strategies = [make_strategy("scratch", lr=1e12, epochs=3, batch_size=8, min_steps=0),
                  make_strategy("feature-extraction")]
    result = compare(config(image_folder, tiny_weights, strategies))
    failed, ok = result.runs
    assert failed.status == "failed" and "loss became" in failed.error and "Lower the learning rate" in failed.error
    assert ok.status == "completed"


def test_early_stopping_restores_best_epoch(image_folder, tiny_weights):
    spec = make_strategy("scratch", epochs=12, batch_size=8, patience=1, lr=3e-2, min_steps=0)
    run = compare(config(image_folder, tiny_weights, [spec])).runs[0]
    best = max(c["val_accuracy"] for c in run.curve)
    assert run.best_val_accuracy == best
    assert run.curve[run.best_epoch - 1]["val_accuracy"] == best
    assert all(c["val_accuracy"] < best for c in run.curve[:run.best_epoch - 1])  # the first best is kept
    if run.stopped_early:
        assert run.epochs_run >= 8  # never in the first two thirds of the schedule (learning rate above a quarter)
        assert all(c["val_accuracy"] <= best for c in run.curve[run.best_epoch:])
        assert run.curve[-2]["val_accuracy"] <= best  # patience 1: stopped right after a non-improving epoch


def test_early_stopping_waits_for_the_learning_rate_to_fall():
    """Patience may end a run only after the epoch whose last step runs below a quarter of the peak rate."""
    for epochs, batches, warmup in [(20, 15, 15), (6, 31, 15), (4, 8, 4), (5, 8, 8), (12, 3, 3), (1, 5, 2)]:
        total = epochs * batches
        first = early_stop_from(epochs, batches, warmup)
        assert warmup_cosine(first * batches - 1, warmup, total) < STOP_BELOW_LR or first == epochs
        if first > 1:
            assert warmup_cosine((first - 1) * batches - 1, warmup, total) >= STOP_BELOW_LR
    assert early_stop_from(20, 15, 15) == 14  # scratch's default schedule at 100 a class: not at epoch 10 any more
    assert warmup_cosine(0, 4, 40) == 0.25 and warmup_cosine(3, 4, 40) == 1.0 and warmup_cosine(40, 4, 40) == 0.0


def _stop_epoch(vals: list[float], patience: int = 4, first: int = 14) -> int:
    plateau = Plateau(patience, first, len(vals), FLAT_TOLERANCE)
    return next((epoch for epoch, v in enumerate(vals, 1) if plateau.update(epoch, v)), len(vals))


def test_early_stopping_waits_for_a_rise_of_more_than_a_point():
    """Val curves of the default sweep's long scratch cells (session 6, built-in default, 20 epochs): patience counts
    epochs without a rise of more than FLAT_TOLERANCE; the best epoch was before the stop every time, so the restored
    checkpoint is the one a full run would have kept."""
    seed1_at_50 = [.100, .453, .477, .497, .633, .676, .711, .706, .727, .713, .719, .744, .743, .744, .741, .746,
                   .736, .739, .741, .736]
    seed1_at_100 = [.100, .417, .537, .461, .597, .723, .699, .716, .733, .706, .741, .724, .723, .759, .754, .761,
                    .763, .761, .761, .757]
    seed0_at_100 = [.100, .367, .461, .553, .654, .663, .641, .697, .723, .730, .744, .749, .741, .757, .770, .773,
                    .781, .786, .784, .781]
    assert _stop_epoch(seed1_at_50) == 16  # 0.746 at 16 is 0.2 points over 0.744 at 12: flat for 4 epochs
    assert _stop_epoch(seed1_at_100) == 18 and seed1_at_100.index(max(seed1_at_100)) + 1 == 17
    assert _stop_epoch(seed0_at_100) == 20  # 0.770 at 15 and 0.781 at 17 were real rises
    # a steady climb of half a point an epoch is not a plateau: its gains add up past the tolerance
    assert _stop_epoch([0.5 + 0.005 * e for e in range(20)], patience=3, first=1) == 20
    # never before `first_epoch`, never flagged in the last epoch
    assert _stop_epoch([0.7] * 20, patience=2, first=14) == 14 and _stop_epoch([0.7] * 6, patience=4, first=6) == 6
    plateau = Plateau(2, 1, 10, FLAT_TOLERANCE)
    assert [plateau.update(e, v) for e, v in enumerate([0.5, 0.505, 0.509, 0.52], 1)] == [False, False, True, False]
    # fine-tune keeps min_delta 0: the sweep's 4-epoch run at 100 a class dipped after its LP start (epoch 0) and
    # recovered; with min_delta 0.01 it would have stopped at epoch 3, before its best epoch 4
    assert default_option("scratch", "min_delta") == FLAT_TOLERANCE and default_option("fine-tune", "min_delta") == 0
    fine_tune = [0.811, 0.757, 0.793, 0.820, 0.826]
    for tolerance, stop in ((0.0, None), (FLAT_TOLERANCE, 3)):
        plateau = Plateau(3, 3, 4, tolerance)
        assert next((e for e, v in enumerate(fine_tune) if plateau.update(e, v)), None) == stop


def test_min_delta_is_validated_and_reaches_the_spec_from_the_cli():
    from tlcore.cli import build_parser, config_from_args
    from tlcore.core.errors import ConfigError

    for bad in (-0.01, 1.0, 5):
        with pytest.raises(ConfigError, match=f"min_delta is a share of val accuracy.*got {bad}"):
            make_strategy("scratch", min_delta=bad)
    args = build_parser().parse_args(["compare", "--min-delta", "0.02", "--strategies", "fine-tune,scratch"])
    specs = {s.kind: s for s in config_from_args(args).strategies}
    assert specs["scratch"].min_delta == 0.02 and specs["fine-tune"].min_delta == 0.02
    assert specs["scratch"].options()["min_delta"] == 0.02 and "min_delta" not in make_strategy("fe").options()


def test_min_steps_stretches_short_schedules(image_folder, tiny_weights):
    spec = make_strategy("scratch", epochs=2, batch_size=8, patience=50, min_steps=12)
    steps = []
    result = compare(config(image_folder, tiny_weights, [spec]),
                     callbacks=[lambda e: steps.append(e.batch) if e.phase == "epoch" and e.batch else None])
    run = result.runs[0]
    # 26 training images, batch 8: 3 steps an epoch; 12 steps over 2 epochs make rounds of 6 steps, validated twice
    assert run.extra["planned_epochs"] == 2 and run.extra["steps_per_epoch"] == 6
    assert len(run.curve) == 2 and len(steps) == 12


def test_frozen_prefix_cache_trains_the_same_model(image_folder, tiny_weights, tmp_path):
    spec = make_strategy("fine-tune", stages=2, lp_ft=False, **FAST)
    results = []
    for skip in (True, False):
        runner = build_runner(config(image_folder, tiny_weights, [spec]), cache=FeatureCache(tmp_path / "f"))
        runner.skip_frozen_prefix = skip
        results.append(run_all(runner)[0])
    cached, plain = results
    assert cached.extra["frozen_prefix_cached"] is True and plain.extra["frozen_prefix_cached"] is False
    for a, b in zip(cached.curve, plain.curve):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-3 and a["val_accuracy"] == b["val_accuracy"]
    assert cached.test_predictions == plain.test_predictions
    # the test logits came from the cached activations; the intact model was run on a sample and agrees
    assert cached.extra["max_logit_diff_full_vs_cached"] < 1e-3 and cached.throughput_ips > 0
    assert "max_logit_diff_full_vs_cached" not in plain.extra


def test_frozen_prefix_activations_are_shared_across_runs(image_folder, tiny_weights, tmp_path):
    """A second run on the same images (a sweep's next cell, a later comparison) computes no prefix rows."""
    spec = make_strategy("fine-tune", stages=2, lp_ft=False, **FAST)
    cache = FeatureCache(tmp_path / "f")
    first = run_all(build_runner(config(image_folder, tiny_weights, [spec]), cache=cache))[0]
    assert cache.stats.rows_computed > 0
    fresh = FeatureCache(tmp_path / "f")  # a new process: only the disk is shared
    second = run_all(build_runner(config(image_folder, tiny_weights, [spec]), cache=fresh))[0]
    assert fresh.stats.rows_computed == 0 and fresh.stats.disk_hits >= 1
    assert second.test_predictions == first.test_predictions
    assert [p["val_accuracy"] for p in second.curve] == [p["val_accuracy"] for p in first.curve]


def test_caching_the_frozen_stages_reports_progress_and_can_be_cancelled(image_folder, tiny_weights, tmp_path):
    spec = make_strategy("fine-tune", stages=1, lp_ft=False, **FAST)
    runner = build_runner(config(image_folder, tiny_weights, [spec]), cache=FeatureCache(tmp_path / "f"))
    phases = []
    runner.callbacks = [lambda e: phases.append(e.phase)]
    assert run_all(runner)[0].status == "completed" and "frozen_prefix" in phases
    runner = build_runner(config(image_folder, tiny_weights, [spec]), cache=FeatureCache(tmp_path / "g"),
                          keep_models=True)
    runner.cancel = CancelToken()
    runner.callbacks = [lambda e: runner.cancel.cancel() if e.phase == "frozen_prefix" else None]
    run = run_all(runner)[0]
    assert run.status == "cancelled" and not run.curve  # stopped before any epoch
    model = runner.models["fine-tune"]
    assert not isinstance(model.conv_stem, torch.nn.Identity)  # the frozen stages are back in the model
    assert not any(isinstance(b, torch.nn.Identity) for b in model.blocks)

def test_frozen_prefix_not_used_for_vit(tmp_path):
    import timm

    from tlcore.engine.backbone import freeze_groups
    from tlcore.engine.prefix import split_frozen_prefix

    model = timm.create_model("test_vit", num_classes=3)
    groups = stage_groups(model)
    freeze_groups(model, groups[:-1])
    prefix = split_frozen_prefix(model, torch.randn(2, 3, 160, 160))
    if prefix is not None:  # if it splits, it must be exact
        with torch.no_grad():
            prefix.restore()
            full = model.eval()(x := torch.randn(2, 3, 160, 160))
            acts = prefix.compute(x)
            assert torch.allclose(model(acts), full, atol=1e-4)


def test_test_images_that_are_also_training_images_are_counted_and_warned(tmp_path, tiny_weights):
    import shutil

    from conftest import make_image_folder
    from tlcore.views.text import comparison_table

    root = tmp_path / "split"
    make_image_folder(root / "train", per_class=8)
    make_image_folder(root / "test", per_class=3, seed=5)
    make_image_folder(root / "val", per_class=2, seed=6)
    for c in range(2):  # two training images copied into the test set
        shutil.copy(root / "train" / f"class_{c}" / "img_000.png", root / "test" / f"class_{c}" / "dup.png")
    result = compare(config(root, tiny_weights, [make_strategy("feature-extraction", head_max_iter=20)]))
    assert result.dataset["train_test_overlap"] == {"val": 0, "test": 2}
    assert "2 test image(s) also appear in the training subset" in comparison_table(result)


def test_time_left_comes_from_the_phase_that_runs_to_the_end():
    from tlcore.core.progress import Reporter

    events = []
    clock = iter([0.0, 0.0, 0.5, 1.0, 11.0, 21.0])
    import tlcore.core.progress as progress

    real = progress.time.perf_counter
    progress.time.perf_counter = lambda: next(clock)
    try:
        reporter = Reporter("fine-tune", [events.append], eta_phases={"epoch"})
        reporter("head", 0.05)
        reporter("head", 0.15)  # a fast warm-up: no promise from it
        reporter("epoch", 0.15)
        reporter("epoch", 0.25)  # 10 s for 0.10 of the work
        reporter("epoch", 0.35)
    finally:
        progress.time.perf_counter = real
    assert [e.eta_s for e in events[:3]] == [None, None, None]
    assert events[3].eta_s == pytest.approx(10 * 0.75 / 0.10) and events[4].eta_s == pytest.approx(20 * 0.65 / 0.2)


def test_still_rising_means_the_last_quarter_beat_the_rest_by_more_than_a_point():
    from tlcore.engine.train import still_rising

    def curve(vals):
        return [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(vals)]

    # a cosine schedule's end: the last epoch is the best, by a hair: flat
    assert not still_rising(curve([0.3, 0.5, 0.6, 0.7, 0.74, 0.75, 0.752, 0.755]))
    assert still_rising(curve([0.3, 0.5, 0.6, 0.65, 0.66, 0.68, 0.70, 0.73]))  # +5 points in the last quarter
    assert not still_rising(curve([0.3, 0.5, 0.7, 0.72, 0.71, 0.70, 0.71, 0.70]))  # fell back
    assert still_rising(curve([0.3, 0.5]))  # too short to tell
    assert not still_rising([{"epoch": 0, "val_accuracy": 0.8}] + curve([0.7, 0.75, 0.78, 0.79, 0.79]))  # epoch 0
