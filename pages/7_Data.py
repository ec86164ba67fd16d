"""Data page: the dataset card and its data health check (likely label errors and outliers, from the frozen features,
as a background job), galleries to exclude or relabel images, the revision that makes (the files untouched), and the
same comparison before and after it. Layout only: the check, revisions and comparisons come from tlcore."""

import ui.preload  # noqa: F401  first: a deep link on a fresh server runs this page before app.py
from dataclasses import replace

import streamlit as st

from tlcore.advice.health import HealthConfig
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label, parse_dataset
from tlcore.data.revision import is_revision_id, load_revision
from tlcore.engine.strategies import KINDS
from tlcore.experiments.before_after import changes
from tlcore.experiments.config import build_config
from tlcore.experiments.defaults import DEFAULT_SEED, PRESETS
from tlcore.server.jobs import ACTIVE
from tlcore.views.text import dataset_display
from ui.health import COMPARE_PAGE, before_after_table, galleries, health_summary, revision_box, \
    save_revision_button
from ui.navigation import through_app
from ui.results import page_link_to, progress_bars
from ui.widgets import backbone_and_weights, data_source, dataset_card_panel, id_from_link, job_queue, job_sidebar, \
    show_error, submit_once

through_app()  # a deep link on a fresh server: through app.py's navigation

st.set_page_config(page_title="Data · tlcore", page_icon=":material/fact_check:", layout="wide")

st.title("Data: card and health")
st.caption("Before trusting any accuracy: the dataset card (counts, sizes, duplicates, train/test overlap), then a "
           "health check that flags likely label errors and the most atypical images from the frozen features "
           "(no network trained). Exclude or relabel images in the galleries: tlcore stores a revision, never "
           "touching the files, and runs the same comparison before and after.")

queue = job_queue()


def remember(**ids: str) -> None:
    for name, value in ids.items():
        st.session_state[f"dh_{name}"], st.query_params[name] = value, value


health_id = id_from_link("health", "dh_", "stored checks")
revision_id = id_from_link("revision", "dh_", "stored checks", is_revision_id)
before_id, after_id = (id_from_link(n, "dh_", "stored comparisons") for n in ("before", "after"))

if read_only():
    st.info("This is a read-only demo (TLCORE_READ_ONLY=1): it shows stored health checks (open one from the History "
            "page or a share link). Nothing runs here.")
else:
    with st.expander("Check your data", expanded=not health_id):
        left, right = st.columns(2)
        with left:
            data = data_source("dh_")
            dataset_card_panel(data, "dh_")
        with right:
            backbone, weights = backbone_and_weights("dh_")
            per_class = st.number_input("Training images per class (0 = all)", 0, 100_000, 0, key="dh_per_class",
                                        help="Val and test are always checked whole.")
            image_size = st.number_input("Image size in pixels (0 = automatic, as a comparison picks it)", 0, 512, 0,
                                         step=16, key="dh_image_size")
            seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=DEFAULT_SEED, key="dh_seed")
        if st.button("Check data health", type="primary", key="dh_check"):
            try:
                dataset = data.resolve()
                config = HealthConfig(parse_dataset(dataset), backbone, weights, int(per_class) or None,
                                      int(image_size) or None, int(seed))
                health_id = submit_once(queue, config, f"health · {dataset_display(dataset)}", "dh_check")
                remember(health=health_id)
                for name in ("revision", "before", "after"):
                    st.session_state.pop(f"dh_{name}", None)
                    st.query_params.pop(name, None)
                revision_id = before_id = after_id = ""
            except TlcoreError as exc:
                show_error(exc)

job_sidebar(queue)


@st.fragment(run_every=1.0)
def live_panel(job_ids: tuple[str, ...], what: str) -> None:
    snaps = [queue.get(j) for j in job_ids]
    if all(s is None or s["status"] not in ACTIVE for s in snaps):
        st.rerun()  # finished: render the results with the whole page
    for job_id, snap in zip(job_ids, snaps):
        st.subheader(f"{what} {job_id}: {snap['status']}")
        if snap["status"] == "queued":
            position = next((j["position"] for j in queue.active() if j["id"] == job_id), 0)
            st.info(f"Queued (position {position}). One job runs at a time on this machine.")
        progress_bars(snap, snap["strategies"])
        if snap["status"] in ACTIVE and st.button("Cancel", key=f"cancel_{job_id}"):
            queue.cancel(job_id)
            st.toast("Cancelling after the current batch...")


