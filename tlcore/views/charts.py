"""Plotly figures and tables for comparison results. No streamlit here, so the same figures serve the dashboard,
scripts and exported reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tlcore.core.results import ComparisonResult, RunResult
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.views.text import MISSING, epochs_text, run_notes

COLORS = {"feature-extraction": "#1f77b4", "fine-tune": "#ff7f0e", "scratch": "#2ca02c"}
HEAD_ITERATIONS_PER_POINT = 10  # fit_linear_head records its curve every 10 L-BFGS iterations
ACCURACY_RANGE = [0.0, 1.02]  # accuracy axes: the whole scale, a little room for markers at 1.0


def _color(run: RunResult) -> str:
    return COLORS.get(run.kind, "#7f7f7f")


def _done(result: ComparisonResult) -> list[RunResult]:
    return [r for r in result.runs if r.accuracy is not None]


def _number(value) -> float | None:
    """A finite float, or None: tables and figures must never show NaN."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _compact(count: int | None) -> str:
    """11181642 -> '11.2M': parameter counts readable in a narrow column (the exact count is in the CSV)."""
    if _number(count) is None:
        return MISSING
    count = float(count)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:.0f}"


def epochs_label(run: RunResult) -> str:
    """What the epochs column says, as the CLI says it (tlcore.views.text.epochs_text): 'L-BFGS', '3 (best 0)',
    '8/10 (best 6)' or '-'."""
    return epochs_text(run)


def summary_table(result: ComparisonResult) -> pd.DataFrame:
    """One row per strategy with the figures a reader compares, ready to display. Short column names and compact
    values so the table fits a page without clipping; total parameters (one backbone: the same for every
    strategy) are left out. Every exact number is in the CSV (`ComparisonResult.to_frame`), not here."""
    rows = []
    for r in result.runs:
        accuracy, low, high = _number(r.accuracy), _number(r.accuracy_low), _number(r.accuracy_high)
        seconds, ips, memory = _number(r.train_seconds), _number(r.throughput_ips), _number(r.peak_memory_mb)
        rows.append({
            "strategy": r.strategy,
            "status": r.status,
            "accuracy": accuracy,
            "95% CI": f"{low:.3f}-{high:.3f}" if low is not None and high is not None else MISSING,
            "macro-F1": _number(r.macro_f1),
            "train s": round(seconds, 1) if seconds is not None else None,
            "img/s": round(ips) if ips is not None else None,
            "trainable": _compact(r.trainable_params),
            "peak MB": round(memory) if memory is not None else None,
            "epochs": epochs_label(r),
            "weights": r.weights.get("source") or MISSING,
            "note": "; ".join(run_notes(r)),  # error, kept start, shared time, img/s on a busy machine
        })
    frame = pd.DataFrame(rows, columns=["strategy", "status", "accuracy", "95% CI", "macro-F1", "train s", "img/s",
                                        "trainable", "peak MB", "epochs", "weights", "note"])
    for column in ("accuracy", "macro-F1", "train s"):
        frame[column] = frame[column].astype("float64")
    for column in ("img/s", "peak MB"):  # whole numbers, and no NaN for a failed run (shown as '-' or empty)
        frame[column] = frame[column].astype("Int64")
    return frame


def _time_bars(fig: go.Figure, runs: list[RunResult], colors: list[str], row: int, col: int) -> None:
    """Each strategy's training time counted alone, its part shared with other strategies hatched on top."""
    names = [r.strategy for r in runs]
    shared = [r.shared_seconds() for r in runs]
    own = [max(0.0, (_number(r.train_seconds) or 0.0) - s) for r, s in zip(runs, shared)]
    fig.add_bar(x=names, y=own, marker_color=colors, row=row, col=col, name="time",
                hovertemplate="%{x}: %{y:.1f} s its own work<extra></extra>")
    if any(shared):
        fig.add_bar(x=names, y=shared, row=row, col=col, name="shared",
                    marker=dict(color=colors, pattern=dict(shape="/", fgcolor="white", solidity=0.4)),
                    customdata=[", ".join(r.shared_with()) or "-" for r in runs],
                    hovertemplate="%{x}: %{y:.1f} s shared with %{customdata}<extra></extra>")


