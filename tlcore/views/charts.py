"""Plotly figures and tables for comparison results. No streamlit here, so the same figures serve the dashboard,
scripts and exported reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tlcore.core.results import ComparisonResult, RunResult
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import load_dataset

COLORS = {"feature-extraction": "#1f77b4", "fine-tune": "#ff7f0e", "scratch": "#2ca02c"}


def _color(run: RunResult) -> str:
    return COLORS.get(run.kind, "#7f7f7f")


def _done(result: ComparisonResult) -> list[RunResult]:
    return [r for r in result.runs if r.accuracy is not None]


def summary_table(result: ComparisonResult) -> pd.DataFrame:
    """One row per strategy with the figures a reader compares, ready to display."""
    rows = []
    for r in result.runs:
        rows.append({
            "strategy": r.strategy,
            "status": r.status,
            "accuracy": r.accuracy,
            "95% CI": f"{r.accuracy_low:.3f} - {r.accuracy_high:.3f}" if r.accuracy is not None else "",
            "macro-F1": r.macro_f1,
            "train time (s)": r.train_seconds,
            "inference (img/s)": r.throughput_ips,
            "trainable params": r.trainable_params,
            "total params": r.total_params,
            "peak memory (MB)": r.peak_memory_mb,
            "epochs": r.epochs_run if r.kind != "feature-extraction" else None,
            "weights": r.weights.get("source", ""),
            "note": r.error or "",
        })
    return pd.DataFrame(rows)


def bars(result: ComparisonResult) -> go.Figure:
    """Accuracy (with its 95% interval), training time and trainable parameters (log scale), side by side."""

    runs = _done(result)
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Test accuracy (95% CI)", "Training time (s)",
                                                        "Trainable parameters (log)"))
    names = [r.strategy for r in runs]
    colors = [_color(r) for r in runs]
    fig.add_bar(x=names, y=[r.accuracy for r in runs], marker_color=colors, row=1, col=1,
                error_y=dict(type="data", symmetric=False, array=[r.accuracy_high - r.accuracy for r in runs],
                             arrayminus=[r.accuracy - r.accuracy_low for r in runs]), name="accuracy")
    fig.add_bar(x=names, y=[r.train_seconds for r in runs], marker_color=colors, row=1, col=2, name="time")
    fig.add_bar(x=names, y=[r.trainable_params for r in runs], marker_color=colors, row=1, col=3, name="params")
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_layout(showlegend=False, height=340, margin=dict(t=40, b=20, l=20, r=20))
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


def pareto(result: ComparisonResult) -> go.Figure:
    runs = _done(result)
    points = [(r.train_seconds, r.accuracy) for r in runs]
    front = pareto_front(points)
    fig = go.Figure()
    for r in runs:
        fig.add_scatter(x=[r.train_seconds], y=[r.accuracy], mode="markers+text", text=[r.strategy],
                        textposition="top center", marker=dict(size=14, color=_color(r)), name=r.strategy,
                        error_y=dict(type="data", symmetric=False, array=[r.accuracy_high - r.accuracy],
                                     arrayminus=[r.accuracy - r.accuracy_low]))
    if len(front) > 1:
        fig.add_scatter(x=[points[i][0] for i in front], y=[points[i][1] for i in front], mode="lines",
                        line=dict(dash="dash", color="grey"), name="Pareto front")
    fig.update_layout(xaxis_title="training time (s)", yaxis_title="test accuracy", height=360,
                      title="Accuracy vs training time (dashed: Pareto front)", margin=dict(t=50, b=40))
    return fig


def curves(runs: list[RunResult] | dict[str, list[dict]], metric: str = "val_accuracy") -> go.Figure:
    """Per-epoch curves; accepts finished runs or the live points of a running job."""
    fig = go.Figure()
    items = runs.items() if isinstance(runs, dict) else [(r.strategy, r.curve) for r in runs]
    for name, points in items:
        pts = [p for p in points if p.get(metric) is not None]
        if pts:
            fig.add_scatter(x=[p["epoch"] for p in pts], y=[p[metric] for p in pts], mode="lines+markers",
                            name=name, line=dict(color=COLORS.get(name)))
    label = {"val_accuracy": "val accuracy", "train_loss": "train loss", "loss": "loss"}.get(metric, metric)
    fig.update_layout(xaxis_title="epoch (feature extraction: 10 L-BFGS iterations)", yaxis_title=label,
                      height=320, margin=dict(t=30, b=40), title=f"Training curves: {label}")
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


def gallery(result: ComparisonResult, run: RunResult, limit: int = 24) -> list[dict]:
    """Test images with true and predicted labels, mistakes first (reloads the dataset; cached for built-ins)."""
    spec = DatasetSpec(**result.config["dataset"])
    ds = load_dataset(spec, seed=result.config["seed"])
    pool = ds.pools["test"]
    classes = result.dataset["classes"]
    truth, pred = result.test_labels, run.test_predictions
    order = [i for i in range(len(pred)) if pred[i] != truth[i]] + [i for i in range(len(pred)) if pred[i] == truth[i]]
    items = []
    for i in order[:limit]:
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
                        mode="lines", fill="toself", fillcolor=_hex_to_rgba(color, 0.15), line=dict(width=0), hoverinfo="skip",
                        showlegend=False, legendgroup=strategy)
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
    out["95% interval"] = [f"{lo:.3f} - {hi:.3f}" for lo, hi in zip(out["accuracy_low"], out["accuracy_high"])]
    return out[["strategy", "size", "images_per_class", "repeats", "accuracy", "95% interval", "interval",
                "train_seconds", "trainable_params", "accuracy_per_train_second", "undertrained_share"]].rename(
        columns={"images_per_class": "images/class", "interval": "interval kind", "train_seconds": "train s",
                 "trainable_params": "trainable params", "accuracy_per_train_second": "accuracy per train s",
                 "undertrained_share": "still improving (share)"})


# ------------------------------------------------------------------------------------------------ recommendation
def strategy_map(region_fn, images_per_class: float | None = None, similarity: float | None = None,
                 label: str = "this dataset") -> go.Figure:
    """The recommendation rule drawn over images per class (log) x similarity, with the dataset placed on it."""
    sizes = np.logspace(0, 4, 161)
    sims = np.linspace(0, 1, 101)
    names = ["feature-extraction", "fine-tune (top 2 stages)", "fine-tune (all stages)", "scratch"]
    colors = ["#1f77b4", "#ff7f0e", "#d62728", "#2ca02c"]
    z = np.array([[names.index(region_fn(n, s)[0].label) for n in sizes] for s in sims])
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


def side_by_side(runs: pd.DataFrame) -> go.Figure:
    """Test accuracy (95% interval) of runs from several stored records; `runs` has RunResult.to_row() columns plus
    record and per_class."""
    done = runs[runs["accuracy"].notna()].copy()
    done["run"] = done["record"] + " · " + done["strategy"] + " · " + done["per_class"].map("{:g}/class".format)
    return px.bar(done, x="run", y="accuracy", color="strategy", error_y=done["accuracy_high"] - done["accuracy"],
                  error_y_minus=done["accuracy"] - done["accuracy_low"], color_discrete_map=COLORS,
                  title="Test accuracy (95% interval) of the selected records")
