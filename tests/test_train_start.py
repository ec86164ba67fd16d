"""Fine-tuning from an LP-FT head never ends below its own start on val: the start is epoch 0 of the curve and a
candidate for the restored checkpoint (issue 15, item 4). Tiny real runs with timm's test_efficientnet."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image_folder

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.engine.train import early_stop_from
from tlcore.engine.features import FeatureCache
from tlcore.experiments.prepare import prepare
from tlcore.experiments.runner import Runner


@pytest.fixture
def six_classes(tmp_path):
    """Six classes, 16 images each, a quarter for val: an LP start that is good but not perfect."""
    return make_image_folder(tmp_path / "six", classes=6, per_class=16, size=40)


def _run(folder, weights, tmp_path, spec):
    """One fine-tune on its cell; the model's state when epoch 0 is reported (before any optimizer step) and at the
    end."""
    config = ExperimentConfig(dataset=DatasetSpec(str(folder), val_fraction=0.25),
                              backbone=BackboneSpec("test_efficientnet", str(weights)), strategies=[spec],
                              image_size=32, seed=0)
    prepared = prepare(config)
    data = prepared.cell_data(prepared.subset(None, 0))
    states = {}

    def on_event(event):
        if event.phase == "epoch" and event.epoch == 0 and "start" not in states:
            states["start"] = {k: v.detach().clone() for k, v in runner.models[spec.name].state_dict().items()}

    runner = Runner(prepared, data, 0, [on_event], cache=FeatureCache(tmp_path / "features"), keep_models=True)
    run = runner.run(spec)
    assert run.status == "completed", run.error
    return run, states["start"], runner.models[spec.name].state_dict()


def test_harmful_learning_rate_restores_the_lp_start(six_classes, tiny_weights, tmp_path):
    spec = make_strategy("fine-tune", stages=1, lr=10.0, epochs=6, batch_size=8, patience=2, min_steps=0,
                         head_max_iter=40, head_l2_grid=(1e-3, 1e-1))
    run, start, end = _run(six_classes, tiny_weights, tmp_path, spec)
    start_point = run.curve[0]
    assert start_point["epoch"] == 0 and start_point["train_loss"] is None
    # epoch 0 is the LP head on the pretrained backbone: the same val accuracy as the head fitted on cached features
    assert start_point["val_accuracy"] == pytest.approx(run.extra["lp_val_accuracy"])
    assert [p["epoch"] for p in run.curve] == list(range(run.epochs_run + 1))
    assert all(p["val_accuracy"] < start_point["val_accuracy"] for p in run.curve[1:])  # lr=10 only harms
    assert run.best_epoch == 0 and run.best_val_accuracy == start_point["val_accuracy"]
    assert run.best_val_accuracy >= run.extra["lp_val_accuracy"] - 1e-6
    for name, value in start.items():  # the start's weights are restored, head and trained stage alike
        assert torch.equal(end[name], value), name
    # patience counts from epoch 0 (two epochs without beating it), but no stop before the epoch in which the learning
    # rate falls under a quarter of its peak
    steps = run.extra["steps_per_epoch"]
    assert run.stopped_early and run.epochs_run == early_stop_from(6, steps, max(1, int(0.5 * steps))) < 6


def test_helpful_training_picks_a_later_epoch(six_classes, tiny_weights, tmp_path):
    # a one-iteration head leaves room to improve; training the top two stages does
    spec = make_strategy("fine-tune", stages=2, lr=1e-2, epochs=4, batch_size=8, patience=3, min_steps=0,
                         head_max_iter=1)
    run, start, end = _run(six_classes, tiny_weights, tmp_path, spec)
    assert run.curve[0]["epoch"] == 0
    assert run.best_epoch >= 1
    assert run.best_val_accuracy == run.curve[run.best_epoch]["val_accuracy"] > run.curve[0]["val_accuracy"]
    assert not all(torch.equal(end[k], v) for k, v in start.items())


def test_scratch_and_fine_tune_without_lp_ft_have_no_epoch_0(image_folder, tiny_weights, tmp_path):
    fast = {"epochs": 2, "batch_size": 8, "patience": 2, "min_steps": 0}
    for spec in (make_strategy("scratch", **fast), make_strategy("fine-tune", stages=1, lp_ft=False, **fast)):
        config = ExperimentConfig(dataset=DatasetSpec(str(image_folder)),
                                  backbone=BackboneSpec("test_efficientnet", str(tiny_weights)), strategies=[spec],
                                  image_size=32, seed=0)
        prepared = prepare(config)
        runner = Runner(prepared, prepared.cell_data(prepared.subset(None, 0)), 0,
                        cache=FeatureCache(tmp_path / "features"))
        run = runner.run(spec)
        assert run.status == "completed", run.error
        assert [p["epoch"] for p in run.curve] == [1, 2] and run.best_epoch >= 1
