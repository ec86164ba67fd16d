""""Try it": a stored comparison's trained models on test images or uploaded ones, side by side, each with its top-3
classes and where it looks (class-activation map); downloads of each model bundle and card. Allowed in the
read-only demo too: it browses a result (uploads keep the per-image pixel limit and the count limit)."""

from __future__ import annotations

import io
import zipfile

import streamlit as st
from PIL import Image

from tlcore.core.errors import TlcoreError
from tlcore.core.results import ComparisonResult
from tlcore.data.dataset import IMAGE_EXTENSIONS, DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.deploy.card import model_card
from tlcore.deploy.explain import activation_map
from tlcore.deploy.load import load_model
from tlcore.deploy.predict import predict_images
from tlcore.records.models import CONFIG, WEIGHTS, find_model
from ui.widgets import show_error

MAX_IMAGES = 16


@st.cache_resource(max_entries=12, show_spinner="Loading the trained model...")
def _model(run_id: str):
    return load_model(run_id)  # eval only, never trained further: safe to share between sessions


@st.cache_data(max_entries=8, show_spinner="Loading test images...")
def _test_images(dataset: dict, seed: int, indices: tuple[int, ...]) -> list[tuple[str, Image.Image]]:
    spec = DatasetSpec(**{k: v for k, v in dataset.items() if k in DatasetSpec.__dataclass_fields__})
    ds = load_dataset(spec, seed=seed)
    pool = ds.pools["test"]
    return [(f"test #{n}: {ds.classes[pool.labels[i]]}", pool.load(int(i))) for n, i in enumerate(indices)]


def _bundle(run_id: str, card: str) -> bytes:
    folder = find_model(run_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.write(folder / WEIGHTS, WEIGHTS)
        zf.write(folder / CONFIG, CONFIG)
        zf.writestr("MODEL_CARD.md", card)
    return buffer.getvalue()


def _images(result: ComparisonResult, key: str, preprocessing) -> list[tuple[str, Image.Image]]:
    source = st.radio("Images", ["Test images", f"Upload (up to {MAX_IMAGES})"], horizontal=True, key=f"try_src_{key}")
    if source == "Test images":
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
    first = next(iter(models.values()))
    images = _images(result, key, first[2])
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
    with st.expander("Download the models"):
        for strategy, (run, model, _) in models.items():
            card = model_card(model.tlcore_config, run, result.dataset)
            c1, c2 = st.columns(2)
            c1.download_button(f"{strategy}: model bundle (.zip)", _bundle(run.run_id, card),
                               f"tlcore-{run.run_id}.zip", "application/zip", key=f"try_zip_{key}_{run.run_id}")
            c2.download_button(f"{strategy}: model card", card, f"MODEL_CARD-{run.run_id}.md", "text/markdown",
                               key=f"try_card_{key}_{run.run_id}")
        st.caption("Or from a shell: `python -m tlcore predict --run <id> images/` and `python -m tlcore export --run "
                   "<id> --format onnx|torchscript|safetensors --out model/`.")
