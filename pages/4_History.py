"""History page: every stored comparison, sweep, recommendation and layer-wise probe; filter, open (with the same
panels as when it ran), compare side by side, delete, import a bundle. `?run=<id>` opens one record read-only: the share link.
Layout only: the store, reports and bundles are tlcore's."""

import pandas as pd
import streamlit as st

from tlcore.advice.probe import probe_from_record
from tlcore.advice.recommend import recommendation_from_record
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.records.store import default_store
from tlcore.server.jobs import stored_snapshot
from tlcore.views import charts
from tlcore.views.text import dataset_display, run_size_text
from ui.navigation import through_app
from ui.results import ANATOMY_PAGE, page_link_to, probe_results, show_card, show_record
from ui.widgets import job_queue

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="History · tlcore", page_icon="🗂️", layout="wide")


store = default_store()
shared = st.query_params.get("run")
if shared:
    snap = job_queue().get(shared) if shared in {j["id"] for j in job_queue().active()} else stored_snapshot(
        shared, store)
    record = store.record(shared)
    if record is None:
        st.error(f"No stored run '{shared}' here. The link may come from another tlcore instance: import its results "
                 "bundle on this page.")
    elif record["kind"] == "recommendation":
        st.title(f"Recommendation {shared}")
        rec = recommendation_from_record(record)
        st.caption(f"{dataset_display(record['dataset'])} · {record['backbone']} · stored "
                   f"{pd.Timestamp(record['created_at'], unit='s'):%Y-%m-%d %H:%M} UTC · read-only view")
        show_card(rec)
        st.markdown("\n".join(f"- {r.text()}" for r in rec.reasons))
        st.dataframe(pd.DataFrame([{"strategy": o.strategy, "accuracy from": o.accuracy_low, "to": o.accuracy_high,
                                    "training s": o.seconds, "basis": o.basis} for o in rec.outlooks]),
                     hide_index=True, key="hist_rec_outlook")
        with st.expander("Signals and config"):
            st.json({"signals": rec.signals.to_dict(), "config": record["config"]})
    elif record["kind"] == "probe":
        probe = probe_from_record(record)
        st.title(f"Layer-wise probe {shared}")
        st.caption(f"{dataset_display(record['dataset'])} · {record['backbone']} at {probe.image_size} px · stored "
                   f"{pd.Timestamp(record['created_at'], unit='s'):%Y-%m-%d %H:%M} UTC · read-only view")
        probe_results(probe, f"hist_{shared}")
        page_link_to(ANATOMY_PAGE, "Open in Anatomy: the diagram of this backbone with this probe", "🩻",
                     {"backbone": probe.backbone, "image_size": str(probe.image_size), "classes": str(probe.classes),
                      "probe": shared})
    else:
        st.title(f"{record['kind'].capitalize()} {shared}: {record['status']}")
        st.caption(f"{record['label'] or dataset_display(record['dataset'])} · {record['backbone']} · stored "
                   f"{pd.Timestamp(record['created_at'], unit='s'):%Y-%m-%d %H:%M} UTC · read-only view")
        show_record(snap, job_queue(), f"shared_{shared}")
    if st.button("All stored runs", key="hist_back"):
        del st.query_params["run"]
        st.rerun()
    st.stop()

st.title("History")
st.caption("Everything run here is stored as it finishes (SQLite under the data directory) and survives restarts. "
           + ("This instance is read-only: browse, open and export." if read_only() else ""))

records = store.records()
if not records:
    st.info("Nothing stored yet. Run a comparison or a sweep, or import a results bundle below.")
frame = pd.DataFrame([{"id": r["id"], "kind": r["kind"], "status": r["status"], "dataset": dataset_display(r["dataset"]),
                       "backbone": r["backbone"], "strategies": r["strategies"] or "", "runs": r["runs_count"],
                       "label": r["label"], "created": pd.Timestamp(r["created_at"], unit="s")} for r in records],
                     columns=["id", "kind", "status", "dataset", "backbone", "strategies", "runs", "label", "created"])

with st.expander("Filter", expanded=False):
    c1, c2, c3 = st.columns(3)
    kinds = c1.multiselect("Kind", sorted(frame["kind"].unique()), key="hist_kind")
    statuses = c1.multiselect("Status", sorted(frame["status"].unique()), key="hist_status")
    datasets = c2.multiselect("Dataset", sorted(frame["dataset"].unique()), key="hist_dataset")
    backbones = c2.multiselect("Backbone", sorted(frame["backbone"].unique()), key="hist_backbone")
    strategy = c3.selectbox("Strategy", ["any", "feature-extraction", "fine-tune", "scratch"], key="hist_strategy")
    since = c3.date_input("Since", value=None, key="hist_since")
shown = frame
for column, chosen in (("kind", kinds), ("status", statuses), ("dataset", datasets), ("backbone", backbones)):
    if chosen:
        shown = shown[shown[column].isin(chosen)]
if strategy != "any":
    shown = shown[shown["strategies"].str.contains(strategy, regex=False)]
if since:
    shown = shown[shown["created"] >= pd.Timestamp(since)]

selection = st.dataframe(shown, hide_index=True, key="hist_table", on_select="rerun", selection_mode="multi-row",
                         column_config={"created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})
rows = selection.selection.rows if selection else []
picked = shown.iloc[rows]["id"].tolist() if len(rows) else []
st.caption(f"{len(shown)} of {len(frame)} records. Select rows to open or compare them"
           + (" (read-only: nothing can be deleted or imported here)." if read_only() else ", or to delete them."))

if picked:
    c1, c2, c3 = st.columns(3)
    if c1.button(f"Open {picked[0]}", key="hist_open"):
        st.query_params["run"] = picked[0]
        st.rerun()
    if len(picked) >= 2 and c2.toggle("Compare the selected side by side", key="hist_compare"):
        runs = []
        for record_id in picked:
            snap = stored_snapshot(record_id, store)
            for run in (snap["runs"] if snap else []):
                row = run.to_row()
                row.update({"record": record_id, "dataset": dataset_display((run.dataset or {}).get("source", "")),
                            "images a class": run_size_text(run)})
                runs.append(row)
        if runs:
            side = pd.DataFrame(runs)
            st.dataframe(side[["record", "dataset", "images a class", "strategy", "status", "accuracy", "accuracy_low",
                               "accuracy_high", "train_seconds", "trainable_params", "seed"]], hide_index=True,
                         key="hist_side")
            st.plotly_chart(charts.side_by_side(side), key="hist_side_chart")
    if not read_only():
        confirm = c3.checkbox(f"Yes, delete {len(picked)} record(s) and their runs", key="hist_confirm")
        if c3.button("Delete", key="hist_delete", disabled=not confirm):
            active = {j["id"] for j in job_queue().active()}
            for record_id in picked:
                if record_id in active:
                    st.error(f"{record_id} is still running: cancel it first.")
                    continue
                store.delete_record(record_id)
            st.rerun()

if not read_only():
    with st.expander("Import a results bundle (.zip exported by another tlcore)"):
        bundle = st.file_uploader("Results bundle", type=["zip"], key="hist_bundle")
        if bundle is not None and st.button("Import", key="hist_import"):
            try:
                imported = store.import_bundle(bundle.getvalue())
                st.success(f"Imported {len(imported)} record(s): {', '.join(imported) or 'none new'}.")
            except TlcoreError as exc:
                st.error(str(exc))
