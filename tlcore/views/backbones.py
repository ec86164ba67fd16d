"""Figures and tables for choosing a backbone: a ranking's predicted feature-extraction accuracy against inference
cost, and a multi-backbone comparison's test accuracy against time per image, each with its Pareto front."""

from __future__ import annotations

import plotly.graph_objects as go

import pandas as pd

from tlcore.advice.candidates import ConfirmedCheck, Ranking
from tlcore.experiments.backbones import BackbonesResult
from tlcore.views.charts import COLORS, label_positions

SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "hexagon", "cross", "triangle-down", "pentagon",
           "hourglass", "bowtie"]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _short(backbone: str) -> str:
    """'tf_efficientnet_lite0' -> 'lite0', 'mobilenetv2_100' -> 'mobilenetv2_100': a label that fits on a chart."""
    return backbone.replace("tf_efficientnet_", "")


def ranking_cost(ranking: Ranking) -> tuple[str, list[float]]:
    """The x axis's title and each completed candidate's cost, on the ranking's cost basis."""
    done = ranking.completed
    if ranking.cost_basis == "time per image":
        return "inference time per image (ms, measured here)", [c.ms_per_image for c in done]
    return "multiply-adds per image (millions)", [c.macs / 1e6 for c in done]


def ranking_figure(ranking: Ranking) -> go.Figure:
    """Predicted accuracy (the feature-extraction head's val accuracy, 95% interval) against inference cost, a colour
    a backbone, the Pareto front dashed and ringed."""
    done = ranking.completed
    title, costs = ranking_cost(ranking)
    fig = go.Figure()
    if not done:
        fig.update_layout(title="No candidate measured", height=360)
        return fig
    colors = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(dict.fromkeys(c.backbone for c in done))}
    points = [(x, c.fe_val_accuracy) for x, c in zip(costs, done)]
    span = max(costs) - min(costs) or max(costs) or 1.0
    x_lo, x_hi = max(0.0, min(costs) - 0.15 * span), max(costs) + 0.15 * span
    y_lo = max(0.0, min(c.fe_val_low for c in done) - 0.03)
    y_hi = min(1.05, max(c.fe_val_high for c in done) + 0.03)
    positions = label_positions(points, (x_lo, x_hi), (y_lo, y_hi))
    shown = set()
    for c, (x, y), position in zip(done, points, positions):
        fig.add_scatter(x=[x], y=[y], mode="markers+text", text=[f"{_short(c.backbone)} {c.image_size}px"],
                        textposition=position, cliponaxis=False, name=c.backbone, legendgroup=c.backbone,
                        showlegend=c.backbone not in shown, marker=dict(size=12, color=colors[c.backbone]),
                        error_y=dict(type="data", symmetric=False, array=[c.fe_val_high - y],
                                     arrayminus=[y - c.fe_val_low]),
                        hovertext=[f"#{c.rank} {c.label}: FE val {y:.1%} [{c.fe_val_low:.1%}, {c.fe_val_high:.1%}], "
                                   f"{c.macs / 1e6:.0f} M multiply-adds, "
                                   + (f"{c.ms_per_image:.2f} ms an image" if c.ms_per_image else "speed not measured")],
                        hoverinfo="text")
        shown.add(c.backbone)
    front = [(x, c.fe_val_accuracy) for x, c in sorted(zip(costs, done), key=lambda p: p[0]) if c.pareto]
    if front:
        fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines+markers", cliponaxis=False,
                        line=dict(dash="dash", color="grey"), hoverinfo="skip", name="Pareto front",
                        marker=dict(size=24, symbol="circle-open", color="grey", line=dict(width=2)))
    fig.update_layout(title="Predicted accuracy against inference cost (ringed: Pareto front)",
                      xaxis=dict(title=title, range=[x_lo, x_hi]),
                      yaxis=dict(title="predicted accuracy (FE head, val)", range=[y_lo, y_hi], tickformat=".0%"),
                      height=420, margin=dict(t=50, b=40, l=60, r=30), legend=dict(orientation="h", y=-0.2))
    return fig


