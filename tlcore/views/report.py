"""Self-contained HTML reports of a stored comparison, sweep, layer-wise probe or recommendation: the same plotly
figures as the dashboard (plotly.js embedded once, so the file opens offline), the tables, the full config and the
environment."""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime, timezone
from typing import Union

import pandas as pd

from tlcore.advice.candidates import Ranking
from tlcore.advice.health import HealthReport, suggested_fixes
from tlcore.advice.probe import ProbeResult, probe_table
from tlcore.advice.rules import Recommendation
from tlcore.views import charts
from tlcore.views.anatomy import probe_figure
from tlcore.views.backbones import backbones_figure, ranking_figure, ranking_frame
from tlcore.views.health import checked_dataset, gallery, issue_counts
from tlcore.views.text import dataset_display, not_run_text, outlook_seconds, recommendation_report
from tlcore.experiments.learning_curves import find_crossovers
from tlcore.core.results import ComparisonResult
from tlcore.experiments.backbones import BackbonesResult
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
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Every figure comes from the stored runs; "
             "the "
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


def outlook_frame(rec: Recommendation) -> pd.DataFrame:
    """One row per strategy: what to expect of it (accuracy range, training seconds, on what basis), the recommended
    one first."""
    rows = [{"strategy": o.strategy, "kind": o.kind, "recommended": o.strategy == rec.choice.label,
             "accuracy_low": o.accuracy_low, "accuracy_high": o.accuracy_high, "train_seconds": o.seconds,
             "train_seconds_range": outlook_seconds(o), "basis": o.basis} for o in rec.outlooks]
    frame = pd.DataFrame(rows, columns=["strategy", "kind", "recommended", "accuracy_low", "accuracy_high",
                                        "train_seconds", "train_seconds_range", "basis"])
    return frame.sort_values("recommended", ascending=False, kind="stable").reset_index(drop=True)


def recommendation_report_html(rec: Recommendation, title: str = "") -> str:
    """A recommendation: what it recommends and why, what to expect of each strategy, and the measured signals."""
    title = title or f"Recommendation: {rec.signals.dataset}"
    intro = (f"<p>tlcore recommendation <code>{html.escape(rec.record_id or '(not stored)')}</code>, report made "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Measure it again: <code>python -m tlcore "
             f"recommend --dataset {html.escape(rec.signals.dataset)}</code>.</p>")
    verdict = (f"Recommended: {rec.choice.label} (runner-up: {rec.runner_up.label}; confidence {rec.confidence}; "
               f"based on {rec.based_on}).")
    notes = [verdict] + [r.text() for r in rec.reasons]
    extra = ["<h2>Report</h2>", f"<pre>{html.escape(recommendation_report(rec))}</pre>",
             "<h2>Recommendation (JSON)</h2>", _pre(rec.to_dict())]
    return _page(title, intro, notes, [outlook_frame(rec)], [], extra)


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


def ranking_report_html(ranking: Ranking, title: str = "") -> str:
    """A stored ranking: the answer, predicted accuracy against cost, the table, and the command that ranks again."""
    title = title or f"Backbone ranking: {ranking.dataset}"
    intro = (f"<p>tlcore ranking <code>{html.escape(ranking.record_id or '(not stored)')}</code>, report made "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}: {ranking.train_images} training and "
             f"{ranking.val_images} val images of {ranking.classes} classes, seed {ranking.seed}, on "
             f"{html.escape(ranking.device)} ({html.escape(ranking.host)}). Predicted accuracy: the feature-extraction "
             "head's val accuracy on cached frozen features, the number a comparison's feature extraction reports. "
             f"Rank again: <code>python -m tlcore backbones --dataset {html.escape(ranking.dataset)} --per-class "
             f"{ranking.per_class or 'all'} --seed {ranking.seed}</code>.</p>")
    return _page(title, intro, [ranking.statement, ranking.timing_text()], [ranking_frame(ranking)],
                 [ranking_figure(ranking)], ["<h2>Ranking (JSON)</h2>", _pre(ranking.to_dict())])