def bars(result: ComparisonResult) -> go.Figure:
    """Accuracy (with its 95% interval), training time (each strategy counted alone; hatched: the part computed once
    for several strategies) and trainable parameters (log scale), side by side."""

    runs = _done(result)
    any_shared = any(r.shared for r in runs)
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "Test accuracy (95% CI)", "Training time (s)" + (", hatched: shared" if any_shared else ""),
        "Trainable parameters (log)"))
    names = [r.strategy for r in runs]
    colors = [_color(r) for r in runs]
    fig.add_bar(x=names, y=[r.accuracy for r in runs], marker_color=colors, row=1, col=1,
                error_y=dict(type="data", symmetric=False, array=[r.accuracy_high - r.accuracy for r in runs],
                             arrayminus=[r.accuracy - r.accuracy_low for r in runs]), name="accuracy")
    _time_bars(fig, runs, colors, 1, 2)
    fig.add_bar(x=names, y=[r.trainable_params for r in runs], marker_color=colors, row=1, col=3, name="params")
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_yaxes(range=ACCURACY_RANGE, row=1, col=1)
    fig.update_layout(showlegend=False, height=340, margin=dict(t=40, b=20, l=20, r=20), barmode="stack")
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not beaten on both lower time and higher accuracy, sorted by time."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def label_positions(points: Sequence[tuple[float, float]], x_range: tuple[float, float],
                    y_range: tuple[float, float]) -> list[str]:
    """A plotly textposition per point, so strategy names neither overlap nor run off the plot: of points close
    together, the highest is labelled above, the lowest below and any between to the side; a point near the left
    or right edge is labelled towards the inside."""
    xs = max(x_range[1] - x_range[0], 1e-9)
    ys = max(y_range[1] - y_range[0], 1e-9)
    out = []
    for i, (x, y) in enumerate(points):
        near = [j for j, (u, v) in enumerate(points)
                if j != i and abs(u - x) / xs < 0.3 and abs(v - y) / ys < 0.15]
        rank = [(v, -j) for j, (_, v) in enumerate(points) if j in near]  # ties: the earlier point goes on top
        mine = (y, -i)
        vertical = "top" if all(mine > r for r in rank) else "bottom" if all(mine < r for r in rank) else "middle"
        where = (x - x_range[0]) / xs
        horizontal = "right" if where < 0.15 else "left" if where > 0.85 else "center"
        if vertical == "middle" and horizontal == "center":
            horizontal = "right"  # never on top of the marker
        out.append(f"{vertical} {horizontal}")
    return out


def _time_hover(run: RunResult) -> str:
    text = f"{run.strategy}: {run.accuracy:.3f} in {run.train_seconds:.1f} s of training"
    if run.shared:
        text += f", {run.shared_seconds():.1f} s of it shared with {', '.join(run.shared_with())}"
    return text


def pareto(result: ComparisonResult) -> go.Figure:
    """Test accuracy (95% interval) against training time, each strategy's counted alone (work it shares with
    another strategy included: see RunResult.train_seconds); the Pareto front (no other strategy both faster and
    more accurate) ringed, and dashed when it has more than one point."""
    runs = [r for r in _done(result) if _number(r.train_seconds) is not None]
    points = [(float(r.train_seconds), float(r.accuracy)) for r in runs]
    front = pareto_front(points) if len(points) > 1 else []
    fig = go.Figure()
    if not runs:
        fig.update_layout(xaxis_title="training time (s)", yaxis_title="test accuracy", height=360,
                          title="Accuracy vs training time", yaxis=dict(range=ACCURACY_RANGE))
        return fig
    x_hi = max(x for x, _ in points) * 1.25 or 1.0
    lows = [_number(r.accuracy_low) for r in runs]
    highs = [_number(r.accuracy_high) for r in runs]
    y_lo = max(0.0, min(v if v is not None else y for v, (_, y) in zip(lows, points)) - 0.06)
    y_hi = min(1.1, max(v if v is not None else y for v, (_, y) in zip(highs, points)) + 0.06)
    x_range, y_range = (-0.04 * x_hi, x_hi), (y_lo, y_hi)
    positions = label_positions(points, x_range, y_range)
    for r, (x, y), low, high, position in zip(runs, points, lows, highs, positions):
        error = None
        if low is not None and high is not None:
            error = dict(type="data", symmetric=False, array=[high - y], arrayminus=[y - low])
        fig.add_scatter(x=[x], y=[y], mode="markers+text", text=[r.strategy], textposition=position,
                        cliponaxis=False, marker=dict(size=14, color=_color(r)), name=r.strategy, error_y=error,
                        hovertext=[_time_hover(r)], hoverinfo="text")
    if len(front) > 1:
        fig.add_scatter(x=[points[i][0] for i in front], y=[points[i][1] for i in front], mode="lines+markers",
                        line=dict(dash="dash", color="grey"), cliponaxis=False, hoverinfo="skip",
                        marker=dict(size=26, symbol="circle-open", color="grey", line=dict(width=2)),
                        name="Pareto front (dashed)")
    elif front:
        only = runs[front[0]].strategy
        fig.add_scatter(x=[points[front[0]][0]], y=[points[front[0]][1]], mode="markers", cliponaxis=False,
                        marker=dict(size=26, symbol="circle-open", color="grey", line=dict(width=2)),
                        hoverinfo="skip", name=f"Pareto front: {only} alone (none faster or more accurate)")
    title = "Accuracy vs training time" + (" (ringed: Pareto front)" if front else "")
    fig.update_layout(xaxis=dict(title="training time (s, each counted alone)", range=list(x_range)),
                      yaxis=dict(title="test accuracy", range=list(y_range)), height=380, title=title,
                      margin=dict(t=50, b=40, l=50, r=30), legend=dict(orientation="h", y=-0.2))
    return fig


