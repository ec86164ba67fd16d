"""Backbones page: rank candidate backbones at image sizes on the data without training (a background job), read the
answer against cost, then confirm the top ones with the real comparison, side by side. Layout only: candidates,
scores, charts and the comparison all come from tlcore."""

import ui.preload  # noqa: F401  first: a deep link on a fresh server runs this page before app.py
import streamlit as st

from tlcore.advice.candidates import DEFAULT_PER_CLASS, RankingConfig, confirmation, default_candidates, \
    ranking_from_record
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.data.load import parse_dataset
from tlcore.experiments.backbones import Candidate, load_backbones, parse_candidates
from tlcore.experiments.defaults import DEFAULT_PRESET, DEFAULT_SEED, PRESETS
from tlcore.server.jobs import ACTIVE
from tlcore.views.text import dataset_display
from ui.backbones import backbones_results, ranking_results
from ui.navigation import through_app
from ui.results import progress_bars
from ui.widgets import data_source, id_from_link, job_queue, job_sidebar, show_error, submit_once

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="Backbones · tlcore", page_icon=":material/view_module:", layout="wide")


@st.cache_data(show_spinner="Listing the candidates this machine can hold...", max_entries=16, ttl=3600)
def _default_candidates(dataset: str, per_class: int) -> list[dict]:
    return [c.to_dict() for c in default_candidates(dataset, per_class or None)]


st.title("Which backbone, at which image size?")
st.caption("Each candidate (a backbone at an image size) gets one frozen pass over your training and val images, "
           "cached for later comparisons; the feature-extraction head, k-NN, LogME and H-score are scored on it, and "
           "its inference cost measured here. No network is trained. Then confirm the top ones with the real "
           "comparison.")

queue = job_queue()
ranking_id = id_from_link("ranking", "bb_", "stored rankings")
confirm_id = id_from_link("confirm", "bb_", "stored rankings")

if read_only():
    st.info("This is a read-only demo (TLCORE_READ_ONLY=1): open stored rankings on the History page or through a "
            "share link. Nothing runs here.")
else:
    with st.expander("Rank candidates on your data", expanded=not ranking_id):
        left, right = st.columns(2)
        with left:
            data = data_source("bb_")
            per_class = st.number_input("Training images per class (0 = all)", 0, 100_000, DEFAULT_PER_CLASS or 0,
                                        key="bb_per_class", help="The default comparison's 100 a class, so that a "
                                        "comparison afterwards reuses the features")
            seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=DEFAULT_SEED, key="bb_seed")
        with right:
            labels: dict[str, Candidate] = {}
            try:
                if data.kind == "Built-in" or data.folder:
                    found = _default_candidates(data.resolve(), int(per_class))
                    labels = {c.label: c for c in (Candidate(**d) for d in found)}
            except TlcoreError as exc:
                show_error(exc)
            chosen = st.multiselect("Candidates (every backbone with weights here, from the automatic CPU size to its "
                                    "pretrained size)", list(labels), default=list(labels), key="bb_candidates")
            if not labels:
                st.caption("Left empty, the ranking takes every backbone with weights here, from the automatic CPU "
                           "size for these images to its pretrained size, as far as this machine's memory allows.")
            extra = st.text_input("More candidates: name@size, comma-separated", key="bb_extra",
                                  placeholder="tf_efficientnet_lite0@64, resnet18@112",
                                  help="Any timm name at a size in px; hub weights need the internet. A weights "
                                  "file under the data roots: name@size@path.")
        if st.button("Rank", type="primary", key="bb_rank"):
            try:
                candidates = [labels[label] for label in chosen] + (parse_candidates(extra) if extra.strip() else [])
                if not candidates and labels:
                    raise TlcoreError("Choose at least one candidate, or type one as name@size.")
                dataset = data.resolve()
                config = RankingConfig(parse_dataset(dataset), tuple(dict.fromkeys(candidates)),
                                       int(per_class) or None, int(seed))
                count = f"{len(config.candidates)} candidates" if config.candidates else "the default candidates"
                ranking_id = submit_once(queue, config, f"ranking · {dataset_display(dataset)} · {count}", "bb_rank")
                st.session_state["bb_ranking"], st.query_params["ranking"] = ranking_id, ranking_id
                st.session_state.pop("bb_confirm", None)
                st.query_params.pop("confirm", None)
                confirm_id = None
            except TlcoreError as exc:
                show_error(exc)

