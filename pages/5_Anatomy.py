"""Anatomy page: the backbone as a stack (stem -> stages -> pooling -> head) with what each strategy freezes, what each
stage sees in a sample image, and the layer-wise probe of where pretrained features stop transferring on your data.
Layout only: the anatomy, the views, the activations and the probe come from tlcore."""

import ui.preload  # noqa: F401  first: a deep link on a fresh server runs this page before app.py
import copy
import hashlib

import numpy as np
import streamlit as st

from tlcore.advice.probe import layer_probe, probe_from_record, save_probe
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.data.builtin import BUILTIN_DATASETS, builtin_available
from tlcore.data.dataset import IMAGE_EXTENSIONS, DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.deploy.load import Preprocessing
from tlcore.engine.activations import stage_activations
from tlcore.engine.anatomy import measured_anatomy, strategy_view
from tlcore.engine.backbone import data_config
from tlcore.engine.strategies import KINDS, make_strategy
from tlcore.experiments.config import build_config
from tlcore.experiments.defaults import DEFAULT_PRESET, PRESETS
from tlcore.records.store import default_store
from tlcore.server.limits import MAX_CLASSES, anatomy_link, max_image_size, served_backbones
from tlcore.views.anatomy import activations_figure, anatomy_figure, anatomy_frame
from ui.navigation import through_app
from ui.results import probe_results
from ui.widgets import backbone_and_weights, computed_on_click, data_source, require_weights, show_error

PROBE_PER_CLASS = PRESETS[DEFAULT_PRESET].per_class or 0  # what `tlcore anatomy --probe` and tlcore.probe use

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="Anatomy · tlcore", page_icon=":material/layers:", layout="wide")


def measured(backbone: str, weights: str, image_size: int, classes: int):
    """Kept by tlcore within a memory bound, shared by every session."""
    with st.spinner("Measuring the network: shapes and multiply-adds at this image size..."):
        return measured_anatomy(backbone, weights, image_size, classes)


@st.cache_data(show_spinner="Probing every stage: one frozen pass, then a linear head per stage...", max_entries=8)
def probed(dataset: str, backbone: str, weights: str, per_class: int, image_size: int, random_weights: bool):
    config = build_config(DEFAULT_PRESET, dataset=dataset, per_class=per_class or "all", backbone=backbone,
                          weights=weights, strategies=["feature-extraction"], image_size=image_size or None)
    result = layer_probe(config, random_weights=random_weights)
    save_probe(result, config, random_weights)  # a record: share link, report, History
    return result


@st.cache_data(show_spinner="Loading the test image...", max_entries=32)
def test_image(dataset: str, index: int):
    ds = load_dataset(DatasetSpec(dataset))
    pool, indices = ds.pools["test"], ds.indices["test"]
    i = int(indices[index % len(indices)])
    return pool.load(i), f"{dataset} test image #{index % len(indices)} ({ds.classes[pool.labels[i]]})"


@st.cache_data(show_spinner="Running the image through the network...", max_entries=16)
def activations(backbone: str, weights: str, image_size: int, classes: int, _image, image_key: str):
    _, model = measured(backbone, weights, image_size, classes)
    preprocessing = Preprocessing(data_config(model, image_size))
    pixels = preprocessing.pixels(_image)
    stages = stage_activations(copy.deepcopy(model), preprocessing.normalize(pixels.unsqueeze(0)).contiguous())
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()), stages


# A link from a record or a script (?backbone=NAME&image_size=N&classes=C&strategy=fine-tune&stages=K) fills the
# choices once, within the bounds a link gets on any server (tlcore.server.limits); the rest is named and defaulted.
query = st.query_params
stored_backbones = {r["backbone"] for r in default_store().records()}
LINK_KEYS = {"backbone": "an_backbone", "image_size": "an_image_size", "classes": "an_classes",
             "strategy": "an_strategy", "stages": "an_stages"}
if any(query.get(param) for param in LINK_KEYS) and "an_linked" not in st.session_state:
    st.session_state["an_linked"] = True
    chosen, st.session_state["an_link_warnings"] = anatomy_link(
        {param: query[param] for param in LINK_KEYS if query.get(param)}, stored_backbones)
    for param, value in chosen.items():
        st.session_state[LINK_KEYS[param]] = value
st.title("Anatomy: what each strategy trains")
st.caption("A CNN is a stack: a stem, stages that extract edges, then textures, then parts, pooling and a linear "
           "head. The strategies differ only in which part of that stack stays frozen. Groups are timm's own "
           "(`group_matcher`), the ones fine-tuning counts from the top; what is frozen is read off the model after "
           "the engine's own freezing.")
for warning in st.session_state.get("an_link_warnings", []):
    st.warning(warning)

left, right = st.columns(2)
with left:
    backbone, weights = backbone_and_weights("an_", served_backbones(stored_backbones) if read_only() else None)