# --------------------------------------------------------------------------------------------- training curves
def _kind_of(name: str, kinds: dict[str, str] | None) -> str:
    """A live curve is keyed by strategy name (or sweep cell label); its kind from `kinds`, else from the name."""
    if kinds and name in kinds:
        return kinds[name]
    return next((k for k in COLORS if name.lower().startswith(k)), "")


def _is_head_phase(phase) -> bool:
    """Curve points name their phase: 'head (L-BFGS x10)' stored, 'head' live; 'lp-warmup' is the LP-FT head too."""
    return str(phase).lower().startswith(("head", "lp"))


def _increasing(points: list[dict]) -> list[list[dict]]:
    """Split points where the epoch counter does not go up: each part can be drawn as a line that never runs
    back in x."""
    parts: list[list[dict]] = []
    for p in points:
        if not parts or p["epoch"] <= parts[-1][-1]["epoch"]:
            parts.append([])
        parts[-1].append(p)
    return parts


def curve_segments(runs: list[RunResult] | dict[str, list[dict]], metric: str = "val_accuracy",
                   kinds: dict[str, str] | None = None) -> list[dict]:
    """The traces of a training-curve chart, as plain data: {name, kind, phase ('head' or 'epochs'), x, y, hover}.

    Head fits (feature extraction, and the LP-FT warm-up before fine-tuning) count L-BFGS iterations; network
    training counts epochs: the two never share a line. A point's `phase` says which it is (stored curves, and live
    points that carry it); live points without it are split where the epoch counter starts again, all but the last
    part being the head warm-up. A fine-tune after its warm-up starts at epoch 0: the warm-up's val accuracy."""
    if isinstance(runs, dict):
        items = [(name, _kind_of(name, kinds), list(points), None) for name, points in runs.items()]
    else:
        items = [(r.strategy, r.kind, list(r.curve), _number(r.extra.get("lp_val_accuracy"))) for r in runs]
    out = []
    for name, kind, points, warmup_accuracy in items:
        points = [p for p in points if _number(p.get(metric)) is not None and p.get("epoch") is not None]
        if not points:
            continue
        if kind == "feature-extraction":
            head, epochs = [points], []
        elif any("phase" in p for p in points):
            head = _increasing([p for p in points if _is_head_phase(p.get("phase"))])
            epochs = _increasing([p for p in points if not _is_head_phase(p.get("phase"))])
        elif kind == "scratch":  # no warm-up: random weights have no features to fit a head on
            head, epochs = [], _increasing(points)
        else:
            parts = _increasing(points)
            head, epochs = parts[:-1], parts[-1:]
        head = [part for p in head for part in _increasing(p)]
        for part in head:
            out.append({"name": name if kind == "feature-extraction" else f"{name}: head warm-up", "kind": kind,
                        "phase": "head", "x": [p["epoch"] * HEAD_ITERATIONS_PER_POINT for p in part],
                        "y": [float(p[metric]) for p in part], "hover": ["head fit"] * len(part)})
        if head and metric == "val_accuracy":
            warmup_accuracy = float(head[-1][-1][metric])
        for k, part in enumerate(epochs):
            x, y = [p["epoch"] for p in part], [float(p[metric]) for p in part]
            hover = ["epoch"] * len(part)
            if k == 0 and metric == "val_accuracy" and warmup_accuracy is not None and x[0] > 0:
                x, y, hover = [0] + x, [warmup_accuracy] + y, ["after the head warm-up"] + hover
            elif k == 0 and x[0] == 0 and kind == "fine-tune":  # a stored epoch 0: the LP-FT start, measured
                hover[0] = "after the head warm-up"
            out.append({"name": name, "kind": kind, "phase": "epochs", "x": x, "y": y, "hover": hover})
    return out