def backbones_report_html(result: BackbonesResult, title: str = "") -> str:
    """A multi-backbone comparison: every run side by side and test accuracy against time per image."""
    exp = result.config.experiment
    title = title or f"Backbones side by side: {exp.dataset.source}"
    intro = (f"<p>tlcore multi-backbone comparison <code>{html.escape(result.record_id or '(not stored)')}</code>"
             + (f", confirming ranking <code>{html.escape(result.config.ranking)}</code>" if result.config.ranking
                else "") + f", report made {datetime.now(timezone.utc).isoformat(timespec='seconds')}. Each "
             "candidate's comparison is stored on its own: "
             + ", ".join(f"{html.escape(m.candidate.label)} <code>{html.escape(m.record_id)}</code>"
                         for m in result.members if m.record_id) + ".</p>")
    frame = result.to_frame().drop(columns=["record"])
    return _page(title, intro, [result.statement()], [frame], [backbones_figure(result)],
                 ["<h2>Config (JSON)</h2>", _pre(result.config.to_dict())])


def _gallery_html(items: list[dict], kind: str) -> str:
    cards = []
    for item in items:
        picture = (f"<img src='data:image/png;base64,{base64.b64encode(item['picture']).decode()}' width='72'>"
                   if item["picture"] else "")
        label = (f"<b>{html.escape(item['given'])}</b> &rarr; {html.escape(item['suggested'])}<br>p(given) "
                 f"{item['confidence']:.3f}" if kind in ("label issues", "label doubts") else
                 f"<b>{html.escape(item['given'])}</b><br>score {item['score']:.3f}")
        cards.append(f"<div style='display:inline-block;width:130px;margin:4px;vertical-align:top'>{picture}<br>"
                     f"{label}<br><small>{html.escape(item['name'])} · {item['split']}</small></div>")
    return "<div>" + "".join(cards) + "</div>"


def health_report_html(report: HealthReport, title: str = "", limit: int = 100) -> str:
    """A stored health check: counts per issue type, the flagged images as pictures beside their labels (where the
    data can be read back), the suggested fixes and the command that checks again."""
    shown = dataset_display(report.dataset)  # never the server's path
    title = title or f"Data health: {shown}"
    intro = (f"<p>tlcore health check <code>{html.escape(report.record_id or '(not stored)')}</code>, report made "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}: {sum(report.checked_images.values())} "
             f"images, {html.escape(report.backbone)} at {report.image_size} px, {report.folds}-fold out-of-fold "
             f"probabilities of the feature-extraction head and the nearest images' labels, cleanlab's "
             f"find_label_issues and OutOfDistribution, "
             f"seed {report.seed}. Check again: <code>python -m tlcore health --dataset "
             f"{html.escape(shown)} --per-class {report.per_class or 'all'} --seed {report.seed} --fixes "
             "fixes.csv</code>.</p>")
    dataset = checked_dataset(report)
    extra = [f"<h2>Likely label errors ({len(report.label_issues)}, the first {limit})</h2>",
             _gallery_html(gallery(report, dataset, limit=limit), "label issues"),
             f"<h2>Labels worth a look ({len(report.label_doubts)}, the first {limit}): one of the head and the "
             "nearest images rejects the label</h2>",
             _gallery_html(gallery(report, dataset, "label doubts", limit=limit), "label doubts"),
             f"<h2>Most atypical images ({len(report.outliers)})</h2>",
             _gallery_html(gallery(report, dataset, "outliers", limit=limit), "outliers"),
             "<h2>Suggested fixes (exclude the listed training and val images, likely errors and those worth a "
             "look; keep those in test)</h2>", _table(suggested_fixes(report)),
             "<h2>Report (JSON)</h2>", _pre(report.to_dict())]
    return _page(title, intro, [], [issue_counts(report)], [], extra)
