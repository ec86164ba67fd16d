"""The plotly figures, tables and HTML report of tlcore.views on hand-made results (issue #12): training curves that
never run back in x and keep accuracy on [0, 1], a Pareto front drawn whenever it exists, a gallery spread over the
classes, and tables without NaN. No training here: every RunResult is built by hand, the gallery's images come from
the built-in digits."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tlcore.core.results import ComparisonResult, RunResult
from tlcore.views import charts
from tlcore.views.report import report_html

HEAD_PHASE = "head (L-BFGS x10)"  # what fit_linear_head writes in each curve point


def _head_curve(steps: int) -> list[dict]:
    return [{"epoch": s, "train_loss": 1.0 / s, "val_accuracy": 0.5 + 0.03 * s, "phase": HEAD_PHASE}
            for s in range(1, steps + 1)]


def _epoch_curve(epochs: int, kind: str) -> list[dict]:
    return [{"epoch": e, "train_loss": 2.0 / e, "val_accuracy": 0.55 + 0.04 * e, "val_loss": 1.0 / e, "phase": kind}
            for e in range(1, epochs + 1)]


def _run(kind: str, accuracy: float | None, seconds: float | None, name: str = "", **fields) -> RunResult:
    scores = {}
    if accuracy is not None:
        scores = dict(accuracy=accuracy, accuracy_low=accuracy - 0.03, accuracy_high=min(1.0, accuracy + 0.03),
                      macro_f1=accuracy - 0.01)
    return RunResult(run_id=f"id-{name or kind}", strategy=name or kind, kind=kind,
                     status="completed" if accuracy is not None else "failed", train_seconds=seconds,
                     throughput_ips=250.4 if accuracy is not None else None,
                     trainable_params=5_130 if kind == "feature-extraction" else 11_181_642,
                     total_params=11_181_642, peak_memory_mb=812.44, weights={"source": "packaged"},
                     **scores, **fields)


def _feature_extraction(accuracy: float = 0.9, seconds: float = 3.0) -> RunResult:
    return _run("feature-extraction", accuracy, seconds, curve=_head_curve(12), epochs_run=12, best_epoch=12)


def _fine_tune(accuracy: float = 0.8, seconds: float = 60.0) -> RunResult:
    return _run("fine-tune", accuracy, seconds, curve=_epoch_curve(8, "fine-tune"), epochs_run=8, best_epoch=6,
                extra={"lp_head_l2": 0.01, "lp_val_accuracy": 0.7, "planned_epochs": 10})


def _scratch(accuracy: float | None = 0.4, seconds: float | None = 300.0) -> RunResult:
    run = _run("scratch", accuracy, seconds, curve=_epoch_curve(10, "scratch") if accuracy else [],
                epochs_run=10 if accuracy else 0, error=None if accuracy else "RunFailed: out of memory")
    if accuracy is None:  # failed before its model was built
        run.trainable_params = run.total_params = run.peak_memory_mb = None
    return run


def _result(*runs: RunResult) -> ComparisonResult:
    return ComparisonResult(config={"dataset": {"source": "digits"}, "seed": 0}, dataset={}, runs=list(runs),
                            record_id="rec-test")


def _assert_curves_sound(fig) -> None:
    """Every trace runs forward in x; every y axis is accuracy's whole scale."""
    assert fig.data, "no traces drawn"
    for trace in fig.data:
        xs = list(trace.x)
        assert all(a < b for a, b in zip(xs, xs[1:])), f"{trace.name} runs back in x: {xs}"
    axes = [fig.layout[name] for name in fig.layout if name.startswith("yaxis")]
    assert axes
    for axis in axes:
        low, high = axis.range
        assert 0 <= low < high <= 1.05, axis.range


