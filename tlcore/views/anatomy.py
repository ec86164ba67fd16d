"""The anatomy of a backbone and the layer-wise probe as tables, text and plotly figures: the CLI and the Anatomy page
show the same words and the same diagram."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tlcore.advice.probe import ProbeResult, probe_table
from tlcore.engine.activations import StageActivations
from tlcore.engine.anatomy import BN_FROZEN, BN_UPDATING, Anatomy, StrategyView
from tlcore.views.charts import ACCURACY_RANGE, _compact

FROZEN_COLOR, TRAINABLE_COLOR, NEUTRAL_COLOR = "#9fb3c8", "#ff7f0e", "#e8e8e8"
CURVE_COLORS = {"pretrained": "#1f77b4", "random": "#7f7f7f"}


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape) if shape else "-"


def block_name(block) -> str:
    """'stem', 'stage 3' (the group's index: what fine-tune K counts from the top), 'pooling' or 'head'."""
    if block.group is None:
        return block.kind
    return "stem" if block.group == 0 else f"stage {block.group}"


def state_words(view: StrategyView, index: int) -> str:
    """'trainable', 'frozen' or '-' (no parameters), with the BatchNorm statistics when the block has BatchNorm."""
    state = view.blocks[index]
    words = "-" if not state.params else "trainable" if state.trainable else "frozen"
    if state.bn in (BN_FROZEN, BN_UPDATING):
        words += f", BN {state.bn}"
    return words


def anatomy_frame(anatomy: Anatomy, views: Optional[dict[str, StrategyView]] = None) -> pd.DataFrame:
    """One row per block: kind, label, parameters, output shape, multiply-adds, and the state under each view."""
    views = anatomy.views if views is None else views
    rows = []
    for i, b in enumerate(anatomy.blocks):
        row = {"block": b.label, "kind": b.kind, "params": b.params, "output": _shape(b.output_shape),
               "MACs": b.macs}
        for key, view in views.items():
            row[view.label] = state_words(view, i)
        rows.append(row)
    return pd.DataFrame(rows)


def anatomy_text(anatomy: Anatomy, views: Optional[dict[str, StrategyView]] = None) -> str:
    """The stage table for a terminal, then each view's trainable/total parameters."""
    views = anatomy.views if views is None else views
    frame = anatomy_frame(anatomy, views)
    frame["params"] = frame["params"].map(_compact)
    frame["MACs"] = frame["MACs"].map(_compact)
    lines = [f"{anatomy.backbone} at {anatomy.image_size} px, {anatomy.num_classes} classes: "
             f"{_compact(anatomy.total_params)} parameters, {_compact(anatomy.total_macs)} multiply-adds an image, "
             f"{anatomy.num_stages} stage groups (stem included; fine-tune counts them from the top)", "",
             frame.to_string(index=False), ""]
    for view in views.values():
        lines.append(f"{view.label}: {view.trainable_params:,} of {view.total_params:,} parameters train")
    return "\n".join(lines)


def probe_text(result: ProbeResult) -> str:
    """The probe curve as a table with a bar per stage (pretrained val accuracy), then what it says."""
    frame = pd.DataFrame(probe_table(result))
    curve = result.curves.get("pretrained") or next(iter(result.curves.values()))
    bars = ["#" * int(round(p.val_accuracy * 40)) for p in curve.points]
    frame[f"{curve.weights} val"] = [f"{v:.3f} {b}" for v, b in zip(frame[f"{curve.weights} val"], bars)]
    lines = [f"Layer-wise probe: {result.dataset}, {result.per_class} a class ({result.images['train']} train, "
             f"{result.images['val']} val, {result.images['test']} test images), {result.image_size} px; "
             f"a linear head (L-BFGS, L2 picked on val) on every stage's pooled output", "",
             frame.to_string(index=False), "", result.statement()]
    for kind, c in result.curves.items():
        lines.append(f"{kind}: one pass {c.feature_seconds:.1f} s ({c.rows_computed} images computed, the rest "
                     f"cached), heads {c.head_seconds:.1f} s")
    return "\n".join(lines)


def anatomy_figure(anatomy: Anatomy, view: StrategyView) -> go.Figure:
    """The stack left to right, one box per block: orange trainable, grey-blue frozen; BatchNorm statistics marked
    under each box; parameters, output shape and multiply-adds in the hover."""
    fig = go.Figure()
    n = len(anatomy.blocks)
    xs, texts, hovers, colors = [], [], [], []
    for i, (block, state) in enumerate(zip(anatomy.blocks, view.blocks)):
        color = NEUTRAL_COLOR if not state.params else TRAINABLE_COLOR if state.trainable else FROZEN_COLOR
        fig.add_shape(type="rect", x0=i + 0.06, x1=i + 0.94, y0=0, y1=1, fillcolor=color, layer="below",
                      line=dict(color="#333", width=2 if state.trainable else 1))
        bn = {BN_UPDATING: "BN updating", BN_FROZEN: "BN frozen"}.get(state.bn, "")
        if bn:
            fig.add_shape(type="rect", x0=i + 0.06, x1=i + 0.94, y0=-0.22, y1=-0.04,
                          fillcolor="#d62728" if state.bn == BN_UPDATING else "#bcbddc", line=dict(width=0))
        xs.append(i + 0.5)
        texts.append(f"<b>{block_name(block)}</b><br>{block.label.split(' + ')[0]}<br>{_compact(block.params)}<br>"
                     f"{_shape(block.output_shape)}")
        hovers.append(f"{block.label} ({block.kind})<br>parameters {block.params:,}<br>output "
                      f"{_shape(block.output_shape)}<br>multiply-adds {block.macs:,}<br>"
                      f"{state_words(view, i)}")
        colors.append(color)
        if bn:
            fig.add_annotation(x=i + 0.5, y=-0.13, text=bn, showarrow=False, font=dict(size=9))
    fig.add_trace(go.Scatter(x=xs, y=[0.5] * n, mode="text", text=texts, hovertext=hovers, hoverinfo="text",
                             textfont=dict(size=10, color="#111"), showlegend=False))
    for name, color in (("trainable", TRAINABLE_COLOR), ("frozen", FROZEN_COLOR), ("no parameters", NEUTRAL_COLOR)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(size=12, symbol="square", color=color)))
    fig.update_layout(title=f"{anatomy.backbone} at {anatomy.image_size} px: {view.label} "
                      f"({view.trainable_params:,} of {view.total_params:,} parameters train)",
                      xaxis=dict(visible=False, range=[0, n]), yaxis=dict(visible=False, range=[-0.3, 1.05]),
                      height=260, margin=dict(l=10, r=10, t=50, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def probe_figure(result: ProbeResult) -> go.Figure:
    """Val (solid) and test (dotted) accuracy against depth, pretrained and random weights; the pretrained peak
    marked."""
    fig = go.Figure()
    for kind, curve in result.curves.items():
        labels = [f"{p.stage}: {p.label.split(' + ')[0]}" for p in curve.points]
        color = CURVE_COLORS.get(kind, "#2ca02c")
        fig.add_trace(go.Scatter(x=labels, y=[p.val_accuracy for p in curve.points], mode="lines+markers",
                                 name=f"{kind} val", line=dict(color=color)))
        fig.add_trace(go.Scatter(x=labels, y=[p.test_accuracy for p in curve.points], mode="lines+markers",
                                 name=f"{kind} test", line=dict(color=color, dash="dot")))
        if kind == "pretrained":
            peak = curve.peak
            fig.add_annotation(x=labels[peak.stage], y=peak.val_accuracy, text="peak (val)", showarrow=True,
                               arrowhead=2, ay=-30)
    fig.add_hline(y=1.0 / max(1, result.classes), line_dash="dash", line_color="#aaa", annotation_text="chance")
    fig.update_layout(title="Linear probe accuracy by depth", xaxis_title="stage (bottom to top)",
                      yaxis=dict(title="accuracy", range=ACCURACY_RANGE), height=380,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def activations_figure(image: np.ndarray, stages: list[StageActivations], view: Optional[StrategyView] = None,
                       title: str = "") -> go.Figure:
    """The sample image as the network sees it, then one column per stage (bottom to top, the diagram's order) with
    its strongest channels' maps, strongest on top; with `view`, each column title says frozen or trainable."""
    rows = max([len(s.channels) for s in stages] + [1])
    titles = ["input"]
    for s in stages:
        state = f" ({state_words(view, s.stage).split(',')[0]})" if view is not None else ""
        titles.append(f"{'stem' if s.stage == 0 else f'stage {s.stage}'}{state}")
    titles += [""] * ((rows - 1) * (len(stages) + 1))
    fig = make_subplots(rows=rows, cols=len(stages) + 1, subplot_titles=titles, horizontal_spacing=0.012,
                        vertical_spacing=0.06)
    fig.add_trace(go.Image(z=image, hoverinfo="skip"), row=1, col=1)
    for col, s in enumerate(stages, start=2):
        for row, ch in enumerate(s.channels, start=1):
            fig.add_trace(go.Heatmap(z=ch.values[::-1], zmin=0, zmax=1, colorscale="Inferno", showscale=False,
                                     hovertemplate=(f"{s.label}<br>channel {ch.channel} of {s.shape[0]}, mean "
                                                    f"{ch.strength:.3g}<br>{ch.values.shape[0]} x "
                                                    f"{ch.values.shape[1]} map<extra></extra>")),
                          row=row, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    for annotation in fig.layout.annotations:
        annotation.font.size = 10
    fig.update_layout(title=title or "What each stage sees: its strongest channels for this image",
                      height=120 + 110 * rows, margin=dict(l=10, r=10, t=70, b=10))
    return fig


def activations_text(stages: list[StageActivations]) -> str:
    """Per stage: the output shape and the strongest channels with their mean activation."""
    lines = []
    for s in stages:
        chans = ", ".join(f"#{c.channel} ({c.strength:.3g})" for c in s.channels) or "no spatial map"
        lines.append(f"stage {s.stage} {s.label}: output {_shape(s.shape)}; strongest channels {chans}")
    return "\n".join(lines)
