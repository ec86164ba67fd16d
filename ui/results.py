"""Showing a job or a stored record: the same panels on the Compare, Sweep and History pages and behind share links.
Layout only; results, figures, reports and bundles come from tlcore."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from tlcore.advice.probe import ProbeResult, probe_table
from tlcore.advice.rules import Recommendation
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.experiments.config import ExperimentConfig, SweepConfig
from tlcore.experiments.learning_curves import find_crossovers, summarize
from tlcore.records.store import default_store
from tlcore.server.jobs import ACTIVE
from tlcore.views import charts
from tlcore.views.anatomy import probe_figure
from tlcore.views.report import probe_report_html, report_html
from tlcore.views.text import (comparison_headline, dataset_display, deploy_verdict, not_run_text, overlap_text,
                               progress_line, run_notes, skipped_text, sweep_headline)
from ui.navigation import icon_of
from ui.try_it import try_it
from ui.widgets import show_error, submit_once


@st.cache_data(show_spinner="Loading test images...", max_entries=8)
def _gallery(_result, record_id: str, strategy: str, limit: int):
    return charts.gallery(_result, _result.run(strategy), limit)


def show_card(rec: Recommendation) -> None:
    """The recommendation, runner-up and confidence in full (markdown wraps; st.metric cut long labels off)."""
    st.markdown(f"#### Recommended: {rec.choice.label}\n\n"
                f"**Runner-up:** {rec.runner_up.label}  \n"
                f"**Confidence:** {rec.confidence} ({rec.confidence_score:.2f})",
                help="Confidence: distance of the data from the rules' thresholds; measured evidence on this data "
                     "raises it.")


def progress_bars(snap: dict, names: list[str]) -> None:
    """A bar per entry in flight (shared features, each strategy or sweep cell), then each `names` not started."""
    waiting = "loading data and backbone" if snap["status"] == "running" and not snap["progress"] else "waiting"
    for name in list(snap["progress"]) + [n for n in names if n not in snap["progress"]]:
        event = snap["progress"].get(name)
        st.progress(min(1.0, event["fraction"]) if event else 0.0, text=progress_line(name, event, waiting))


def status_banner(snap: dict, queue) -> None:
    """Cancelled, failed or interrupted: say so, keep what finished, offer a re-run of an interrupted job."""
    status, error = snap["status"], snap["error"]
    what = "sweep" if snap["kind"] == "sweep" else "comparison"
    if status == "cancelled":
        st.warning(" ".join(filter(None, [f"This {what} was cancelled.", error and error.rstrip(".") + ".",
                                          "What finished is kept below."])))
    elif status == "interrupted":
        st.warning(f"This {what} was interrupted: {error or 'its process stopped'}. What finished is kept below.")
        if not read_only() and st.button("Re-run it", key=f"rerun_{snap['id']}", type="primary"):
            record = snap.get("record") or {}
            config = (SweepConfig.from_dict(record["config"]) if snap["kind"] == "sweep" else
                      ExperimentConfig.from_dict(record["config"]))
            try:
                new_id = submit_once(queue, config, f"re-run of {snap['id']}", f"rerun_{snap['id']}")
            except TlcoreError as exc:  # a full queue: said, the interrupted record stays as it is
                show_error(exc)
            else:
                st.query_params[("sweep" if snap["kind"] == "sweep" else "job")] = new_id
                st.rerun()
    elif status == "failed":
        show_error(f"This {what} failed: {error}")
    elif error:
        show_error(error)


def record_subtitle(record: dict) -> str:
    """A stored record's subtitle: its label (which names the backbone for a job) or its dataset, the backbone
    unless the label already says it, and when it was stored."""
    what = record.get("label") or dataset_display(record.get("dataset", ""))
    backbone = record.get("backbone") or ""
    parts = [what] + ([backbone] if backbone and backbone not in what else [])
    stored = pd.Timestamp(record["created_at"], unit="s")
    return " · ".join(p for p in parts if p) + f" · stored {stored:%Y-%m-%d %H:%M} UTC · read-only view"


def share_and_export(snap: dict, key: str) -> None:
    result = snap["result"]
    record_id = snap["id"]
    st.caption(f"Share: add `?run={record_id}` to this dashboard's address (any page) to open it read-only.")
    c1, c2, c3 = st.columns(3)
    c1.download_button("HTML report", report_html(result, snap.get("label") or record_id),
                       f"tlcore-{record_id}.html", "text/html", key=f"html_{key}")
    c2.download_button("Results bundle (.zip)", _bundle(record_id), f"tlcore-{record_id}.zip", "application/zip",
                       key=f"bundle_{key}", help="JSON + CSV; another tlcore imports it on the History page")
    c3.download_button("JSON", json.dumps(result.to_dict(), indent=1, default=str), f"tlcore-{record_id}.json",
                       "application/json", key=f"json_{key}")


ANATOMY_PAGE = "pages/5_Anatomy.py"


def anatomy_link(result, key: str) -> None:
    """The comparison's backbone on the Anatomy page, at the image size it ran at, with its fine-tune depth."""
    runs = [r for r in result.runs if r.backbone]
    if not runs:
        return
    ft = next((r for r in runs if r.kind == "fine-tune"), None)
    params = {"backbone": runs[0].backbone, "classes": str(len((result.dataset or {}).get("classes", [])) or 10),
              "strategy": "fine-tune" if ft else runs[0].kind}
    if any(r.image_size for r in runs):
        params["image_size"] = str(next(r.image_size for r in runs if r.image_size))
    if ft is not None:
        params["stages"] = str(ft.options.get("stages", 2))
    page_link_to(ANATOMY_PAGE, "Open this backbone in Anatomy: what each strategy froze, stage by stage", None, params)


