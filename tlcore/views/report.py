"""Self-contained HTML reports of a stored comparison, sweep or layer-wise probe: the same plotly figures as the dashboard (plotly.js
embedded once, so the file opens offline), the tables, the full config and the environment."""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from typing import Union

import pandas as pd

from tlcore.advice.probe import ProbeResult, probe_table
from tlcore.views import charts
from tlcore.views.anatomy import probe_figure
from tlcore.views.text import not_run_text
from tlcore.experiments.learning_curves import find_crossovers
from tlcore.core.results import ComparisonResult
from tlcore.experiments.sweep import SweepResult


def _pre(value) -> str:
    return f"<pre>{html.escape(json.dumps(value, indent=1, default=str))}</pre>"


def _table(frame: pd.DataFrame) -> str:
    """A table as HTML: missing values (a failed run's scores, a figure that does not apply) read '-', never NaN,
    None or <NA>."""
    frame = frame.astype(object).where(frame.notna(), charts.MISSING)
    return frame.to_html(index=False, na_rep=charts.MISSING,
                         formatters={c: _cell for c in frame.columns})


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else charts.MISSING
    if value is None:
        return charts.MISSING
    return str(value)


def report_html(result: Union[ComparisonResult, SweepResult], title: str = "") -> str:
    figures, tables, notes = [], [], []
    if isinstance(result, SweepResult):
        summary = result.summary()
        crossovers = find_crossovers(summary)
        notes = [c.statement for c in crossovers] + [n for n in (not_run_text(result.config),) if n]
        if not summary.empty:
            figures = [charts.learning_curves(summary, crossovers, result.cells_frame()), charts.time_vs_size(summary),
                       charts.accuracy_per_second(summary)]
            tables = [charts.sweep_table(summary)]
        kind = "Sweep"
    else:
        tables = [charts.summary_table(result)]
        if any(r.accuracy is not None for r in result.runs):
            figures = [charts.bars(result), charts.pareto(result), charts.curves(result.runs)]
        kind = "Comparison"
    intro = (f"<p>tlcore {kind.lower()} <code>{html.escape(result.record_id)}</code>, report made "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Every figure comes from the stored runs; the "
             "config below re-runs it with <code>python -m tlcore "
             f"{'sweep' if kind == 'Sweep' else 'compare'} --config</code>.</p>")
    extra = ["<h2>Dataset</h2>", _pre(result.dataset), "<h2>Config</h2>", _pre(result.config),
             "<h2>Environment</h2>", _pre(result.environment)]
    return _page(title or kind, intro, notes, tables, figures, extra)


def probe_report_html(result: ProbeResult, title: str = "") -> str:
    """A stored layer-wise probe: what it says, accuracy against depth, the per-stage table and the command that
    measures it again."""
    title = title or f"Layer-wise probe: {result.dataset}"
    intro = (f"<p>tlcore layer-wise probe <code>{html.escape(result.record_id or '(not stored)')}</code>, report made "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}: {html.escape(result.backbone)} "
             f"({html.escape(result.weights)}) at {result.image_size} px, {html.escape(result.per_class)} training "
             f"images a class ({result.images['train']} train, {result.images['val']} val, {result.images['test']} "
             f"test), seed {result.seed}. A linear head (L-BFGS, L2 picked on val) on every stage's pooled output; the "
             "last stage is the feature-extraction strategy.</p>"
             + (f"<p>Measure it again: <code>{html.escape(result.command)}</code></p>" if result.command else ""))
    timing = [f"{kind} weights: one pass {c.feature_seconds:.1f} s ({c.rows_computed} images computed, the rest "
              f"cached), heads {c.head_seconds:.1f} s" for kind, c in result.curves.items()]
    return _page(title, intro, [result.statement()] + timing, [pd.DataFrame(probe_table(result))],
                 [probe_figure(result)], ["<h2>Probe (JSON)</h2>", _pre(result.to_dict())])


def _page(title: str, intro: str, notes: list[str], tables: list[pd.DataFrame], figures: list, extra: list[str]) -> str:
    parts = []
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    body = "\n".join([f"<h1>{html.escape(title)}</h1>", intro] + [f"<p>{html.escape(n)}</p>" for n in notes]
                     + [_table(t) for t in tables] + parts + extra)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} · tlcore</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px}pre{background:#f6f6f6;padding:8px;overflow:auto}</style>"
            f"</head><body>{body}</body></html>")
