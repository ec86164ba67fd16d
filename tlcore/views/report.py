"""Self-contained HTML reports of a stored comparison or sweep: the same plotly figures as the dashboard (plotly.js
embedded once, so the file opens offline), the tables, the full config and the environment."""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from typing import Union

import pandas as pd

from tlcore.views import charts
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
        notes = [c.statement for c in crossovers]
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
    parts = []
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    body = "\n".join(
        [f"<h1>{html.escape(title or kind)}</h1>",
         f"<p>tlcore {kind.lower()} <code>{html.escape(result.record_id)}</code>, report made "
         f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Every figure comes from the stored runs; the "
         "config below re-runs it with <code>python -m tlcore "
         f"{'sweep' if kind == 'Sweep' else 'compare'} --config</code>.</p>"]
        + [f"<p>{html.escape(n)}</p>" for n in notes]
        + [_table(t) for t in tables] + parts
        + ["<h2>Dataset</h2>", _pre(result.dataset), "<h2>Config</h2>", _pre(result.config),
           "<h2>Environment</h2>", _pre(result.environment)])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title or kind)} · tlcore</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px}pre{background:#f6f6f6;padding:8px;overflow:auto}</style>"
            f"</head><body>{body}</body></html>")
