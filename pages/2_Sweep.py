"""Sweep page: accuracy, time and cost against labelled images per class, with repeats, intervals and crossovers.
Layout only: the sweep, its statistics and its figures come from tlcore."""

import ui.preload  # noqa: F401  first: a deep link on a fresh server runs this page before app.py
import pandas as pd
import streamlit as st

from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.engine.strategies import KINDS
from tlcore.experiments.config import ALL, build_sweep_config, parse_sizes, preset_strategy, size_label
from tlcore.experiments.defaults import DEFAULT_PRESET, DEFAULT_SEED, DEFAULT_STRATEGIES, SWEEP_PRESETS
from tlcore.server.jobs import ACTIVE
from tlcore.views.text import adaptive_text, dataset_display, not_run_text
from ui.estimates import current_estimate, require_fits
from ui.navigation import through_app
from ui.results import progress_bars, show_job, sweep_figures
from ui.widgets import (backbone_and_weights, data_source, job_queue, job_sidebar, require_weights, session_id,
                        show_error)

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="Sweep · tlcore", page_icon=":material/trending_up:", layout="wide")


st.title("Accuracy vs images per class")
st.caption("Each strategy at several training-set sizes (nested subsets: the small ones lie inside the large ones), "
           "repeated with different seeds, always scored on the same test set. Finished cells are stored as they "
           "complete: a sweep that is stopped and started again only computes what is missing.")

job_id = st.query_params.get("sweep") or st.session_state.get("sweep")
if read_only():
    st.info("This is a read-only demo (TLCORE_READ_ONLY=1): open stored sweeps on the History page or through a "
            "share link. Nothing runs here.")
else:
    with st.expander("Set up a sweep", expanded=not job_id):
        preset = st.radio("Preset", list(SWEEP_PRESETS), index=list(SWEEP_PRESETS).index(DEFAULT_PRESET),
                          horizontal=True, key="sw_preset",
                          format_func=lambda p: p.capitalize())
        base = SWEEP_PRESETS[preset]
        st.caption(base.description)
        left, right = st.columns(2)
        with left:
            st.subheader("Data")
            data = data_source("sw_")
            sizes_text = st.text_input("Images per class (comma-separated; 'all' = every image)",
                                       value=",".join(size_label(s) for s in base.sizes), key=f"sw_sizes_{preset}")
            repeats = st.number_input("Repeats (seeds) per cell", 1, 20, base.repeats, key=f"sw_repeats_{preset}",
                                      help="Two repeats give a wide 95% interval (t at one degree of freedom); "
                                      "three or more make crossovers decidable.")
            image_size = st.number_input("Image size in pixels (0 = automatic)", 0, 512, 0, step=16,
                                         key="sw_image_size")
            seed = st.number_input("First seed", 0, 2**31 - 1, DEFAULT_SEED, key="sw_seed")
        with right:
            st.subheader("Backbone and strategies")
            backbone, weights = backbone_and_weights("sw_")
            strategies = st.multiselect("Strategies", list(KINDS), default=list(DEFAULT_STRATEGIES),
                                        key="sw_strategies")
            ft, sc = preset_strategy(preset, "fine-tune", sweep=True), preset_strategy(preset, "scratch", sweep=True)
            ft_epochs = st.number_input("Fine-tune: max epochs", 1, 200, ft.epochs, key=f"sw_ft_ep_{preset}")
            long = {s.kind: s for s in build_sweep_config(preset).strategies_at(ALL)}.get("scratch")
            long_from = SWEEP_PRESETS[preset].long_from
            sc_shown = long.epochs if "scratch" in SWEEP_PRESETS[preset].long_only else sc.epochs
            if "scratch" in SWEEP_PRESETS[preset].long_only:
                long_words = f" (it runs from {long_from} a class only)"
            else:
                long_words = (f" ({sc.epochs} below {long_from} a class, {long.epochs} from {long_from}; a new "
                              "value sets both)" if long and long != sc else "")
            sc_epochs = st.number_input(f"Scratch: max epochs{long_words}", 1, 500, sc_shown,
                                        key=f"sw_sc_ep_{preset}")
        try:
            planned = build_sweep_config(preset, sizes=parse_sizes(sizes_text), repeats=int(repeats),
                                         strategies=strategies or None)
            n_sizes = len(planned.sizes)
            skipped = sum(len(sizes) for _, sizes in planned.skipped()) * int(repeats) if strategies else 0
            st.caption(f"{n_sizes} sizes x {int(repeats)} repeats x {len(strategies)} strategies"
                       + (f", less {skipped} not run" if skipped else "")
                       + f" = {planned.cells_total if strategies else 0} cells.")
            not_run = not_run_text(planned.to_dict()) if strategies else ""
            if strategies and adaptive_text(planned.to_dict()):
                st.caption(adaptive_text(planned.to_dict()))
            if not_run:
                st.caption(not_run)
        except TlcoreError as exc:
            show_error(exc)
        def chosen(dataset):
            return build_sweep_config(
                preset, sizes=parse_sizes(sizes_text), repeats=int(repeats), dataset=dataset, backbone=backbone,
                weights=require_weights(weights), strategies=strategies, image_size=int(image_size) or None,
                seed=int(seed),  # an untouched epochs field keeps the preset's schedules (both of scratch's)
                strategy_options={"fine-tune": {"epochs": int(ft_epochs) if ft_epochs != ft.epochs else None},
                                  "scratch": {"epochs": int(sc_epochs) if sc_epochs != sc_shown else None}})

        if strategies and data.kind == "Built-in":  # its size is known without reading a file: estimate right away
            try:
                st.caption(current_estimate("sweep", chosen(data.resolve()).to_dict()).text())
            except TlcoreError as exc:
                show_error(exc)
        if st.button("Run sweep", type="primary", key="sw_run", disabled=not strategies):
            try:
                dataset = data.resolve()
                config = chosen(dataset)
                require_fits("sweep", config.to_dict())
                label = f"sweep {dataset_display(dataset)} · {backbone} · {sizes_text}"
                job_id = job_queue().submit(config, label=label, session=session_id())
                st.session_state["sweep"] = job_id
                st.query_params["sweep"] = job_id
            except TlcoreError as exc:
                show_error(exc)


job_sidebar(job_queue())
job_id = st.query_params.get("sweep") or st.session_state.get("sweep")


def cells_frame(cells) -> pd.DataFrame:
    return pd.DataFrame([c.to_row() for c in cells])


@st.fragment(run_every=1.0)
def live_panel(job_id: str) -> None:
    snap = job_queue().get(job_id)
    if snap is None or snap["status"] not in ACTIVE:
        st.rerun()
    done, total = len(snap["cells"]), snap["cells_total"]
    st.subheader(f"Sweep {job_id}: {snap['status']}, {done} of {total} cells")
    if snap["status"] == "queued":
        st.info("Queued. One training job runs at a time on this machine.")
    st.progress(min(1.0, done / max(total, 1)), text=f"{done} of {total} cells finished" if done <= total else
                f"{done} cells finished: the {total} planned, then {done - total} adaptive repeats")
    progress_bars(snap, [])
    if snap["status"] == "running" and not snap["progress"] and not done:
        st.caption("Loading the data, decoding images and extracting features once for the largest subset...")
    if st.button("Cancel", key=f"sw_cancel_{job_id}"):
        job_queue().cancel(job_id)
        st.toast("Cancelling after the current batch; finished cells are kept.")
    if snap["cells"]:
        sweep_figures(cells_frame(snap["cells"]), f"live_{job_id}")


if job_id:
    show_job(job_id, job_queue(), live_panel)
