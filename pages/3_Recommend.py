"""Recommend page: measure a dataset (or describe one) and see which strategy to use, why, and what to expect; then
confirm it on the Compare page with one click. Layout only: signals, rules and evidence come from tlcore."""

import ui.preload  # noqa: F401  first: a deep link on a fresh server runs this page before app.py
from dataclasses import replace
from functools import partial

import pandas as pd
import streamlit as st

from tlcore.advice.calibration import CALIBRATION
from tlcore.advice.records import evidence_from_store, save_recommendation
from tlcore.advice.rules import SOURCES, confirmation_config, recommend, region
from tlcore.advice.signals import describe, measure
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.data.load import parse_dataset
from tlcore.engine.backbone import BackboneSpec
from tlcore.views import charts
from tlcore.views.text import measured_where, outlook_seconds
from ui.backbones import BACKBONES_PAGE
from ui.navigation import through_app
from ui.results import page_link_to, show_card
from ui.estimates import require_fits
from ui.widgets import (backbone_and_weights, computed_on_click, data_source, job_queue, require_weights, show_error,
                        submit_once)

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="Recommend · tlcore", page_icon=":material/explore:", layout="wide")


@st.cache_data(show_spinner="Measuring the data: one frozen forward pass, then the scores...", max_entries=16)
def measured(dataset: str, backbone: str, weights: str, per_class: int, image_size: int):
    return measure(parse_dataset(dataset), BackboneSpec(backbone, weights), per_class=per_class or None,
                   image_size=image_size or None)


st.title("Which strategy for this data?")
st.caption("A recommendation from cheap measurements on frozen features (no training), with the reasons and the "
           "thresholds used. Runs and sweeps already stored for the same data outweigh the prediction.")
page_link_to(BACKBONES_PAGE, "Which backbone and image size for this strategy? Rank them on the Backbones page", None,
             {})


# The read-only demo computes nothing: measuring runs the backbone, so only a description can be typed in there.
modes = ["only a description of it"] if read_only() else ["the dataset", "only a description of it"]
mode = st.radio("I have", modes, horizontal=True, key="rc_mode",
                help="This read-only demo does not measure datasets; describe one instead." if read_only() else None)
signals = None
if mode == "the dataset":
    left, right = st.columns(2)
    with left:
        data = data_source("rc_")
        per_class = st.number_input("Training images per class to consider (0 = all)", 0, 100_000, 0,
                                    key="rc_per_class")
    with right:
        backbone, weights = backbone_and_weights("rc_")
        image_size = st.number_input("Image size (0 = automatic)", 0, 512, 0, step=16, key="rc_image_size")
    signals = computed_on_click(st.button("Measure and recommend", type="primary", key="rc_measure"), "rc_inputs",
                                lambda: (data.resolve(), backbone, require_weights(weights), int(per_class),
                                         int(image_size)), measured)
    inputs = st.session_state.get("rc_inputs")
else:
    c1, c2, c3 = st.columns(3)
    n = c1.number_input("Labelled images per class", 1, 1_000_000, 50, key="rc_desc_n")
    classes = c2.number_input("Classes", 2, 100_000, 10, key="rc_desc_classes")
    similarity = c3.slider("How similar to everyday photos (ImageNet)?", 0.0, 1.0, 0.5, 0.05, key="rc_desc_sim",
                           help="1: ordinary photos of objects and animals; 0.5: photos of an unusual domain "
                           "(products on white, grey-scale); 0: nothing like photos (spectrograms, microscopy, "
                           "tiny digits)")
    signals = describe(n, classes, similarity)