def page_link_to(page: str, label: str, icon: str | None, params: dict[str, str]) -> None:
    """A link to another page with query parameters, with the page's own icon (ui.navigation: Material icons, which
    every browser draws; `icon` only for a page that has none). A page script run on its own (no st.navigation: a
    test harness, or a deep link before app.py ran) cannot name other pages: then a plain link to the same
    address."""
    from streamlit.errors import StreamlitPageNotFoundError
    from urllib.parse import urlencode

    icon = icon_of(page) or icon
    try:
        st.page_link(page, label=label, icon=icon, query_params=params)
    except StreamlitPageNotFoundError:
        url = page.rsplit("/", 1)[-1].removesuffix(".py").split("_", 1)[-1]
        st.markdown(f"{icon or ''} [{label}]({url}?{urlencode(params)})")


def probe_results(result: ProbeResult, key: str) -> None:
    """A layer-wise probe: what it says, accuracy against depth, the table, the report and the way to re-run it."""
    st.markdown(result.statement())
    st.plotly_chart(probe_figure(result), key=f"probe_chart_{key}")
    st.dataframe(pd.DataFrame(probe_table(result)), hide_index=True, key=f"probe_table_{key}")
    if result.command:
        st.caption(f"Measure it again: `{result.command}`")
    if result.record_id:
        st.caption(f"Stored as probe `{result.record_id}`. Share: add `?run={result.record_id}` to this dashboard's "
                   "address to open it read-only.")
    c1, c2 = st.columns(2)
    c1.download_button("HTML report", probe_report_html(result), f"tlcore-probe-{result.record_id or 'unsaved'}.html",
                       "text/html", key=f"probe_html_{key}")
    c2.download_button("JSON", json.dumps(result.to_dict(), indent=1), f"tlcore-probe-{result.record_id or 'unsaved'}"
                       ".json", "application/json", key=f"probe_json_{key}")


def _bundle(record_id: str) -> bytes:
    return default_store().export_bundle([record_id])


