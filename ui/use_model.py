"""Using a comparison's models from the dashboard: predict a .zip of images (or a folder on a writable server) with
one of them, with progress, a sortable table and a CSV holding the same rows as `python -m tlcore predict`; and
download each model as a bundle, a model card, or exported as ONNX, TorchScript or safetensors with model.json and
MODEL_CARD.md (the files `python -m tlcore export` writes). Layout only; the work is tlcore.deploy's."""

from __future__ import annotations

import io
import time
import zipfile
from functools import partial

import pandas as pd
import streamlit as st

from tlcore.core.environment import data_roots, read_only
from tlcore.core.errors import TlcoreError
from tlcore.core.results import ComparisonResult
from tlcore.deploy.card import model_card
from tlcore.deploy.export import FORMATS, export_archive, missing_packages
from tlcore.deploy.images import server_folder_images, zip_images
from tlcore.deploy.predict import Predictions, predict_named
from tlcore.deploy.skipped import summarize_skipped
from tlcore.records.models import CONFIG, WEIGHTS, find_model
from ui.widgets import show_error

READ_ONLY_ZIP_IMAGES = 200  # a public demo: a short wait for a visitor, little CPU taken from the others
ZIP_IMAGES = 5_000  # an upload is held in memory (server.maxUploadSize) while it is read
FOLDER_IMAGES = 20_000  # larger sets: `python -m tlcore predict`, which is not tied to a browser session
FORMAT_LABELS = {"onnx": "ONNX", "torchscript": "TorchScript", "safetensors": "safetensors"}  # in the order shown
UPLOAD, FOLDER = "Upload a .zip", "Folder on this server"


