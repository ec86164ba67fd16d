"""Widgets shared by the pages: where the images come from, which backbone and weights to use, the job queue in the
sidebar, the dataset card. Layout only; the values are handed to tlcore."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Optional

import streamlit as st

from tlcore.core.environment import data_roots, hub_reachable, offline_by_setting, read_only
from tlcore.core.errors import TlcoreError
from tlcore.data.builtin import BUILTIN_DATASETS, builtin_available
from tlcore.data.card import dataset_card
from tlcore.data.load import parse_dataset
from tlcore.data.revision import list_revisions
from tlcore.data.uploads import extract_zip, skipped_files
from tlcore.engine.backbone import backbone_catalog
from tlcore.engine.weights import PACKAGED_WEIGHTS
from tlcore.experiments.defaults import DEFAULT_BACKBONE, DEFAULT_DATASET
from tlcore.records.store import default_store
from tlcore.server.incidents import redact_paths, visitors_are_remote
from tlcore.server.jobs import ACTIVE, default_queue
from tlcore.views.text import dataset_display


@st.cache_resource
def job_queue():
    """The process-wide job queue, shared by every session (jobs are told apart by id)."""
    return default_queue()


def visible(text: str) -> str:
    """A message as this server may show it: on a server that others reach, with server paths replaced."""
    return redact_paths(text) if visitors_are_remote(st.get_option("server.address")) else text


def show_error(exc: Exception | str, where=st) -> None:
    """A refusal or failure, said on the page (`where`: st or a column) without server paths for remote visitors."""
    where.error(visible(str(exc)))


def submit_once(queue, config, label: str, key: str) -> str:
    """Queue `config` unless this session's last job under `key` had the same config and is still queued or running
    (a double click, or a click while the page reruns): then that job."""
    same = json.dumps(config.to_dict(), sort_keys=True, default=str)
    last = st.session_state.get(f"{key}_submitted")
    if last and last[0] == same and (queue.get(last[1]) or {}).get("status") in ACTIVE:
        return last[1]
    job_id = queue.submit(config, label=label, session=session_id())
    st.session_state[f"{key}_submitted"] = (same, job_id)
    return job_id


def id_from_link(name: str, prefix: str, what: str, check=str.isalnum) -> str:
    """An id from the link's query (or this session's `prefix + name`); a value that is not one (`check`) is refused
    with a warning that does not echo it, and gives ''. `what` names where stored ones open."""
    value = st.query_params.get(name) or st.session_state.get(f"{prefix}{name}") or ""
    if value and not check(value):
        st.warning(f"The link's '{name}' is not a record id; open {what} from the History page.")
        return ""
    return value


def session_id() -> str:
    """This browser session, for the per-session queue limit."""
    if "tlcore_session" not in st.session_state:
        st.session_state["tlcore_session"] = uuid.uuid4().hex
    return st.session_state["tlcore_session"]


@st.cache_data(ttl=600, show_spinner=False)
def catalog() -> list[dict]:
    """Names and where their weights would come from; no network check (that waits until hub weights are asked for)."""
    return backbone_catalog()


@dataclass
class DataChoice:
    kind: str
    builtin: Optional[str] = None
    folder: str = ""
    upload: object = None
    revision: Optional[str] = None  # a stored revision of the built-in data or folder (tlcore.data.revision)

    def resolve(self) -> str:
        """The dataset argument for tlcore; extracts an upload (safely, see tlcore.uploads)."""
        if self.kind == "Built-in":
            return self.builtin + (f"@{self.revision}" if self.revision else "")
        if self.kind == "Folder on this server":
            if not self.folder.strip():
                raise TlcoreError("Enter the path of a folder with one sub-folder per class.")
            return self.folder.strip() + (f"@{self.revision}" if self.revision else "")
        if self.upload is None:
            raise TlcoreError("Choose a .zip file first.")
        with st.spinner("Extracting the archive..."):
            keep = default_store().dataset_paths()  # uploads that stored records use stay, the trash's too
            return str(extract_zip(self.upload.getvalue(), self.upload.name, keep=keep))


def data_source(prefix: str = "") -> DataChoice:
    """Built-in data, a folder under the data roots, or an upload; a read-only demo offers built-in data only."""
    sources = ["Built-in"] + ([] if read_only() else ["Folder on this server", "Upload a .zip"])
    kind = st.radio("Dataset source", sources, horizontal=True, key=f"{prefix}source_kind")
    choice = DataChoice(kind)
    if kind == "Built-in":
        names = list(BUILTIN_DATASETS)
        choice.builtin = st.selectbox("Built-in dataset", names, index=names.index(DEFAULT_DATASET),
                                      key=f"{prefix}builtin",
                                      format_func=lambda n: n + ("" if builtin_available(n) is None else
                                                                 f"  ({builtin_available(n)})"))
        st.caption(BUILTIN_DATASETS[choice.builtin].description)
    elif kind == "Folder on this server":
        roots = ", ".join(str(r) for r in data_roots())
        choice.folder = st.text_input("Folder path", key=f"{prefix}folder",
                                      help="One sub-folder per class, optionally inside train/ val/ test/ folders. "
                                      f"This server reads folders under: {roots}")
        st.caption(f"Folders under: {roots} (TLCORE_DATA_ROOTS).")
    else:
        choice.upload = st.file_uploader("A .zip of class folders", type=["zip"], key=f"{prefix}upload")
        st.caption(f"Up to {st.get_option('server.maxUploadSize')} MB (uploads are held in memory while they "
                   "arrive). Larger datasets: put the folder under the data roots and choose 'Folder on this "
                   "server'.")
        return choice
    source = choice.builtin if kind == "Built-in" else choice.folder.strip()
    revisions = {r.id: r for r in list_revisions(source)} if source else {}
    if revisions:
        chosen = st.selectbox("Version", ["original", *revisions], key=f"{prefix}revision",
                              format_func=lambda r: "original (every image, labels as in the files)" if
                              r == "original" else f"revision {r}: {len(revisions[r].exclude)} excluded, "
                              f"{len(revisions[r].relabel)} relabelled" + (f" ({revisions[r].note})" if
                                                                           revisions[r].note else ""),
                              help="Revisions made on the Data page (or with tlcore health --apply): images "
                              "excluded or relabelled without touching the files.")
        choice.revision = None if chosen == "original" else chosen
    return choice


def _warn_if_hub_unreachable(backbone: str, source: str) -> None:
    """Pretrained weights that would be downloaded: look the hub up now (a connection of at most 2 s, its answer kept a
    minute) and say so when it fails, before a run does."""
    if source not in ("hub", "packaged-missing") or hub_reachable():
        return
    why = "TLCORE_OFFLINE or HF_HUB_OFFLINE is set" if offline_by_setting() else "no connection to huggingface.co"
    others = "a packaged backbone (" + ", ".join(PACKAGED_WEIGHTS) + "), random weights" + (
        "" if read_only() else " or a local file")
    st.warning(f"The Hugging Face hub is unreachable (offline: {why}), so {backbone}'s pretrained weights cannot be "
               f"downloaded now. Use {others}.")


def backbone_and_weights(prefix: str = "", only: Optional[list[str]] = None) -> tuple[str, str]:
    """The timm model name and the weights argument ('pretrained', 'none' or a path); `only` limits the backbones
    offered (a read-only demo's)."""
    rows = [r for r in catalog() if only is None or r["name"] in only]
    rows += [{"name": n, "label": n, "weights": "none"} for n in (only or []) if n not in {r["name"] for r in rows}]
    labels = {r["name"]: r["label"] for r in rows}
    sources = {r["name"]: r["weights"] for r in rows}
    names = list(labels)
    backbone = st.selectbox("Backbone (type to search timm's models)", names, key=f"{prefix}backbone",
                            index=names.index(DEFAULT_BACKBONE) if DEFAULT_BACKBONE in names else 0,
                            format_func=lambda n: labels[n])
    weights_choice = st.radio("Weights", ["pretrained", "none (random init)"] + ([] if read_only() else
                                                                                ["local file"]),
                              horizontal=True, key=f"{prefix}weights")
    if weights_choice == "local file":
        path = st.text_input("Weights file on the server (.pth / .safetensors)", key=f"{prefix}weights_path")
        return backbone, path.strip() or ""
    if weights_choice.startswith("none"):
        st.warning("Random weights: feature extraction and fine-tuning will start from an untrained backbone.")
        return backbone, "none"
    _warn_if_hub_unreachable(backbone, sources.get(backbone, "none"))
    return backbone, "pretrained"


def computed_on_click(clicked: bool, key: str, inputs, compute):
    """A button that starts a cached computation: on a click, `inputs()` is resolved (a TlcoreError is shown) and kept
    under `key` for the session, so later reruns show the result again from `compute`'s cache. Returns
    `compute(*kept inputs)`, or None when nothing was asked yet or an error was shown."""
    if clicked:
        try:
            st.session_state[key] = inputs()
        except TlcoreError as exc:
            show_error(exc)
    kept = st.session_state.get(key)
    if not kept:
        return None
    try:
        return compute(*kept)
    except TlcoreError as exc:
        show_error(exc)
        return None


def require_weights(weights: str) -> str:
    if not weights:
        raise TlcoreError("Enter the path of the weights file.")
    return weights


def job_sidebar(queue) -> None:
    """The queued and running jobs, in the sidebar, redrawn every second as a job's live panel is, from the queue's
    one state (JobQueue.active), so the sidebar never says 'queued' of a job the page shows running."""
    with st.sidebar:
        _job_list(queue)


@st.fragment(run_every=1.0)
def _job_list(queue) -> None:
    st.subheader("Job queue")
    active = queue.active()
    if not active:
        st.caption("No jobs queued or running.")
    for job in active:
        where = "running" if job["status"] == "running" else f"queued #{job['position']}"
        st.write(f"`{job['id']}` {job['kind']} {where}: {job['label']}")


@st.cache_data(show_spinner="Reading every image: counts, sizes, duplicates, overlaps...", max_entries=8)
def _card(dataset: str):
    return dataset_card(parse_dataset(dataset))


def dataset_card_panel(data: DataChoice, key: str) -> None:
    """The dataset card of the chosen data, on demand (not in a read-only demo: it reads every image)."""
    if read_only() or not st.toggle("Show the dataset card", key=f"{key}card",
                                    help="Class counts, sample images, image sizes, skipped files, duplicates and "
                                         "images in both training and val/test."):
        return
    try:
        dataset = data.resolve()
        card = _card(dataset)
    except TlcoreError as exc:
        show_error(exc)
        return
    st.markdown(f"**{dataset_display(card.name)}**: {len(card.classes)} classes")
    counts = card.counts.assign(total=card.counts.sum(axis=1))  # every split visible: the table gets the full width
    st.dataframe(counts, key=f"{key}card_counts", width="stretch")
    if not card.sizes.empty:
        st.dataframe(card.sizes, key=f"{key}card_sizes", width="stretch")
    for name, images in list(card.samples.items())[:20]:
        cols = st.columns(len(images) + 1)
        cols[0].caption(name)
        for col, img in zip(cols[1:], images):
            col.image(img, width="stretch")
    skipped = skipped_files(dataset) if data.kind == "Upload a .zip" else []
    for title, items in (("Skipped files", [f"{p['path']}: {p['reason']}" for p in card.problems]),
                         ("Left out of the upload (not images, or not decodable)", skipped),
                         ("Exact duplicates (same content)", [" = ".join(g) for g in card.duplicates]),
                         ("In training and in val/test", [f"{a} = {b}" for a, b in card.train_test_overlap])):
        if items:
            with st.expander(f"{title}: {len(items)}"):
                st.write("\n".join(f"- {i}" for i in items[:200]))
        else:
            st.caption(f"{title}: none")
    for note in card.notes:
        st.warning(note)