# ------------------------------------------------------------------------------------------------------- curves
def test_live_fine_tune_warmup_is_its_own_dashed_trace_and_never_runs_back():
    """The reported case: LP-FT warm-up iterations 1..12 then epochs 1..3 under one name, next to feature
    extraction's head fit; both must stay visible, no line from x=12 back to x=1."""
    live = {
        "feature-extraction": [{"epoch": s, "val_accuracy": 0.6 + 0.02 * s, "loss": 1.0 / s} for s in range(1, 8)],
        "fine-tune": [{"epoch": s, "val_accuracy": 0.5 + 0.02 * s, "loss": 1.0 / s} for s in range(1, 13)]
                     + [{"epoch": e, "val_accuracy": 0.8 + 0.01 * e, "loss": 0.5} for e in range(1, 4)],
    }
    fig = charts.curves(live)
    _assert_curves_sound(fig)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"feature-extraction", "fine-tune: head warm-up", "fine-tune"}
    warmup, tune, fe = by_name["fine-tune: head warm-up"], by_name["fine-tune"], by_name["feature-extraction"]
    assert warmup.line.dash == "dash" and fe.line.dash == "dash" and tune.line.dash == "solid"
    # head fits count L-BFGS iterations (a point every 10) on their own x axis; training counts epochs from 0
    assert list(warmup.x) == [10 * s for s in range(1, 13)]
    assert list(tune.x) == [0, 1, 2, 3] and tune.y[0] == pytest.approx(warmup.y[-1])
    assert warmup.xaxis == fe.xaxis != tune.xaxis
    assert "L-BFGS" in fig.layout[warmup.xaxis.replace("x", "xaxis")].title.text
    assert fig.layout[tune.xaxis.replace("x", "xaxis")].title.text.startswith("epoch")
    assert tune.line.color == warmup.line.color == charts.COLORS["fine-tune"]


def test_live_points_with_phase_are_split_by_phase():
    live = {"ft": [{"epoch": s, "val_accuracy": 0.5, "loss": 1.0, "phase": "head"} for s in (1, 2, 3)]
                  + [{"epoch": e, "val_accuracy": 0.7, "loss": 1.0, "phase": "epoch"} for e in (1, 2)]}
    segments = charts.curve_segments(live, kinds={"ft": "fine-tune"})
    assert [(s["phase"], s["x"]) for s in segments] == [("head", [10, 20, 30]), ("epochs", [0, 1, 2])]
    _assert_curves_sound(charts.curves(live, kinds={"ft": "fine-tune"}))


def test_one_live_point_keeps_accuracy_axis_on_zero_to_one():
    fig = charts.curves({"scratch": [{"epoch": 1, "val_accuracy": 0.31, "loss": 2.2}]})
    _assert_curves_sound(fig)
    assert len(fig.data) == 1 and list(fig.data[0].x) == [1]
    assert fig.layout.xaxis.title.text == "epoch"


def test_finished_runs_curves_separate_head_fit_from_epochs():
    runs = [_feature_extraction(), _fine_tune(), _scratch()]
    fig = charts.curves(runs)
    _assert_curves_sound(fig)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"feature-extraction", "fine-tune", "scratch"}
    assert list(by_name["feature-extraction"].x) == [10 * s for s in range(1, 13)]
    assert list(by_name["fine-tune"].x) == list(range(0, 9))  # epoch 0: after the LP-FT warm-up
    assert by_name["fine-tune"].y[0] == pytest.approx(0.7)
    assert list(by_name["scratch"].x) == list(range(1, 11))
    assert by_name["feature-extraction"].xaxis != by_name["scratch"].xaxis == by_name["fine-tune"].xaxis


def test_the_epochs_axis_says_when_val_passes_ran_in_bf16():
    fine_tune, scratch = _fine_tune(), _scratch()
    fig = charts.curves([_feature_extraction(), fine_tune, scratch])
    assert "bf16" not in fig.layout.xaxis2.title.text
    scratch.extra["val_precision"] = "bf16"
    fig = charts.curves([_feature_extraction(), fine_tune, scratch])
    assert fig.layout.xaxis2.title.text == "epoch (0: after warm-up) · val passes in bf16"
    assert "bf16" not in fig.layout.xaxis.title.text  # the head fit's panel: val on fp32 cached features
    assert "bf16" in charts.curves([scratch]).layout.xaxis.title.text


