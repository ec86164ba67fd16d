"""Anatomy page: the backbone as a stack (stem -> stages -> pooling -> head) with what each strategy freezes, and the
layer-wise probe of where pretrained features stop transferring on your data. Layout only: the anatomy, the views and
the probe come from tlcore."""

import pandas as pd
import streamlit as st

from tlcore.advice.probe import layer_probe, probe_table
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.engine.anatomy import backbone_anatomy, strategy_view
from tlcore.engine.backbone import BackboneSpec
from tlcore.engine.strategies import KINDS, make_strategy
from tlcore.experiments.config import build_config
from tlcore.views.anatomy import anatomy_figure, anatomy_frame, probe_figure
from ui.navigation import through_app
from ui.widgets import backbone_and_weights, data_source, require_weights

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="Anatomy · tlcore", page_icon="🩻", layout="wide")


@st.cache_resource(show_spinner="Measuring the network: shapes and multiply-adds at this image size...",
                   max_entries=8)
def measured(backbone: str, weights: str, image_size: int, classes: int):
    return backbone_anatomy(BackboneSpec(backbone, weights), image_size, classes)


@st.cache_data(show_spinner="Probing every stage: one frozen pass, then a linear head per stage...", max_entries=8)
def probed(dataset: str, backbone: str, weights: str, per_class: int, image_size: int, random_weights: bool):
    config = build_config("default", dataset=dataset, per_class=per_class or "all", backbone=backbone,
                          weights=weights, strategies=["feature-extraction"], image_size=image_size or None)
    return layer_probe(config, random_weights=random_weights)


# A link from a record or a script: ?backbone=NAME&image_size=N&strategy=fine-tune&stages=K fills the choices once.
query = st.query_params
if query.get("backbone") and "an_backbone" not in st.session_state:
    st.session_state["an_backbone"] = query["backbone"]
    for param, key, cast in (("image_size", "an_image_size", int), ("classes", "an_classes", int),
                             ("strategy", "an_strategy", str), ("stages", "an_stages", int)):
        if query.get(param):
            st.session_state[key] = cast(query[param])

st.title("Anatomy: what each strategy trains")
st.caption("A CNN is a stack: a stem, stages that extract edges, then textures, then parts, pooling and a linear "
           "head. The strategies differ only in which part of that stack stays frozen. Groups are timm's own "
           "(`group_matcher`), the ones fine-tuning counts from the top; what is frozen is read off the model after "
           "the engine's own freezing.")

left, right = st.columns(2)
with left:
    backbone, weights = backbone_and_weights("an_")
with right:
    image_size = int(st.number_input("Image size (px)", 16, 1024, 48, step=16, key="an_image_size",
                                     help="48 px is what the built-in Fashion-MNIST runs at; a ViT needs its own "
                                     "input size (e.g. 160 for test_vit)."))
    classes = int(st.number_input("Classes (the head's outputs)", 2, 100_000, 10, key="an_classes"))

try:
    anatomy, model = measured(backbone, weights if weights in ("pretrained", "none") else "none", image_size,
                              classes)
except TlcoreError as exc:
    st.error(str(exc))
    st.stop()

c1, c2, c3 = st.columns([2, 2, 2])
kind = c1.radio("Strategy", list(KINDS), horizontal=True, key="an_strategy")
stages, bn_policy = 2, None
if kind == "fine-tune":
    options = list(range(1, anatomy.num_stages + 1))
    stages = c2.select_slider("Top stages to fine-tune (K)", options, value=min(2, anatomy.num_stages),
                              key="an_stages", help=f"{anatomy.num_stages} = all")
    bn_policy = c3.radio("BatchNorm in trained stages", ["frozen", "train"], horizontal=True, key="an_bn",
                         help="frozen: running statistics stay (the fine-tune default); train: they update")
view = strategy_view(model, anatomy, make_strategy(kind, stages=stages, bn_policy=bn_policy))

st.plotly_chart(anatomy_figure(anatomy, view), key="an_diagram")
st.caption(f"{anatomy.total_params:,} parameters, {anatomy.total_macs:,} multiply-adds an image "
           f"(torch's FlopCounterMode); **{view.trainable_params:,}** train under {view.label}. Orange: trainable; "
           "grey-blue: frozen; under a box, whether its BatchNorm statistics update.")
frame = anatomy_frame(anatomy, {kind: view}).rename(columns={view.label: "under this strategy"})
st.dataframe(frame, hide_index=True, key="an_table",
             column_config={"params": st.column_config.NumberColumn(format="%d"),
                            "MACs": st.column_config.NumberColumn("multiply-adds", format="%d")})

st.divider()
st.subheader("Where do pretrained features stop transferring? A layer-wise probe")
st.caption("One frozen pass collects every stage's pooled output; the feature-extraction head (L-BFGS, L2 picked on "
           "val) is fitted on each. The last stage is exactly feature extraction. Where the pretrained curve peaks "
           "before the last stage, the later stages are specific to the source task: the case for fine-tuning "
           "them (Yosinski et al., 2014). The random-weights curve shows what depth alone gives.")
if read_only():
    st.info("This read-only demo computes nothing; run the probe on a writable server or with "
            "`python -m tlcore anatomy --dataset ...`.")
else:
    p1, p2 = st.columns(2)
    with p1:
        data = data_source("an_")
    with p2:
        per_class = int(st.number_input("Training images per class (0 = all)", 0, 100_000, 20, key="an_per_class"))
        random_weights = st.checkbox("Also the same architecture with random weights", True, key="an_random")
    if st.button("Run the probe", type="primary", key="an_probe"):
        try:
            st.session_state["an_inputs"] = (data.resolve(), backbone, require_weights(weights), per_class,
                                             image_size, random_weights)
        except TlcoreError as exc:
            st.error(str(exc))
    inputs = st.session_state.get("an_inputs")
    if inputs:
        try:
            result = probed(*inputs)
        except TlcoreError as exc:
            st.error(str(exc))
        else:
            st.markdown(result.statement())
            st.plotly_chart(probe_figure(result), key="an_probe_chart")
            st.dataframe(pd.DataFrame(probe_table(result)), hide_index=True, key="an_probe_table")