def curves(runs: list[RunResult] | dict[str, list[dict]], metric: str = "val_accuracy",
           kinds: dict[str, str] | None = None) -> go.Figure:
    """Training curves of finished runs, or the live points of a running job ({name: [{epoch, val_accuracy, loss,
    phase?}]}; `kinds` maps a name to its strategy kind when the name does not start with it). Head fits on frozen
    features (L-BFGS iterations, dashed) and network training (epochs) get a panel each, sharing the y axis;
    accuracy is drawn on its whole scale, [0, 1]."""
    segments = curve_segments(runs, metric, kinds)
    phases = [p for p in ("head", "epochs") if any(s["phase"] == p for s in segments)]
    warmed_up = any(0 in s["x"] for s in segments if s["phase"] == "epochs")
    titles = {"head": "L-BFGS iterations", "epochs": "epoch" + (" (0: after warm-up)" if warmed_up else "")}
    if not isinstance(runs, dict) and any(r.extra.get("val_precision") == "bf16" for r in runs):
        titles["epochs"] += " · val passes in bf16"  # they only rank epochs (engine/precision.py)
    if len(phases) == 2:
        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.35, 0.65], horizontal_spacing=0.06,
                            subplot_titles=("head fit on frozen features", "network training"))
        fig.update_annotations(font_size=12)
        column = {"head": 1, "epochs": 2}
    else:
        fig, column = go.Figure(), {}
    shown: set[str] = set()
    for s in segments:
        trace = go.Scatter(x=s["x"], y=s["y"], mode="lines+markers", name=s["name"], legendgroup=s["name"],
                           showlegend=s["name"] not in shown, hovertext=s["hover"],
                           line=dict(color=COLORS.get(s["kind"], "#7f7f7f"),
                                     dash="dash" if s["phase"] == "head" else "solid"))
        shown.add(s["name"])
        if column:
            fig.add_trace(trace, row=1, col=column[s["phase"]])
        else:
            fig.add_trace(trace)
    for phase in phases:  # whole-number ticks (no 'epoch 1.5'), and room for the end markers
        unit = HEAD_ITERATIONS_PER_POINT if phase == "head" else 1
        xs = [x for s in segments if s["phase"] == phase for x in s["x"]]
        lo, hi = min(xs), max(xs)
        pad = max(0.06 * (hi - lo), 0.4 * unit)
        axis = dict(title_text=titles[phase], title_font_size=12, range=[lo - pad, hi + pad], tick0=0,
                    dtick=unit * max(1, math.ceil((hi - lo) / unit / 8)))
        if column:
            fig.update_xaxes(row=1, col=column[phase], **axis)
        else:
            fig.update_xaxes(**axis)
    if not phases:
        fig.update_xaxes(title_text="epoch")
    label = {"val_accuracy": "val accuracy", "train_loss": "train loss", "loss": "loss"}.get(metric, metric)
    if "accuracy" in metric:
        fig.update_yaxes(range=ACCURACY_RANGE)
    else:
        fig.update_yaxes(rangemode="tozero")
    if column:
        fig.update_yaxes(title_text=label, row=1, col=1)
    else:
        fig.update_yaxes(title_text=label)
    title = f"Training curves: {label}" + (" (dashed: head fit, L-BFGS iterations)" if phases == ["head"] else "")
    fig.update_layout(height=360, margin=dict(t=80, b=40), title=dict(text=title, y=0.97),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def confusion(run: RunResult, classes: list[str]) -> go.Figure:
    matrix = np.asarray(run.confusion)
    fig = px.imshow(matrix, x=classes, y=classes, text_auto=True, color_continuous_scale="Blues",
                    labels=dict(x="predicted", y="true", color="images"), aspect="auto")
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    fig.update_layout(title=f"Confusion matrix: {run.strategy}", height=420, margin=dict(t=50))
    return fig


def per_class(run: RunResult) -> go.Figure:
    items = sorted(run.per_class_accuracy.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           marker_color=COLORS.get(run.kind)))
    fig.update_layout(title=f"Per-class accuracy: {run.strategy}", xaxis=dict(range=[0, 1]),
                      yaxis=dict(type="category"), height=420, margin=dict(t=50))
    return fig