with right:  # a read-only demo builds only bounded networks; a writable server's form is its user's own choice
    top_size, top_classes = (max_image_size(backbone), MAX_CLASSES) if read_only() else (1024, 100_000)
    for key, top in (("an_image_size", top_size), ("an_classes", top_classes)):
        if st.session_state.get(key, 0) > top:  # e.g. a smaller backbone chosen after a larger one
            st.session_state[key] = top
    image_size = int(st.number_input("Image size (px)", 16, top_size, 48, step=16, key="an_image_size",
                                     help="48 px is what the built-in Fashion-MNIST runs at; a ViT needs its own "
                                     "input size (e.g. 160 for test_vit)."
                                     + (f" Up to {top_size} px here, {backbone}'s pretrained size." if read_only()
                                        else "")))
    classes = int(st.number_input("Classes (the head's outputs)", 2, top_classes, 10, key="an_classes"))

shown_weights = weights if weights in ("pretrained", "none") else "none"
try:
    anatomy, model = measured(backbone, shown_weights, image_size, classes)
except TlcoreError as exc:
    show_error(exc)
    st.stop()

c1, c2, c3 = st.columns([2, 2, 2])
kind = c1.radio("Strategy", list(KINDS), horizontal=True, key="an_strategy")
stages, bn_policy = 2, None
if kind == "fine-tune":
    options = list(range(1, anatomy.num_stages + 1))
    if st.session_state.get("an_stages", options[0]) not in options:  # a link's K beyond this backbone's depth
        st.session_state["an_stages"] = options[-1]
    stages = c2.select_slider("Top stages to fine-tune (K)", options, value=min(2, anatomy.num_stages),
                              key="an_stages", help=f"{anatomy.num_stages} = all")
    bn_policy = c3.radio("BatchNorm in trained stages", ["frozen", "train"], horizontal=True, key="an_bn",
                         help="frozen: running statistics stay (the fine-tune default); train: they update")
view = strategy_view(model, anatomy, make_strategy(kind, stages=stages, bn_policy=bn_policy))

st.plotly_chart(anatomy_figure(anatomy, view), key="an_diagram")
st.caption(f"{anatomy.total_params:,} parameters, {anatomy.total_macs:,} multiply-adds an image "
           f"(torch's FlopCounterMode); **{view.trainable_params:,}** train under {view.label}. Orange: trainable; "
           "grey-blue: frozen; under a box, whether its BatchNorm statistics update.")
if shown_weights != weights:  # a local weights file: the diagram and the maps are drawn with random weights
    file_name = weights.replace("\\", "/").rsplit("/", 1)[-1]  # never the server's path
    st.info(f"Weights: the local file{f' `{file_name}`' if file_name else ''} is not loaded for the diagram or for "
            "what each stage sees: both show random weights (parameters, shapes and multiply-adds do not depend on "
            "weights). The layer-wise probe below uses the file.", icon=":material/info:")

# What each stage sees, right under the diagram: the figure first, its image picker below it.
seen = st.container()
s1, s2, s3 = st.columns([2, 3, 1])
sample_kind = s1.radio("Sample image", ["A test image", "Upload an image"], horizontal=True, key="an_sample_kind")
image, image_name, image_key = None, "", ""
try:
    if sample_kind == "A test image":
        ready = [n for n in BUILTIN_DATASETS if builtin_available(n) is None]
        sample_set = s2.selectbox("From", ready, key="an_sample_dataset")
        index = int(s3.number_input("Image #", 0, 9999, 0, key="an_sample_index"))
        image, image_name = test_image(sample_set, index)
        image_key = f"{sample_set}#{index}"
    else:
        upload = s2.file_uploader("An image", type=sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS),
                                  key="an_sample_upload")
        if upload is not None:
            data = upload.getvalue()
            image = Preprocessing(data_config(model, image_size)).open(upload)  # named in its messages
            image_name, image_key = upload.name, f"upload:{hashlib.sha256(data).hexdigest()}"
except TlcoreError as exc:
    show_error(exc, s2)
if image is not None:
    pixels, stages_seen = activations(backbone, shown_weights, image_size, classes, image, image_key)
    seen.plotly_chart(activations_figure(pixels, stages_seen, view, f"What each stage sees in {image_name} at "
                                         f"{image_size} px: its 3 strongest channels (mean positive activation)"),
                      key="an_activations")
    seen.caption("The stem's strongest channels follow colours, brightness and edges on a fine grid; later stages "
                 "respond to larger parts on a coarser one. Each map is scaled to its channel's own maximum; the "
                 f"column titles say whether this strategy trains that stage. Weights: {anatomy.weights}"
                 + ("." if anatomy.weights != "random initialisation" else
                    " (no pretrained weights here: these are untrained filters)."))

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
        per_class = int(st.number_input("Training images per class (0 = all)", 0, 100_000, PROBE_PER_CLASS,
                                            key="an_per_class"))
        random_weights = st.checkbox("Also the same architecture with random weights", True, key="an_random")
    result = computed_on_click(st.button("Run the probe", type="primary", key="an_probe"), "an_inputs",
                               lambda: (data.resolve(), backbone, require_weights(weights), per_class, image_size,
                                        random_weights), probed)
    if result is not None:
        probe_results(result, "an_probe")
stored = query.get("probe")
if stored and not st.session_state.get("an_inputs"):  # a link from a stored probe (History, a share link)
    record = default_store().record(stored)
    if record is None or record["kind"] != "probe":
        st.warning(f"No stored probe '{stored}' here.")
    else:
        st.caption(f"Stored probe {stored} (a link from History or a share link):")
        probe_results(probe_from_record(record), "an_stored")
