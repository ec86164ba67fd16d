"""History page: every stored comparison, sweep, recommendation and layer-wise probe; filter, open (with the same
panels as when it ran), compare side by side, delete to a trash and restore, import a bundle. `?run=<id>` opens one
record read-only: the share link.
Layout only: the store, reports and bundles are tlcore's."""

import ui.preload  # noqa: F401  first: a deep link on a fresh server runs this page before app.py
import pandas as pd
import streamlit as st

from tlcore.advice.candidates import ranking_from_record
from tlcore.advice.health import health_from_record
from tlcore.advice.probe import probe_from_record
from tlcore.advice.records import recommendation_from_record
from tlcore.core.environment import read_only
from tlcore.experiments.backbones import load_backbones
from tlcore.core.errors import TlcoreError
from tlcore.records.store import default_store, trash_days
from tlcore.server.jobs import stored_snapshot
from tlcore.views.side_by_side import probes_figure, recommendations_frame, runs_figure, side_by_side
from tlcore.views.text import dataset_display, record_text
from ui.backbones import BACKBONES_PAGE, backbones_results, ranking_results
from ui.health import DATA_PAGE, health_summary
from ui.navigation import through_app
from ui.results import ANATOMY_PAGE, page_link_to, probe_results, record_subtitle, show_card, show_record
from ui.widgets import job_queue, show_error

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="History · tlcore", page_icon=":material/history:", layout="wide")


store = default_store()
shared = st.query_params.get("run")
if shared:
    snap = job_queue().get(shared) if shared in {j["id"] for j in job_queue().active()} else stored_snapshot(
        shared, store)
    record = store.record(shared)
    if record is None and store.record(shared, trashed=True) is not None:
        st.warning(f"Record {shared} was deleted and is in the trash: restore it from the trash at the bottom of "
                   "the History page to open it again.")
    elif record is None:
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
        page_link_to(ANATOMY_PAGE, "Open in Anatomy: the diagram of this backbone with this probe", None,
                     {"backbone": probe.backbone, "image_size": str(probe.image_size), "classes": str(probe.classes),
                      "probe": shared})
    elif record["kind"] == "ranking" and record.get("summary"):  # candidates ranked without training
        ranking = ranking_from_record(record)
        st.title(f"Backbone ranking {shared}")
        st.caption(f"{dataset_display(record['dataset'])} · {len(ranking.candidates)} candidates · stored "
                   f"{pd.Timestamp(record['created_at'], unit='s'):%Y-%m-%d %H:%M} UTC · read-only view")
        ranking_results(ranking, "hist_ranking")
        page_link_to(BACKBONES_PAGE, "Open on the Backbones page (to confirm the top candidates)", None,
                     {"ranking": shared})
    elif record["kind"] == "health" and record.get("summary"):  # `tlcore health`: likely label errors, outliers
        health = health_from_record(record)
        st.title(f"Data health {shared}")
        st.caption(f"{dataset_display(record['dataset'])} · {health.backbone} at {health.image_size} px · stored "
                   f"{pd.Timestamp(record['created_at'], unit='s'):%Y-%m-%d %H:%M} UTC · read-only view")
        st.markdown(f"**{len(health.label_issues)} likely label errors** in {sum(health.checked_images.values())} "
                    f"images ({', '.join(f'{n} {s}' for s, n in health.checked_images.items())}), from "
                    f"{health.folds}-fold out-of-fold probabilities of the feature-extraction head and the nearest "
                    f"images' labels (cleanlab); {len(health.label_doubts)} more worth a look.")
        health_summary(health)
        st.dataframe(health.frame("label issues"), hide_index=True, key="hist_health_labels")
        if health.label_doubts:
            st.markdown("**Labels worth a look** (one of the two rejects the label)")
            st.dataframe(health.frame("label doubts"), hide_index=True, key="hist_health_doubts")
        st.markdown(f"**The {len(health.outliers)} most atypical images** (lowest cleanlab outlier scores)")
        st.dataframe(health.frame("outliers"), hide_index=True, key="hist_health_outliers")
        page_link_to(DATA_PAGE, "Open on the Data page: the flagged images as pictures, to exclude or relabel them "
                     "and compare before and after", None, {"health": shared})
    elif record["kind"] == "backbones":  # a comparison (or sweep) run for several backbones
        result = load_backbones(shared, store)
        st.title(f"Backbones side by side {shared}: {record['status']}")
        st.caption(f"{dataset_display(record['dataset'])} · {len(result.members)} backbones · stored "
                   f"{pd.Timestamp(record['created_at'], unit='s'):%Y-%m-%d %H:%M} UTC · read-only view")
        ranked = store.record(result.config.ranking) if result.config.ranking else None
        backbones_results(result, ranking_from_record(ranked) if ranked and ranked.get("summary") else None,
                          "hist_backbones")
    else:
        st.title(f"{record['kind'].capitalize()} {shared}: {record['status']}")
        st.caption(record_subtitle(record))
        show_record(snap, job_queue(), f"shared_{shared}")
    if st.button("All stored runs", key="hist_back"):
        del st.query_params["run"]
        st.rerun()
    st.stop()