def gallery_order(truth: Sequence[int], pred: Sequence[int], limit: int) -> list[int]:
    """Which test images the gallery shows, by position in the test split: mistakes first, then correct ones, each
    taken round-robin over the true classes (classes with the most mistakes first, then by class index; within a
    class in test order), so a page of images spreads over the classes instead of showing one class's. Deterministic:
    the same run always shows the same images."""
    n = min(len(truth), len(pred))
    mistakes_per_class: dict[int, int] = {}
    for i in range(n):
        if pred[i] != truth[i]:
            mistakes_per_class[int(truth[i])] = mistakes_per_class.get(int(truth[i]), 0) + 1

    def round_robin(indices: list[int]) -> list[int]:
        by_class: dict[int, list[int]] = {}
        for i in indices:
            by_class.setdefault(int(truth[i]), []).append(i)
        classes = sorted(by_class, key=lambda c: (-mistakes_per_class.get(c, 0), c))
        out, depth = [], 0
        while len(out) < len(indices):
            out += [by_class[c][depth] for c in classes if depth < len(by_class[c])]
            depth += 1
        return out

    mistakes = [i for i in range(n) if pred[i] != truth[i]]
    correct = [i for i in range(n) if pred[i] == truth[i]]
    return (round_robin(mistakes) + round_robin(correct))[:max(0, limit)]


def gallery_caption(item: dict) -> str:
    """'WRONG: shirt (true: coat)' or 'right: coat': text marks, which every font draws (emoji need an emoji font)."""
    if item["correct"]:
        return f"right: {item['predicted']}"
    return f"WRONG: {item['predicted']} (true: {item['true']})"


def gallery(result: ComparisonResult, run: RunResult, limit: int = 24) -> list[dict]:
    """Test images with true and predicted labels, mistakes first and spread over the classes (see
    `gallery_order`); reloads the dataset from the result's config (cached for built-ins)."""
    spec = DatasetSpec(**result.config["dataset"])
    ds = load_dataset(spec, seed=result.config["seed"])
    pool = ds.pools["test"]
    classes = result.dataset["classes"]
    truth, pred = result.test_labels, run.test_predictions
    items = []
    for i in gallery_order(truth, pred, limit):
        index = result.test_indices[i]
        items.append({"image": pool.load(int(index)), "true": classes[truth[i]], "predicted": classes[pred[i]],
                      "correct": pred[i] == truth[i], "source": pool.describe(int(index))})
    return items



# -------------------------------------------------------------------------------------------------------- sweeps
def _hex_to_rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _size_axis(fig: go.Figure, summary: pd.DataFrame) -> None:
    ticks = sorted(summary["images_per_class"].unique())
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], title="images per class (log)")