job_sidebar(queue)


@st.fragment(run_every=1.0)
def live_panel(job_id: str, what: str) -> None:
    snap = queue.get(job_id)
    if snap is None or snap["status"] not in ACTIVE:
        st.rerun()  # finished: render the results with the whole page
    st.subheader(f"{what} {job_id}: {snap['status']}")
    if snap["status"] == "queued":
        position = next((j["position"] for j in queue.active() if j["id"] == job_id), 0)
        st.info(f"Queued (position {position}). One job runs at a time on this machine.")
    progress_bars(snap, snap["strategies"])
    if st.button("Cancel", key=f"cancel_{job_id}"):
        queue.cancel(job_id)
        st.toast("Cancelling after the current batch...")


def stored_ranking(record_id: str):
    record = queue.store.record(record_id) if record_id and record_id.isalnum() else None
    if record is None or record["kind"] != "ranking":
        return None, record
    return (ranking_from_record(record) if record.get("summary") else None), record


ranking = None
if ranking_id:
    snap = queue.get(ranking_id)
    if snap is None or snap["kind"] != "ranking":
        st.warning(f"No ranking '{ranking_id}' here. Check the link, or open the History page.")
    elif snap["status"] in ACTIVE:
        live_panel(ranking_id, "Ranking")
    else:
        ranking, record = stored_ranking(ranking_id)
        st.subheader(f"Ranking {ranking_id}: {snap['status']}")
        if snap.get("error"):
            show_error(f"This ranking failed: {snap['error']}")
        if ranking is not None:
            ranking_results(ranking, f"bb_{ranking_id}")

if ranking is not None and ranking.completed and not read_only():
    st.divider()
    st.subheader("Confirm the top candidates")
    c1, c2 = st.columns([1, 2])
    top = c1.number_input("How many", 1, min(6, len(ranking.completed)), min(2, len(ranking.completed)),
                          key="bb_top")
    preset = c2.radio("Comparison preset", list(PRESETS), index=list(PRESETS).index(DEFAULT_PRESET),
                      horizontal=True, key="bb_preset", format_func=lambda p: p.capitalize())
    st.caption("Runs the real comparison (feature extraction, fine-tune and scratch, the preset's schedules) for each "
               "of them on the same data, subset and seed as the ranking, each at its own size; strategy x backbone "
               "in one table and one chart.")
    if st.button(f"Confirm the top {int(top)}", type="primary", key="bb_confirm_button"):
        try:
            config = confirmation(ranking, int(top), preset)
            confirm_id = submit_once(queue, config, f"backbones · {dataset_display(ranking.dataset)} · top {int(top)} "
                                     f"of {ranking.record_id}", "bb_confirm")
            st.session_state["bb_confirm"], st.query_params["confirm"] = confirm_id, confirm_id
        except TlcoreError as exc:
            show_error(exc)

if confirm_id:
    snap = queue.get(confirm_id)
    st.divider()
    if snap is None or snap["kind"] != "backbones":
        st.warning(f"No multi-backbone comparison '{confirm_id}' here. Check the link, or open the History page.")
    elif snap["status"] in ACTIVE:
        live_panel(confirm_id, "Backbones side by side")
    else:
        result = load_backbones(confirm_id, queue.store)
        st.subheader(f"Backbones side by side {confirm_id}: {snap['status']}")
        if snap.get("error"):
            show_error(f"This comparison failed: {snap['error']}")
        if ranking is None and result.config.ranking:
            ranking = stored_ranking(result.config.ranking)[0]
        backbones_results(result, ranking, f"bbc_{confirm_id}")
