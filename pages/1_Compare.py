"""Compare page: choose data, backbone and strategies, run them as a background job, and read the results side by
side. Layout only: configs, jobs, charts and galleries all come from tlcore."""

import streamlit as st

from pages._results import show_job
from pages._widgets import (backbone_and_weights, data_source, dataset_card_panel, job_queue, job_sidebar,
                            require_weights)
from tlcore import charts
from tlcore.environment import read_only
from tlcore.errors import TlcoreError
from tlcore.jobs import ACTIVE
from tlcore.presets import PRESETS, build_config
from tlcore.strategies import DEFAULTS, KINDS

st.set_page_config(page_title="Compare · tlcore", page_icon="⚖️", layout="wide")


st.title("Compare strategies")
st.caption("All strategies see the same split and the same test set. Runs go to a background queue: you can leave "
           "this page or reload it; the link keeps your job.")

# ------------------------------------------------------------------------------------------------------ set-up
job_id = st.query_params.get("job") or st.session_state.get("job")
with st.expander("Set up a comparison", expanded=not job_id):
    preset = st.radio("Preset", list(PRESETS), index=0, horizontal=True, key="preset",
                      format_func=lambda p: p.capitalize())
    st.caption(PRESETS[preset].description)

    left, right = st.columns(2)
    with left:
        st.subheader("Data")
        data = data_source()
        dataset_card_panel(data, "")
        per_class = st.number_input("Training images per class (0 = all)", min_value=0, max_value=100_000,
                                    value=PRESETS[preset].per_class, key=f"per_class_{preset}")
        image_size = st.number_input("Image size in pixels (0 = automatic: about 1.75x native, 48-128)", min_value=0,
                                     max_value=512, value=0, step=16, key="image_size")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="seed")

    with right:
        st.subheader("Backbone and strategies")
        backbone, weights = backbone_and_weights()
        strategies = st.multiselect("Strategies", list(KINDS), default=list(KINDS), key="strategies")
        with st.expander("Strategy options"):
            ft_defaults = {**DEFAULTS["fine-tune"], **PRESETS[preset].strategy_overrides.get("fine-tune", {})}
            sc_defaults = {**DEFAULTS["scratch"], **PRESETS[preset].strategy_overrides.get("scratch", {})}
            stage_options = ["1", "2", "3", "4", "all"]
            ft_stages = st.selectbox("Fine-tune: top stages to train", stage_options,
                                     index=stage_options.index(str(ft_defaults["stages"])), key=f"ft_stages_{preset}")
            lp_ft = st.checkbox("Fine-tune: fit the head on frozen features first (LP-FT)", value=True, key="lp_ft")
            lr_ratio = st.number_input("Fine-tune: backbone learning rate / head learning rate", min_value=0.001,
                                       max_value=1.0, value=0.1, step=0.05, format="%.3f", key="lr_ratio")
            bn_policy = st.radio("Fine-tune: BatchNorm statistics in trained stages", ["frozen", "train"],
                                 horizontal=True, key="bn_policy")
            ft_epochs = st.number_input("Fine-tune: max epochs", 1, 200, ft_defaults["epochs"], key=f"ft_ep_{preset}")
            sc_epochs = st.number_input("Scratch: max epochs", 1, 500, sc_defaults["epochs"], key=f"sc_ep_{preset}")
            augment = st.checkbox("Light augmentation (random crop + flip) for fine-tune and scratch", key="augment")

    if read_only():
        st.info("This instance is read-only (TLCORE_READ_ONLY=1): open stored runs on the History page.")
    run_clicked = st.button("Run", type="primary", key="run", disabled=not strategies or read_only())

    if run_clicked:
        try:
            dataset = data.resolve()
            weights = require_weights(weights)
            common = {"augment": augment or None}
            config = build_config(
                preset, dataset=dataset, backbone=backbone, weights=weights, strategies=strategies,
                per_class=int(per_class), image_size=int(image_size) or None, seed=int(seed),
                strategy_options={"fine-tune": {**common, "stages": ft_stages if ft_stages == "all" else int(ft_stages),
                                                "lp_ft": lp_ft, "backbone_lr_ratio": lr_ratio, "bn_policy": bn_policy,
                                                "epochs": int(ft_epochs)},
                                  "scratch": {**common, "epochs": int(sc_epochs)}})
            job_id = job_queue().submit(config, label=f"{dataset} · {backbone} · {int(per_class) or 'all'}/class")
            st.session_state["job"] = job_id
            st.query_params["job"] = job_id
        except TlcoreError as exc:
            st.error(str(exc))

# ------------------------------------------------------------------------------------------------------ queue
job_sidebar(job_queue())

# ------------------------------------------------------------------------------------------------------ the job
job_id = st.query_params.get("job") or st.session_state.get("job")  # a job may have just been submitted


@st.fragment(run_every=1.0)
def live_panel(job_id: str) -> None:
    snap = job_queue().get(job_id)
    if snap is None or snap["status"] not in ACTIVE:
        st.rerun()  # finished: render the results with the whole page
    st.subheader(f"Job {job_id}: {snap['status']}")
    if snap["status"] == "queued":
        position = next((j["position"] for j in job_queue().active() if j["id"] == job_id), 0)
        st.info(f"Queued (position {position}). One training job runs at a time on this machine.")
    for name in snap["strategies"]:
        event = snap["progress"].get(name)
        if event is None:
            waiting = "loading data and backbone" if snap["status"] == "running" and not snap["progress"] else "waiting"
            st.progress(0.0, text=f"{name}: {waiting}")
            continue
        text = f"{name}: {event['phase']}"
        if event["epochs"]:
            text += f", epoch {event['epoch']}/{event['epochs']}"
        if event["val_accuracy"] is not None:
            text += f", val {event['val_accuracy']:.3f}"
        if event["eta_s"] is not None and event["phase"] != "done":
            text += f", about {event['eta_s']:.0f} s left"
        st.progress(min(1.0, event["fraction"]), text=text)
    if snap["live_curves"]:
        st.plotly_chart(charts.curves(snap["live_curves"]), key=f"live_{job_id}")
    if st.button("Cancel", key=f"cancel_{job_id}"):
        job_queue().cancel(job_id)
        st.toast("Cancelling after the current batch...")


if job_id:
    show_job(job_id, job_queue(), live_panel)