def test_loss_curves_start_at_zero_and_do_not_mix_warmup_loss_into_epoch_zero():
    fig = charts.curves([_feature_extraction(), _fine_tune()], metric="train_loss")
    assert all(a < b for t in fig.data for a, b in zip(t.x, t.x[1:]))
    assert {t.name: t.x[0] for t in fig.data} == {"feature-extraction": 10, "fine-tune": 1}
    assert fig.layout.yaxis.rangemode == "tozero"


def test_no_curves_is_an_empty_figure_not_an_error():
    fig = charts.curves({})
    assert len(fig.data) == 0 and tuple(fig.layout.yaxis.range) == tuple(charts.ACCURACY_RANGE)


# ------------------------------------------------------------------------------------------------------- pareto
def _front_trace(fig):
    fronts = [t for t in fig.data if t.name and t.name.startswith("Pareto front")]
    assert len(fronts) == 1, [t.name for t in fig.data]
    return fronts[0]


def test_pareto_front_of_one_point_is_drawn_when_one_strategy_dominates():
    result = _result(_feature_extraction(0.9, 3.0), _fine_tune(0.8, 60.0), _scratch(0.4, 300.0))
    fig = charts.pareto(result)
    front = _front_trace(fig)
    assert list(front.x) == [3.0] and list(front.y) == [0.9]
    assert front.marker.symbol == "circle-open" and "lines" not in front.mode
    assert "feature-extraction" in front.name
    assert "dashed" not in fig.layout.title.text and "dashed" not in front.name


def test_pareto_front_of_several_points_is_a_dashed_line_in_time_order():
    result = _result(_feature_extraction(0.8, 3.0), _fine_tune(0.9, 60.0), _scratch(0.4, 300.0))
    fig = charts.pareto(result)
    front = _front_trace(fig)
    assert list(front.x) == [3.0, 60.0] and list(front.y) == [0.8, 0.9]
    assert front.line.dash == "dash" and "lines" in front.mode


def test_pareto_labels_are_not_clipped_and_close_points_do_not_share_a_position():
    close = _result(_feature_extraction(0.81, 50.0), _fine_tune(0.80, 55.0), _scratch(0.30, 4.0))
    fig = charts.pareto(close)
    points = {t.name: t for t in fig.data if t.mode == "markers+text"}
    assert set(points) == {"feature-extraction", "fine-tune", "scratch"}
    assert all(t.cliponaxis is False for t in points.values())
    assert points["feature-extraction"].textposition.startswith("top")
    assert points["fine-tune"].textposition.startswith("bottom")
    assert points["scratch"].textposition.endswith("right")  # next to the y axis: labelled inwards
    low, high = fig.layout.yaxis.range
    assert low <= 0.30 - 0.03 and high >= 0.81 + 0.03  # every error bar inside the axis


def test_pareto_skips_failed_runs_and_draws_no_front_for_a_single_strategy():
    fig = charts.pareto(_result(_fine_tune(), _scratch(None, None)))
    assert [t.name for t in fig.data] == ["fine-tune"]
    assert "Pareto" not in fig.layout.title.text


def test_label_positions_for_three_close_points():
    positions = charts.label_positions([(5.0, 0.80), (5.5, 0.79), (6.0, 0.78)], (0.0, 10.0), (0.0, 1.0))
    assert [p.split()[0] for p in positions] == ["top", "middle", "bottom"]
    assert positions[1] != "middle center"


