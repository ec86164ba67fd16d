"""Compare page: choose data, backbone and strategies, run them as a background job, and read the results side by
side. Layout only: configs, jobs, charts and galleries all come from tlcore."""

import ui.preload  # noqa: F401  first: a deep link on a fresh server runs this page before app.py

import streamlit as st

from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.engine.strategies import KINDS
from tlcore.experiments.config import build_config, preset_strategy, size_label
from tlcore.experiments.defaults import DEFAULT_PRESET, DEFAULT_SEED, DEFAULT_STRATEGIES, PRESETS
from tlcore.server.jobs import ACTIVE
from tlcore.views import charts
from tlcore.views.text import dataset_display
from ui.backbones import BACKBONES_PAGE
from ui.estimates import current_estimate, require_fits
from ui.health import DATA_PAGE
from ui.navigation import through_app
from ui.results import page_link_to, progress_bars, show_job
from ui.tracking import mlflow_note, mlflow_option, submitted_uri
from ui.widgets import (
    backbone_and_weights,
    data_source,
    dataset_card_panel,
    job_queue,
    job_sidebar,
    require_weights,
    session_id,
    show_error,
)

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="Compare · tlcore", page_icon=":material/balance:", layout="wide")


st.title("Compare strategies")
st.caption("All strategies see the same split and the same test set. Runs go to a background queue: you can leave "
           "this page or reload it; the link keeps your job.")
page_link_to(BACKBONES_PAGE, "Which backbone, at which image size? Rank the candidates on your data first (no "
             "training), then compare the top ones side by side", None, {})

# ------------------------------------------------------------------------------------------------------ set-up
job_id = st.query_params.get("job") or st.session_state.get("job")
if read_only():
    st.info("This is a read-only demo (TLCORE_READ_ONLY=1): open stored runs on the History page or through a share "
            "link. Nothing runs here.")
else:
    with st.expander("Set up a comparison", expanded=not job_id):
        preset = st.radio("Preset", list(PRESETS), index=list(PRESETS).index(DEFAULT_PRESET), horizontal=True,
                          key="preset", format_func=lambda p: p.capitalize())
        st.caption(PRESETS[preset].description)

        left, right = st.columns(2)
        with left:
            st.subheader("Data")
            data = data_source()
            dataset_card_panel(data, "")
            page_link_to(DATA_PAGE, "Is the data clean? Check its health", None, {})
            per_class = st.number_input("Training images per class (0 = all)", min_value=0, max_value=100_000,
                                        value=PRESETS[preset].per_class or 0, key=f"per_class_{preset}")
            image_size = st.number_input("Image size in pixels (0 = automatic: on a CPU about 1.75x native, 48-128; "
                                         "on a GPU the backbone's pretrained size)", min_value=0,
                                         max_value=512, value=0, step=16, key="image_size")
            seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=DEFAULT_SEED, key="seed")

        with right:
            st.subheader("Backbone and strategies")
            backbone, weights = backbone_and_weights()
            strategies = st.multiselect("Strategies", list(KINDS), default=list(DEFAULT_STRATEGIES), key="strategies")
            with st.expander("Strategy options"):
                ft, sc = preset_strategy(preset, "fine-tune"), preset_strategy(preset, "scratch")
                stage_options = ["1", "2", "3", "4", "all"]
                ft_stages = st.selectbox("Fine-tune: top stages to train", stage_options,
                                         index=stage_options.index(str(ft.stages)), key=f"ft_stages_{preset}")
                lp_ft = st.checkbox("Fine-tune: fit the head on frozen features first (LP-FT)", value=ft.lp_ft,
                                    key=f"lp_ft_{preset}")
                lr_ratio = st.number_input("Fine-tune: backbone learning rate / head learning rate", min_value=0.001,
                                           max_value=1.0, value=ft.backbone_lr_ratio, step=0.05, format="%.3f",
                                           key=f"lr_ratio_{preset}")
                bn_options = ["frozen", "train"]
                bn_policy = st.radio("Fine-tune: BatchNorm statistics in trained stages", bn_options,
                                     index=bn_options.index(ft.bn_policy), horizontal=True, key=f"bn_policy_{preset}")
                ft_epochs = st.number_input("Fine-tune: max epochs", 1, 200, ft.epochs, key=f"ft_ep_{preset}")
                sc_epochs = st.number_input("Scratch: max epochs", 1, 500, sc.epochs, key=f"sc_ep_{preset}")
                augment = st.checkbox("Fine-tune: light augmentation (random crop + flip)", value=ft.augment,
                                      key=f"augment_{preset}", help="off by default: it would disable the cached "
                                      "frozen bottom, and fine-tuning from pretrained features needs it less")
                sc_augment = st.checkbox("Scratch: light augmentation (random crop + flip)", value=sc.augment,
                                         key=f"sc_augment_{preset}", help="on by default: with 1,000 images it kept "
                                         "scratch's accuracy in fewer seconds (docs/benchmarks.md)")

        def chosen_config(dataset: str):
            return build_config(
                preset, dataset=dataset, backbone=backbone, weights=require_weights(weights), strategies=strategies,
                per_class=int(per_class), image_size=int(image_size) or None, seed=int(seed),
                strategy_options={"fine-tune": {"augment": augment, "lp_ft": lp_ft, "backbone_lr_ratio": lr_ratio,
                                                "stages": ft_stages if ft_stages == "all" else int(ft_stages),
                                                "bn_policy": bn_policy, "epochs": int(ft_epochs)},
                                  "scratch": {"augment": sc_augment, "epochs": int(sc_epochs)}})

        if strategies and data.kind == "Built-in":  # its size is known without reading a file: estimate right away
            try:
                st.caption(current_estimate("comparison", chosen_config(data.resolve()).to_dict()).text())
            except TlcoreError as exc:
                show_error(exc)
        mlflow_uri = mlflow_option()
        if st.button("Run", type="primary", key="run", disabled=not strategies):
            try:
                dataset = data.resolve()
                config = chosen_config(dataset)
                estimate = require_fits("comparison", config.to_dict())
                size = size_label(config.dataset.per_class)
                job_id = job_queue().submit(config, label=f"{dataset_display(dataset)} · {backbone} · {size}/class",
                                            session=session_id(), mlflow_uri=submitted_uri(mlflow_uri))
                st.session_state["job"] = job_id
                st.session_state.setdefault("estimates", {})[job_id] = estimate
                st.query_params["job"] = job_id
            except TlcoreError as exc:
                show_error(exc)

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
    if st.session_state.get("estimates", {}).get(job_id):
        st.caption(st.session_state["estimates"][job_id])
    if snap["status"] == "queued":
        position = next((j["position"] for j in job_queue().active() if j["id"] == job_id), 0)
        st.info(f"Queued (position {position}). One training job runs at a time on this machine.")
    progress_bars(snap, snap["strategies"])
    if snap["live_curves"]:
        st.plotly_chart(charts.curves(snap["live_curves"]), key=f"live_{job_id}")
    if st.button("Cancel", key=f"cancel_{job_id}"):
        job_queue().cancel(job_id)
        st.toast("Cancelling after the current batch...")


if job_id:
    show_job(job_id, job_queue(), live_panel)
    mlflow_note(job_queue().get(job_id))