revision = None
if revision_id:
    try:
        revision = load_revision(revision_id)
    except TlcoreError as exc:
        show_error(exc)

report = None
if health_id:
    snap = queue.get(health_id)
    if snap is None or snap["kind"] != "health":
        st.warning("No health check with this id here. Check the link, or open the History page.")
    elif snap["status"] in ACTIVE:
        live_panel((health_id,), "Health check")
    else:
        st.subheader(f"Data health {health_id}: {snap['status']}")
        if snap.get("error"):
            show_error(f"This check did not finish: {snap['error']}")
        report = snap["result"]
        if report is not None:
            health_summary(report)
            actions = galleries(report, f"dh_{health_id}", revision)
            if not read_only():
                stored = save_revision_button(report, actions, f"dh_{health_id}")
                if stored is not None:
                    revision, revision_id = stored, stored.id
                    remember(revision=revision_id)
                    for name in ("before", "after"):
                        st.session_state.pop(f"dh_{name}", None)
                        st.query_params.pop(name, None)
                    before_id = after_id = ""

if revision is not None:
    st.divider()
    st.subheader("Before and after")
    checked = report.source if report is not None else {}
    sub_task = tuple(checked["classes"]) if checked.get("classes") else None
    revised = revision_box(revision, sub_task)
    if not read_only():
        c1, c2, c3 = st.columns([2, 2, 1])
        preset = c1.radio("Comparison preset", list(PRESETS), index=0, horizontal=True, key="dh_preset",
                          format_func=lambda p: p.capitalize())
        strategies = c2.multiselect("Strategies", list(KINDS), default=["feature-extraction", "fine-tune"],
                                    key="dh_strategies")
        checked_size = (report.per_class or 0) if report is not None else (PRESETS[preset].per_class or 0)
        per_class = c3.number_input("Training images per class (0 = all)", 0, 100_000, checked_size,
                                    key="dh_ba_per_class", help="Default: the images the check looked at. A subset "
                                    "on the revision is the original's subset less the excluded images.")
        st.caption("The same comparison (preset, strategies, subset, seed, the check's backbone and image size) on "
                   "the original data and on the revision, each stored as its own comparison. Excluded images that "
                   "are not in the subset change nothing.")
        if st.button("Compare before and after", type="primary", key="dh_before_after", disabled=not strategies):
            try:
                after_spec = parse_dataset(revised)
                extra = ({"backbone": report.backbone, "image_size": report.image_size, "seed": report.seed}
                         if report is not None else {})
                after = build_config(preset, dataset=after_spec, per_class=int(per_class) or "all",
                                     strategies=strategies, **extra)
                before = replace(after, dataset=replace(after.dataset, revision=None))
                shown = dataset_display(dataset_label(DatasetSpec(revision.source, classes=sub_task)))
                before_id = submit_once(queue, before, f"before · {shown}", "dh_before")
                after_id = submit_once(queue, after, f"after · {shown}@{revision.id}", "dh_after")
                remember(before=before_id, after=after_id)
            except TlcoreError as exc:
                show_error(exc)

if before_id and after_id:
    snaps = {j: queue.get(j) for j in (before_id, after_id)}
    if any(s is None or s["kind"] != "comparison" for s in snaps.values()):
        st.warning("The link's comparisons are not here. Check the link, or open the History page.")
    elif any(s["status"] in ACTIVE for s in snaps.values()):
        live_panel((before_id, after_id), "Comparison")
    else:
        results = [snaps[before_id]["result"], snaps[after_id]["result"]]
        if any(r is None for r in results):
            show_error("One of the two comparisons has no results: "
                       + "; ".join(f"{j} {s['status']}" + (f" ({s['error']})" if s.get("error") else "")
                                   for j, s in snaps.items()))
        else:
            st.subheader("What the revision changed")
            before_after_table(changes(*results), f"dh_{after_id}")
            for job_id, what in ((before_id, "before (the original data)"), (after_id, "after (the revision)")):
                page_link_to(COMPARE_PAGE, f"The comparison {what}: {job_id}", None, {"job": job_id})