def comparison_results(snap: dict, key: str) -> None:
    result = snap["result"]
    if result is None:
        return
    st.subheader("Results")
    ds = result.dataset
    if ds:
        st.caption(comparison_headline(result))
        for warning in (overlap_text(ds), skipped_text(ds), *ds.get("notes", [])[:3]):
            if warning:
                st.warning(warning)
    st.dataframe(charts.summary_table(result), hide_index=True, key=f"table_{key}",
                 column_config={"accuracy": st.column_config.NumberColumn(format="%.3f"),
                                "macro-F1": st.column_config.NumberColumn(format="%.3f"),
                                "train s": st.column_config.NumberColumn(
                                    format="%.1f", help="training time, seconds: what the strategy costs on its own, "
                                                        "work shared with another strategy included (see note)"),
                                "img/s": st.column_config.NumberColumn(format="%.0f", help="inference throughput"),
                                "peak MB": st.column_config.NumberColumn(format="%.0f", help="peak memory"),
                                "trainable": st.column_config.TextColumn(
                                    help="trainable parameters (exact counts in the CSV)"),
                                "epochs": st.column_config.TextColumn(
                                    help="epochs run (of those planned, when it stopped early) and the epoch kept; "
                                         "best 0: no epoch beat the start"),
                                "note": st.column_config.TextColumn(width="large")})
    notes = [f"- **{r.strategy}**: {note}" for r in result.runs for note in run_notes(r) if note != r.error]
    if notes:  # the table's note column in full: a cell shows only its start
        st.caption("\n".join(notes))
    verdict = deploy_verdict(result)
    if verdict:
        st.success(verdict, icon=":material/rocket_launch:")
    if not any(r.accuracy is not None for r in result.runs):
        return
    st.plotly_chart(charts.bars(result), key=f"bars_{key}")
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.pareto(result), key=f"pareto_{key}")
    c2.plotly_chart(charts.curves(result.runs), key=f"curves_{key}")
    done = [r.strategy for r in result.runs if r.accuracy is not None]
    chosen = st.selectbox("Inspect a strategy", done, key=f"inspect_{key}")
    run = result.run(chosen)
    if ds:
        c3, c4 = st.columns(2)
        c3.plotly_chart(charts.confusion(run, ds["classes"]), key=f"cm_{key}_{chosen}")
        c4.plotly_chart(charts.per_class(run), key=f"pc_{key}_{chosen}")
        if st.toggle("Show test images (mistakes first)", key=f"gallery_{key}"):
            try:
                items = _gallery(result, snap["id"], chosen, 24)
            except TlcoreError as exc:
                st.info(f"Test images are not available here: {exc}")
                items = []
            cols = st.columns(8)
            for i, item in enumerate(items):
                cols[i % 8].image(item["image"], caption=charts.gallery_caption(item), width="stretch")
    try_it(result, key)
    anatomy_link(result, key)
    st.download_button("Download CSV", result.to_frame().to_csv(index=False), f"tlcore-{snap['id']}.csv",
                       "text/csv", key=f"csv_{key}")
    share_and_export(snap, key)
    st.caption(f"Reproduce: `python -m tlcore compare --config tlcore-{snap['id']}.json` (the JSON download); "
               f"runs: {', '.join(r.run_id for r in result.runs)}.")


def sweep_figures(frame: pd.DataFrame, key: str) -> None:
    summary = summarize(frame)
    if summary.empty:
        return
    crossovers = find_crossovers(summary)
    for c in crossovers:
        st.info(c.statement)
    st.plotly_chart(charts.learning_curves(summary, crossovers, frame), key=f"lc_{key}")
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.time_vs_size(summary), key=f"time_{key}")
    c2.plotly_chart(charts.accuracy_per_second(summary), key=f"aps_{key}")
    st.dataframe(charts.sweep_table(summary), hide_index=True, key=f"table_{key}",
                 column_config={"accuracy": st.column_config.NumberColumn(format="%.3f"),
                                "train s": st.column_config.NumberColumn(format="%.1f"),
                                "accuracy per train s": st.column_config.NumberColumn(format="%.4f"),
                                "still improving (share)": st.column_config.NumberColumn(format="%.2f")})
    improving = summary[summary["undertrained_share"] > 0]
    if not improving.empty:
        st.caption("Still improving at the last epoch (a longer schedule may score higher): " + ", ".join(
            f"{r.strategy} at {r.size}/class" for r in improving.itertuples()) + ".")


def sweep_results(snap: dict, key: str) -> None:
    result = snap["result"]
    if result is None:
        return
    st.subheader("Results")
    st.caption(sweep_headline(result))
    not_run = not_run_text(result.config)
    if not_run:
        st.caption(not_run)
    frame = result.cells_frame()
    if frame.empty:
        return
    sweep_figures(frame, key)
    d1, d2 = st.columns(2)
    d1.download_button("Download summary CSV", result.summary().to_csv(index=False), f"sweep-{snap['id']}-summary.csv",
                       "text/csv", key=f"sw_sum_{key}")
    d2.download_button("Download cells CSV", frame.to_csv(index=False), f"sweep-{snap['id']}-cells.csv", "text/csv",
                       key=f"sw_cells_{key}")
    share_and_export(snap, key)
    st.caption(f"Reproduce: `python -m tlcore sweep --config tlcore-{snap['id']}.json` (the JSON download); cells "
               "already in your store are not recomputed.")


def show_record(snap: dict, queue, key: str) -> None:
    status_banner(snap, queue)
    if snap["kind"] == "sweep":
        sweep_results(snap, key)
    else:
        comparison_results(snap, key)


def show_job(job_id: str, queue, live_panel) -> None:
    """A job's page: the live panel while it is queued or running, then the stored record."""
    snapshot = queue.get(job_id)
    if snapshot is None:
        st.warning(f"No job or stored run '{job_id}' here. Check the link, or open the History page.")
    elif snapshot["status"] in ACTIVE:
        live_panel(job_id)
    else:
        show_record(snapshot, queue, job_id)