def learning_curves(summary: pd.DataFrame, crossovers: list = (), cells: pd.DataFrame | None = None) -> go.Figure:
    """Mean test accuracy against images per class (log x), a band for each 95% interval, each repeat as a dot, and
    the crossovers as annotated vertical lines."""
    fig = go.Figure()
    for strategy, g in summary.groupby("strategy", sort=False):
        g = g.sort_values("images_per_class")
        color = COLORS.get(g["kind"].iloc[0], "#7f7f7f")
        x = g["images_per_class"].tolist()
        fig.add_scatter(x=x + x[::-1], y=g["accuracy_high"].tolist() + g["accuracy_low"].tolist()[::-1],
                        mode="lines", fill="toself", fillcolor=_hex_to_rgba(color, 0.15), line=dict(width=0),
                        hoverinfo="skip", showlegend=False, legendgroup=strategy)
        fig.add_scatter(x=x, y=g["accuracy"], mode="lines+markers", name=strategy, legendgroup=strategy,
                        line=dict(color=color), customdata=np.stack([g["accuracy_low"], g["accuracy_high"],
                                                                     g["repeats"]], axis=1),
                        hovertemplate="%{x:g} a class: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], "
                                      "%{customdata[2]} repeat(s)<extra>" + strategy + "</extra>")
        if cells is not None and len(cells):
            done = cells[(cells["strategy"] == strategy) & (cells["status"] == "completed")]
            fig.add_scatter(x=done["images_per_class"], y=done["accuracy"], mode="markers", showlegend=False,
                            legendgroup=strategy, marker=dict(color=color, size=5, opacity=0.5),
                            hovertemplate="seed %{customdata}: %{y:.3f}<extra>" + strategy + "</extra>",
                            customdata=done["seed"])
    for c in crossovers:
        c = c if isinstance(c, dict) else c.to_dict()
        if c.get("images_per_class"):
            fig.add_vline(x=c["images_per_class"], line_dash="dot", line_color="#555",
                          annotation_text=c["name"], annotation_position="top left",
                          annotation_font_size=11)
    if len(summary):
        _size_axis(fig, summary)
    fig.update_yaxes(title="test accuracy")
    fig.update_layout(title="Accuracy vs labelled images per class (mean, 95% interval band, dots = repeats)",
                      height=430, margin=dict(t=60, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def _per_size_line(summary: pd.DataFrame, column: str, title: str, y_title: str, log_y: bool) -> go.Figure:
    fig = go.Figure()
    for strategy, g in summary.groupby("strategy", sort=False):
        g = g.sort_values("images_per_class")
        fig.add_scatter(x=g["images_per_class"], y=g[column], mode="lines+markers", name=strategy,
                        line=dict(color=COLORS.get(g["kind"].iloc[0], "#7f7f7f")))
    if len(summary):
        _size_axis(fig, summary)
    fig.update_yaxes(title=y_title, type="log" if log_y else "linear")
    fig.update_layout(title=title, height=360, margin=dict(t=50, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def time_vs_size(summary: pd.DataFrame) -> go.Figure:
    return _per_size_line(summary, "train_seconds", "Training time vs images per class (mean over repeats)",
                          "training seconds (log)", True)


def accuracy_per_second(summary: pd.DataFrame) -> go.Figure:
    return _per_size_line(summary, "accuracy_per_train_second", "Accuracy per second of training",
                          "accuracy / training second (log)", True)


def sweep_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary ready to display: one row per strategy and size."""
    out = summary.copy()
    out["95% interval"] = [f"{lo:.3f} - {hi:.3f}" if _number(lo) is not None and _number(hi) is not None
                           else MISSING for lo, hi in zip(out["accuracy_low"], out["accuracy_high"])]
    return out[["strategy", "size", "images_per_class", "repeats", "accuracy", "95% interval", "interval",
                "train_seconds", "trainable_params", "accuracy_per_train_second", "undertrained_share"]].rename(
        columns={"images_per_class": "images/class", "interval": "interval kind", "train_seconds": "train s",
                 "trainable_params": "trainable params", "accuracy_per_train_second": "accuracy per train s",
                 "undertrained_share": "still improving (share)"})


# ------------------------------------------------------------------------------------------------ recommendation
def strategy_map(region_fn, images_per_class: float | None = None, similarity: float | None = None,
                 label: str = "this dataset") -> go.Figure:
    """The recommendation rule drawn over images per class (log) x similarity, with the dataset placed on it.
    `region_fn(images_per_class, similarity)` gives (choice, runner-up); bind the number of classes beforehand."""
    sizes = np.logspace(0, 4, 161)
    sims = np.linspace(0, 1, 101)
    names = ["feature-extraction", "fine-tune (top 2 stages)", "fine-tune (all stages)", "scratch"]
    colors = ["#1f77b4", "#ff7f0e", "#d62728", "#2ca02c"]
    z = np.array([[names.index(region_fn(n, s)[0].label) for n in sizes] for s in sims])
    drawn = sorted(set(np.unique(z).tolist()))  # the legend lists only the areas the rule draws
    z = np.searchsorted(drawn, z)
    names, colors = [names[i] for i in drawn], [colors[i] for i in drawn]
    scale = []
    for i, c in enumerate(colors):
        scale += [(i / len(colors), c), ((i + 1) / len(colors), c)]
    fig = go.Figure(go.Heatmap(x=sizes, y=sims, z=z, zmin=-0.5, zmax=len(names) - 0.5, colorscale=scale,
                               opacity=0.55, showscale=True, hoverinfo="skip",
                               colorbar=dict(tickvals=list(range(len(names))), ticktext=names, title="")))
    if images_per_class is not None and similarity is not None:
        fig.add_scatter(x=[images_per_class], y=[similarity], mode="markers+text", text=[label],
                        textposition="top center", marker=dict(size=14, color="black", symbol="x"), showlegend=False)
    fig.update_xaxes(type="log", title="labelled images per class (log)")
    fig.update_yaxes(title="similarity to the pretraining data", range=[0, 1])
    fig.update_layout(title="Where this dataset sits: the recommendation rule as a map", height=420,
                      margin=dict(t=50, b=40))
    return fig