st.title("History")
st.caption("Everything run here is stored as it finishes (SQLite under the data directory) and survives restarts. "
           + ("This instance is read-only: browse, open and export." if read_only() else ""))

records = store.records()
by_id = {r["id"]: r for r in records}
generation = st.session_state.setdefault("hist_generation", 0)  # in widget keys: a new one clears the selection


def delete(record_ids: tuple[str, ...]) -> None:
    """The Delete button's callback: exactly the ids ticked when the button was drawn, each moved to the trash once
    (a second click finds them gone and changes nothing). Then a new table and confirmation: nothing selected."""
    active = {j["id"] for j in job_queue().active()}
    deleted, running = [], [i for i in record_ids if i in active]
    for record_id in record_ids:
        record = by_id.get(record_id)
        if record_id not in running and record is not None and store.delete_record(record_id):
            deleted.append(record)
    if deleted or running:
        st.session_state["hist_done"] = {"deleted": [r["id"] for r in deleted],
                                         "text": [record_text(r) for r in deleted], "running": running}
        st.session_state["hist_generation"] = generation + 1


def restore(record_ids: tuple[str, ...]) -> None:
    restored = [i for i in record_ids if store.restore_record(i)]
    if restored:
        st.session_state["hist_done"] = {"restored": restored}
        st.session_state["hist_generation"] = generation + 1


done = st.session_state.get("hist_done") or {}
if done.get("deleted"):
    st.success(f"Deleted {'; '.join(done['text'])}. Kept in the trash for {trash_days():g} days (below), with "
               "its saved models.")
    st.button("Undo", key=f"hist_undo_{generation}", on_click=restore, args=(tuple(done["deleted"]),))
if done.get("restored"):
    st.success(f"Restored {', '.join(done['restored'])} from the trash.")
for record_id in done.get("running", []):
    st.error(f"{record_id} is still running: cancel it first, then delete it.")

if not records:
    st.info("Nothing stored yet. Run a comparison or a sweep, or import a results bundle below.")
frame = pd.DataFrame([{"id": r["id"], "kind": r["kind"], "status": r["status"],
                       "dataset": dataset_display(r["dataset"]), "backbone": r["backbone"],
                       "strategies": r["strategies"] or "", "runs": r["runs_count"],
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

selection = st.dataframe(shown, hide_index=True, key=f"hist_table_{generation}", on_select="rerun",
                         selection_mode="multi-row",
                         column_config={"created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})
rows = [r for r in (selection.selection.rows if selection else []) if r < len(shown)]  # a filter can shrink the table
picked = shown.iloc[rows]["id"].tolist()
st.caption(f"{len(shown)} of {len(frame)} records. Select rows to open or compare them"
           + (" (read-only: nothing can be deleted or imported here)." if read_only() else ", or to delete them."))

if picked:
    c1, c2, c3 = st.columns(3)
    if c1.button(f"Open {picked[0]}", key="hist_open"):
        st.query_params["run"] = picked[0]
        st.rerun()
    if len(picked) >= 2 and c2.toggle("Compare the selected side by side", key="hist_compare"):
        view = side_by_side([by_id[i] for i in picked], store)
        for note in view.notes:
            st.info(note)
        if not view.runs.empty:
            st.dataframe(view.runs, hide_index=True, key="hist_side")
            st.plotly_chart(runs_figure(view.runs), key="hist_side_chart")
        if view.probes:
            st.plotly_chart(probes_figure(view.probes), key="hist_side_probes")
        if view.recommendations:
            st.dataframe(recommendations_frame(view.recommendations), hide_index=True, key="hist_side_recs")
    if not read_only():
        confirm = c3.checkbox(f"Yes, delete {len(picked)} record(s) and their runs", key=f"hist_confirm_{generation}")
        c3.button("Delete", key=f"hist_delete_{generation}", disabled=not confirm, on_click=delete,
                  args=(tuple(picked),))

if not read_only():
    trash = store.trashed()
    with st.expander(f"Trash: {len(trash)} record(s), restorable for {trash_days():g} days after deletion"):
        if not trash:
            st.caption("Empty. Deleted records wait here, with their saved models, before they are removed for good.")
        for record in trash[:50]:
            t1, t2 = st.columns([5, 1])
            deleted = pd.Timestamp(record["deleted_at"], unit="s")
            t1.write(f"{record_text(record)}, deleted {deleted:%Y-%m-%d %H:%M} UTC")
            t2.button("Restore", key=f"hist_restore_{record['id']}", on_click=restore, args=((record["id"],),))
    with st.expander("Import a results bundle (.zip exported by another tlcore)"):
        bundle = st.file_uploader("Results bundle", type=["zip"], key="hist_bundle")
        if bundle is not None and st.button("Import", key="hist_import"):
            try:
                imported = store.import_bundle(bundle.getvalue())
                st.success(f"Imported {len(imported)} record(s): {', '.join(imported) or 'none new'}.")
            except TlcoreError as exc:
                show_error(exc)