# ------------------------------------------------------------------------------------------------------- downloads
def _bundle(run_id: str, card: str) -> bytes:
    folder = find_model(run_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.write(folder / WEIGHTS, WEIGHTS)
        zf.write(folder / CONFIG, CONFIG)
        zf.writestr("MODEL_CARD.md", card)
    return buffer.getvalue()


@st.cache_data(max_entries=12, show_spinner=False)
def _export(run_id: str, fmt: str) -> bytes:
    """An export as a .zip, made once per run and format (a rerun, or a second visitor, gets the same bytes)."""
    return export_archive(run_id, fmt)


def _formats() -> list[str]:
    """The export formats this server can write: ONNX only with its optional packages."""
    return [fmt for fmt in FORMAT_LABELS if fmt in FORMATS and not missing_packages(fmt)]


def _say_missing_onnx() -> None:
    missing = missing_packages("onnx")
    if missing:
        st.info(f"ONNX export needs {' and '.join(missing)}, which are not installed where this dashboard runs: "
                "`pip install -r requirements-export.txt` adds them (with onnxruntime, to check the export); then "
                "restart the dashboard. TorchScript and safetensors need nothing more.")


def model_downloads(result: ComparisonResult, models: dict, key: str) -> None:
    """For each model: its bundle, its card, and each export format as a .zip made when it is clicked."""
    formats = _formats()
    for strategy, (run, model, _) in models.items():
        card = model_card(model.tlcore_config, run, result.dataset)
        st.markdown(f"**{strategy}** (run `{run.run_id}`)")
        cols = st.columns(2 + len(formats))
        cols[0].download_button("Bundle (.zip)", _bundle(run.run_id, card), f"tlcore-{run.run_id}.zip",
                                "application/zip", key=f"try_zip_{key}_{run.run_id}",
                                help=f"{strategy}: model.safetensors as tlcore saved it, model.json and MODEL_CARD.md; "
                                "`tlcore.load_model` reads it")
        cols[1].download_button("Model card (.md)", card, f"MODEL_CARD-{run.run_id}.md", "text/markdown",
                                key=f"try_card_{key}_{run.run_id}")
        for col, fmt in zip(cols[2:], formats):
            col.download_button(f"{FORMAT_LABELS[fmt]} (.zip)", partial(_export, run.run_id, fmt),
                                f"tlcore-{run.run_id}-{fmt}.zip", "application/zip",
                                key=f"export_{fmt}_{key}_{run.run_id}", on_click="ignore",
                                help=f"{strategy} exported as `python -m tlcore export --format {fmt}` writes it: the "
                                "model, model.json, MODEL_CARD.md and export.json. Made when clicked (ONNX takes a "
                                "few seconds), then kept.")
    _say_missing_onnx()


# ------------------------------------------------------------------------------------------------------ predictions
def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _progress_bar(total: int):
    """A bar and the callback that moves it: images done, images a second, time left."""
    bar = st.progress(0.0, text=f"Predicting {total:,} images...")

    def report(done: int, total: int, seconds: float) -> None:
        rate = done / max(seconds, 1e-9)
        left = (total - done) / rate if rate else 0.0
        bar.progress(min(1.0, done / max(total, 1)), text=f"{done:,} of {total:,} images, {rate:,.0f} images/s, "
                     f"about {_duration(left)} left")

    return bar, report


def _limit_caption(source: str) -> str:
    if source == FOLDER:
        return (f"Up to {FOLDER_IMAGES:,} images, sub-folders included, in a folder under "
                f"{', '.join(map(str, data_roots()))} (TLCORE_DATA_ROOTS).")
    limit = READ_ONLY_ZIP_IMAGES if read_only() else ZIP_IMAGES
    where = "this read-only demo predicts" if read_only() else "this server predicts"
    return (f"Up to {limit:,} images a .zip ({where} at most that many at once; the .zip up to "
            f"{st.get_option('server.maxUploadSize')} MB), each up to 50 megapixels; sub-folders are fine.")


def _images(source: str, upload, folder: str) -> tuple[list, list, str]:
    """The images to predict, the files left out, and what messages call the source."""
    if source == FOLDER:
        images, skipped = server_folder_images(folder, FOLDER_IMAGES)
        return images, skipped, f"'{folder.strip()}'"
    if upload is None:
        raise TlcoreError("Choose a .zip of images first.")
    limit = READ_ONLY_ZIP_IMAGES if read_only() else ZIP_IMAGES
    images, skipped = zip_images(upload, upload.name, limit)  # read in place: no copy of the upload
    return images, skipped, f"'{upload.name}'"


def _run_prediction(model, preprocessing, images: list, skipped: list, where: str) -> Predictions:
    bar, report = _progress_bar(len(images))
    try:
        return predict_named(model, preprocessing, images, skipped, where, progress=report)
    finally:
        bar.empty()


def _model_label(models: dict, strategy: str) -> str:
    run = models[strategy][0]
    return f"{strategy} (test accuracy {run.accuracy:.3f})" if run.accuracy is not None else strategy


def _show_predictions(kept: dict, top_k: int, key: str) -> None:
    result: Predictions = kept["predictions"]
    rate = len(result.paths) / max(kept["seconds"], 1e-9)
    st.success(f"{len(result.paths):,} images of {kept['where']} predicted by {kept['strategy']} (run "
               f"`{kept['run_id']}`) in {kept['seconds']:.1f} s ({rate:,.0f} images/s, reading and decoding "
               "included).")
    if result.skipped:
        st.warning(f"{len(result.skipped):,} file(s) could not be used: {summarize_skipped(result.skipped)}. Each is "
                   "listed below with the reason; fix or replace them and predict again.")
    frame = result.frame(top_k)
    config = {c: st.column_config.NumberColumn(format="%.4f") for c in frame.columns if c.startswith("probability")}
    st.dataframe(frame, hide_index=True, key=f"bulk_table_{key}", column_config=config, width="stretch")
    st.download_button("Download the predictions (CSV)", frame.to_csv(index=False),
                       f"predictions-{kept['run_id']}.csv", "text/csv", key=f"bulk_csv_{key}",
                       help="The same rows as `python -m tlcore predict --run <run id> <folder> --out x.csv`")
    if result.skipped:
        st.dataframe(pd.DataFrame(result.skipped, columns=["file not used", "reason"]), hide_index=True,
                     key=f"bulk_skipped_{key}", width="stretch")


def predict_many(models: dict, key: str) -> None:
    """One model on a .zip of images or a folder on the server: the table, its CSV, and the files not used."""
    what = "a .zip" if read_only() else "a .zip or of a folder on this server"
    st.caption(f"One model on every image of {what}: its top classes with probabilities, the same rows as `python -m "
               "tlcore predict --run <run id> <folder>` gives for that folder. Files are named by their path inside "
               "the .zip or folder (a .zip's single top folder left out).")
    c1, c2, c3 = st.columns([2, 2, 1])
    strategy = c1.selectbox("Model", list(models), key=f"bulk_model_{key}",
                            format_func=partial(_model_label, models))
    source = UPLOAD if read_only() else c2.radio("Images from", [UPLOAD, FOLDER], horizontal=True,
                                                 key=f"bulk_source_{key}")
    classes = len(models[strategy][1].tlcore_config.classes)
    top_k = c3.number_input("Top classes", 1, classes, min(3, classes), key=f"bulk_k_{key}",
                            help="How many classes each row lists, the most probable first")
    upload = folder = None
    if source == UPLOAD:
        upload = st.file_uploader("A .zip of images", type=["zip"], key=f"bulk_zip_{key}")
    else:
        folder = st.text_input("Folder of images on this server", key=f"bulk_folder_{key}")
    st.caption(_limit_caption(source))
    state = f"bulk_result_{key}"
    if st.button("Predict", key=f"bulk_go_{key}", type="primary"):
        run, model, preprocessing = models[strategy]
        try:
            images, skipped, where = _images(source, upload, folder or "")
            started = time.perf_counter()
            predictions = _run_prediction(model, preprocessing, images, skipped, where)
            seconds = time.perf_counter() - started
            st.session_state[state] = {"predictions": predictions, "seconds": seconds, "where": where,
                                       "strategy": strategy, "run_id": run.run_id}
        except TlcoreError as exc:
            st.session_state.pop(state, None)
            show_error(exc)
    if state in st.session_state:
        _show_predictions(st.session_state[state], int(top_k), key)