if signals is not None:
    evidence = evidence_from_store(signals) if not signals.described else []
    rec = recommend(signals, evidence)
    inputs = st.session_state.get("rc_inputs")
    if not signals.described and st.session_state.get("rc_saved") != inputs:
        dataset_arg, backbone_arg, weights_arg, per_class_arg, size_arg = inputs
        st.session_state["rc_saved_id"] = save_recommendation(rec, parse_dataset(dataset_arg),
                                                              BackboneSpec(backbone_arg, weights_arg),
                                                              per_class_arg or None, 0, size_arg or None)
        st.session_state["rc_saved"] = inputs
    if not signals.described and st.session_state.get("rc_saved_id"):
        st.caption(f"Stored as `{st.session_state['rc_saved_id']}`: share it with `?run="
                   f"{st.session_state['rc_saved_id']}`.")
    st.divider()
    show_card(rec)
    st.markdown(f"**Why** (based on {rec.based_on}):")
    for r in rec.reasons:
        st.markdown(f"- {r.text()}  \n  <small>{SOURCES[r.source]}</small>", unsafe_allow_html=True)

    st.subheader("What to expect")  # full width: five columns, the basis a sentence long
    st.dataframe(pd.DataFrame([{"strategy": o.strategy, "accuracy from": o.accuracy_low,
                                "accuracy to": o.accuracy_high, "training time": outlook_seconds(o), "basis": o.basis}
                               for o in rec.outlooks]), hide_index=True, key="rc_outlook", width="stretch",
                 column_config={"strategy": st.column_config.TextColumn(width="medium"),
                                "accuracy from": st.column_config.NumberColumn(format="%.2f", width="small"),
                                "accuracy to": st.column_config.NumberColumn(format="%.2f", width="small"),
                                "training time": st.column_config.TextColumn(width="small"),
                                "basis": st.column_config.TextColumn(width="large")})
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.strategy_map(partial(region, classes=signals.classes), signals.images_per_class,
                                          signals.similarity, signals.dataset), key="rc_map")
    with right:
        if rec.based_on != "measurements":
            st.caption(f"Test accuracy and time ranges fitted on `python -m tlcore recommend --validate` "
                       f"({CALIBRATION['cases']} cases, {CALIBRATION['sizes'][0]}-{CALIBRATION['sizes'][-1]} images a "
                       "class) with the schedules the Compare page runs. The map is drawn from the size and the "
                       f"similarity for {signals.classes} classes; feature extraction's area is where fine-tune's "
                       "expected gain is under 1 point, so the cheaper strategy is as good within a point. "
                       "The linear probe measured here can move this dataset's point across a border."
                       + ("" if not signals.described else " Described data: wider ranges, from the size and the "
                          "similarity typed in."))
        if not signals.described:
            st.subheader("Signals")
            rows = [("images per class", signals.images_per_class), ("classes", signals.classes),
                    ("class balance (min/max)", signals.balance), ("native image size (px)", signals.native_size),
                    ("k-NN accuracy, frozen features", signals.knn_accuracy),
                    ("linear-probe val accuracy", signals.linear_probe_accuracy),
                    ("raw-pixel baseline val accuracy", signals.pixel_accuracy), ("LogME", signals.logme),
                    ("ImageNet head entropy (0 sure, 1 uniform)", signals.head_entropy), ("LEEP", signals.leep),
                    ("similarity (0-1)", signals.similarity), ("measured in (s)", signals.seconds)]
            st.dataframe(pd.DataFrame([{"signal": k, "value": None if v is None else round(float(v), 4)}
                                       for k, v in rows]), hide_index=True, key="rc_signals")
            st.caption(measured_where(signals))
    if evidence:
        st.subheader("Measured on this dataset")
        st.dataframe(pd.DataFrame(evidence), hide_index=True, key="rc_evidence")

    if not signals.described and not read_only():
        dataset, backbone_name, weights_arg, per_class_value, size = st.session_state["rc_inputs"]
        if st.button(f"Confirm on the Compare page: run {rec.choice.label} and {rec.runner_up.label}",
                     key="rc_confirm"):
            try:
                spec = replace(parse_dataset(dataset), per_class=per_class_value or None)
                config = confirmation_config(rec, spec, BackboneSpec(backbone_name, weights_arg), size or None)
                estimate = require_fits("comparison", config.to_dict())
                job_id = submit_once(job_queue(), config, f"confirm recommendation · {dataset}", "rc_confirm")
                st.session_state.setdefault("estimates", {})[job_id] = estimate  # the Compare page shows it
            except TlcoreError as exc:  # a full queue, or a run this machine cannot hold
                show_error(exc)
            else:
                st.switch_page("pages/1_Compare.py", query_params={"job": job_id})