# ------------------------------------------------------------------------------------------------------ gallery
def test_gallery_order_spreads_mistakes_over_classes_then_correct_ones():
    # class 0 has 30 mistakes, classes 1..9 one each; 24 images must not all be class 0
    truth = [0] * 40 + [c for c in range(1, 10) for _ in range(5)]
    pred = [1] * 30 + [0] * 10 + [(c + 1) % 10 if k == 0 else c for c in range(1, 10) for k in range(5)]
    order = charts.gallery_order(truth, pred, 24)
    assert len(order) == 24 and len(set(order)) == 24
    mistakes = [i for i in order if pred[i] != truth[i]]
    assert order[:len(mistakes)] == mistakes  # mistakes first
    assert len(mistakes) == 24 and {truth[i] for i in order[:10]} == set(range(10))
    assert Counter(truth[i] for i in order)[0] == 15  # the rest of the page: class 0's remaining mistakes
    assert charts.gallery_order(truth, pred, 24) == order  # deterministic
    every = charts.gallery_order(truth, pred, 1000)
    assert sorted(every) == list(range(len(truth)))
    assert all(pred[i] == truth[i] for i in every[39:])  # 39 mistakes, then the correct ones
    assert {truth[i] for i in every[39:49]} == set(range(10))
    assert charts.gallery_order([], [], 24) == [] and charts.gallery_order(truth, [], 24) == []


def test_gallery_loads_digits_and_spreads_over_classes():
    from tlcore.data.dataset import DatasetSpec
    from tlcore.data.load import load_dataset

    ds = load_dataset(DatasetSpec(source="digits"), seed=0)
    truth = ds.labels("test").tolist()
    pred = list(truth)
    wrong = [i for i, t in enumerate(truth) if t == 3][:30] + [i for i, t in enumerate(truth) if t in (5, 7)][:6]
    for i in wrong:
        pred[i] = (truth[i] + 1) % 10
    run = _run("feature-extraction", 0.9, 1.0, test_predictions=pred)
    result = ComparisonResult(config={"dataset": {"source": "digits"}, "seed": 0},
                              dataset={"classes": ds.classes}, runs=[run],
                              test_indices=ds.indices["test"].tolist(), test_labels=truth)
    items = charts.gallery(result, run, 24)
    assert len(items) == 24
    assert [item["correct"] for item in items] == [False] * 24
    assert {item["true"] for item in items} == {"3", "5", "7"}
    assert Counter(item["true"] for item in items)["3"] == 24 - len(wrong[30:])
    assert [item["true"] for item in items[:3]] == ["3", "5", "7"]  # round-robin, most mistakes first
    assert all(item["image"].size[0] > 0 for item in items)


# ------------------------------------------------------------------------------------------------ tables, report
def test_summary_table_is_narrow_and_has_no_nan_labels():
    table = charts.summary_table(_result(_feature_extraction(), _fine_tune(), _scratch(None, None)))
    assert list(table.columns) == ["strategy", "status", "accuracy", "95% CI", "macro-F1", "train s", "img/s",
                                   "trainable", "peak MB", "epochs", "weights", "note"]
    assert max(len(c) for c in table.columns) <= 9
    assert table["epochs"].tolist() == ["L-BFGS", "8/10 (best 6)", "-"]
    assert table["95% CI"].tolist() == ["0.870-0.930", "0.770-0.830", "-"]
    assert table["peak MB"].tolist()[:2] == [812, 812]
    assert table["trainable"].tolist() == ["5.13k", "11.2M", "-"]
    assert table["status"].tolist() == ["completed", "completed", "failed"]
    assert table["note"].tolist() == ["", "", "RunFailed: out of memory"]
    assert table["accuracy"].dtype == float  # the page formats it as a number


def _tables(page: str) -> list[str]:
    return re.findall(r"<table.*?</table>", page, re.S)


def test_report_tables_show_no_nan_for_feature_extraction_or_failed_runs():
    page = report_html(_result(_feature_extraction(), _fine_tune(), _scratch(None, None)), "issue 12")
    tables = _tables(page)
    assert len(tables) == 1
    for bad in ("NaN", "nan", "None", "<NA>"):
        assert bad not in tables[0], bad
    assert "<td>L-BFGS</td>" in tables[0]
    assert "<td>8/10 (best 6)</td>" in tables[0]


def test_report_of_feature_extraction_alone_has_no_nan_outside_plotly_js():
    page = report_html(_result(_feature_extraction()), "fe only")
    body = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # plotly.js itself contains isNaN
    assert "NaN" not in body and "None" not in re.sub(r"<pre>.*?</pre>", "", body, flags=re.S)
