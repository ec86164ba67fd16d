""""Try it": a stored comparison's trained models on test images or uploaded ones, side by side, each with its top-3
classes and where it looks (class-activation map); or one model on many images, a .zip or a folder, as a table with
a CSV (ui.use_model); downloads of each model (bundle, card, ONNX, TorchScript, safetensors). Allowed in the
read-only demo too: it browses a result (uploads keep the per-image pixel limit and the count limit)."""

from __future__ import annotations

import streamlit as st
from PIL import Image

from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.core.results import ComparisonResult
from tlcore.data.dataset import IMAGE_EXTENSIONS, DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.deploy.explain import activation_map
from tlcore.deploy.load import load_model
from tlcore.deploy.predict import predict_images
from ui.use_model import model_downloads, predict_many
from ui.widgets import show_error

MAX_IMAGES = 16
TEST_IMAGES, UPLOAD_IMAGES = "Test images", f"Upload (up to {MAX_IMAGES})"
MANY_IMAGES, MANY_IMAGES_READ_ONLY = "Many images: a .zip or a folder", "Many images: a .zip"


@st.cache_resource(max_entries=12, show_spinner="Loading the trained model...")
def _model(run_id: str):
    return load_model(run_id)  # eval only, never trained further: safe to share between sessions


@st.cache_data(max_entries=8, show_spinner="Loading test images...")
def _test_images(dataset: dict, seed: int, indices: tuple[int, ...]) -> list[tuple[str, Image.Image]]:
    spec = DatasetSpec(**{k: v for k, v in dataset.items() if k in DatasetSpec.__dataclass_fields__})
    ds = load_dataset(spec, seed=seed)
    pool = ds.pools["test"]
    return [(f"test #{n}: {ds.classes[pool.labels[i]]}", pool.load(int(i))) for n, i in enumerate(indices)]


def _images(result: ComparisonResult, key: str, source: str, preprocessing) -> list[tuple[str, Image.Image]]:
    if source == TEST_IMAGES:
        count = st.slider("How many test images", 1, 8, 4, key=f"try_n_{key}")
        run = result.runs[0]
        try:
            return _test_images(run.dataset, run.seed, tuple(result.test_indices[:count]))
        except TlcoreError as exc:
            st.info(f"The test images are not available here: {exc}")
            return []
    files = st.file_uploader("Images", type=sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS), key=f"try_up_{key}",
                             accept_multiple_files=True) or []
    if len(files) > MAX_IMAGES:
        st.warning(f"{len(files)} images given; the first {MAX_IMAGES} are used.")
    images = []
    for f in files[:MAX_IMAGES]:
        try:
            images.append((f.name, preprocessing.open(f)))  # an UploadedFile: its name is in the messages
        except TlcoreError as exc:
            show_error(f"{f.name}: {exc}")
    return images


def _side_by_side(models: dict, images: list[tuple[str, Image.Image]]) -> None:
    """Each image, then each model's top 3 and where it looks."""
    for name, image in images:
        cols = st.columns(len(models) + 1)
        cols[0].image(image, caption=name, width="stretch")
        for col, (strategy, (run, model, preprocessing)) in zip(cols[1:], models.items()):
            predictions = predict_images(model, preprocessing, [image], model.tlcore_config.classes)
            top = predictions.frame(top_k=3).iloc[0]
            col.image(activation_map(model, preprocessing, image, predictions.top1[0]), width="stretch",
                      caption=f"{strategy}: where it looks")
            col.markdown("\n".join(f"{rank}. **{top[f'class_{rank}']}** {top[f'probability_{rank}']:.1%}"
                                   for rank in range(1, min(3, len(model.tlcore_config.classes)) + 1)))


def try_it(result: ComparisonResult, key: str) -> None:
    st.subheader("Try it")
    models = {}
    for run in result.runs:
        if run.status != "completed":
            continue
        try:
            models[run.strategy] = (run, *_model(run.run_id))
        except TlcoreError as exc:
            st.caption(f"{run.strategy}: {exc}")
    if not models:
        st.caption("This record has no saved model (it was stored before tlcore kept trained models): run it again "
                   "to try it on images.")
        return
    many = MANY_IMAGES_READ_ONLY if read_only() else MANY_IMAGES
    source = st.radio("Images", [TEST_IMAGES, UPLOAD_IMAGES, many], horizontal=True, key=f"try_src_{key}")
    if source == many:
        predict_many(models, key)
    else:
        _side_by_side(models, _images(result, key, source, next(iter(models.values()))[2]))
    with st.expander("Download the models"):
        model_downloads(result, models, key)
        st.caption("Or from a shell: `python -m tlcore predict --run <id> images/` and `python -m tlcore export --run "
                   "<id> --format onnx|torchscript|safetensors --out model/`.")