def ranking_frame(ranking: Ranking) -> pd.DataFrame:
    """The table a page shows: one row a candidate, best first, costs in readable units."""
    rows = []
    for c in ranking.candidates:
        rows.append({"rank": c.rank or None, "backbone": c.backbone, "px": c.image_size, "status": c.status,
                     "predicted accuracy": c.fe_val_accuracy, "from": c.fe_val_low, "to": c.fe_val_high,
                     "5-fold": c.cv_accuracy, "k-NN": c.knn_accuracy, "LogME": c.logme, "H-score": c.h_score,
                     "params (M)": c.params / 1e6 if c.params else None,
                     "multiply-adds (M)": c.macs / 1e6 if c.macs else None,
                     "ms / image": c.ms_per_image, "peak MB": c.peak_memory_mb, "front": c.pareto,
                     "why not measured": c.reason})
    return pd.DataFrame(rows)


def backbones_figure(result: BackbonesResult) -> go.Figure:
    """Test accuracy (95% interval) against inference time per image for every run: a colour a strategy, a symbol a
    candidate; the Pareto front dashed and ringed."""
    frame = result.to_frame()
    done = frame[(frame["status"] == "completed") & frame["accuracy"].notna() & frame["ms_per_image"].notna()]
    fig = go.Figure()
    if done.empty:
        fig.update_layout(title="No run finished", height=360)
        return fig
    symbols = {c.label: SYMBOLS[i % len(SYMBOLS)] for i, c in enumerate(result.config.candidates)}
    for _, r in done.iterrows():
        fig.add_scatter(x=[r.ms_per_image], y=[r.accuracy], mode="markers", name=f"{r.strategy} · {r.candidate}",
                        marker=dict(size=13, color=COLORS.get(r.kind, "#7f7f7f"), symbol=symbols.get(r.candidate)),
                        error_y=dict(type="data", symmetric=False, array=[r.accuracy_high - r.accuracy],
                                     arrayminus=[r.accuracy - r.accuracy_low]),
                        hovertext=[f"{r.strategy} on {r.candidate}: {r.accuracy:.1%} test, {r.ms_per_image:.2f} ms "
                                   f"an image, {r.train_seconds:.1f} s of training"], hoverinfo="text")
    front = result.front()
    if not front.empty:
        fig.add_scatter(x=front["ms_per_image"], y=front["accuracy"], mode="lines+markers", cliponaxis=False,
                        line=dict(dash="dash", color="grey"), hoverinfo="skip", name="Pareto front",
                        marker=dict(size=26, symbol="circle-open", color="grey", line=dict(width=2)))
    y_lo = max(0.0, float(done["accuracy_low"].min()) - 0.03)
    x_min, x_max = float(done["ms_per_image"].min()), float(done["ms_per_image"].max())
    span = x_max - x_min or x_max or 1.0
    fig.update_layout(title="Test accuracy against inference time per image (ringed: Pareto front)",
                      xaxis=dict(title="inference time per image (ms, measured here)",
                                 range=[max(0.0, x_min - 0.15 * span), x_max + 0.15 * span]),
                      yaxis=dict(title="test accuracy", range=[y_lo, min(1.05, float(done["accuracy_high"].max())
                                                                       + 0.03)], tickformat=".0%"),
                      height=440, margin=dict(t=50, b=40, l=60, r=30), legend=dict(orientation="h", y=-0.25))
    return fig


def checks_frame(checks: list[ConfirmedCheck]) -> pd.DataFrame:
    """Predicted against confirmed, a row a candidate."""
    return pd.DataFrame([{"candidate": c.candidate, "predicted": c.predicted, "from": c.predicted_low,
                          "to": c.predicted_high, "confirmed val": c.confirmed_val,
                          "inside the interval": c.within_interval, "test": c.test, "test from": c.test_low,
                          "test to": c.test_high, "intervals meet": c.test_agrees} for c in checks])
