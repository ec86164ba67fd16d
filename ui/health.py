"""Data health panels: the counts, the galleries of likely label errors and outliers (pictures beside labels, with an
action to choose for each), the revision they make, and the change a revision made per strategy. Layout only; the
check, the revision and the comparison come from tlcore."""

from __future__ import annotations

import json
from typing import Optional

import streamlit as st

from tlcore.advice.health import HealthReport, apply_fixes
from tlcore.core.environment import read_only
from tlcore.core.errors import TlcoreError
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label
from tlcore.data.revision import Revision
from tlcore.experiments.before_after import BeforeAfter
from tlcore.views.health import changes_from, changes_table, checked_dataset, duplicate_gallery, gallery, \
    issue_counts
from tlcore.views.report import health_report_html
from tlcore.views.text import dataset_display
from ui.widgets import show_error, visible

COMPARE_PAGE = "pages/1_Compare.py"
DATA_PAGE = "pages/7_Data.py"


PER_ROW, PAGE = 6, 24


@st.cache_data(show_spinner="Reading the flagged images back...", max_entries=8, ttl=3600)
def _galleries(report_dict: dict) -> tuple[list[dict], list[dict], list[dict], list[dict], list[dict], bool]:
    report = HealthReport.from_dict(report_dict)
    dataset = checked_dataset(report)
    return (gallery(report, dataset), gallery(report, dataset, "label doubts"), gallery(report, dataset, "outliers"),
            gallery(report, dataset, "image issues"), duplicate_gallery(report, dataset), dataset is not None)


@st.cache_data(show_spinner=False, max_entries=8, ttl=3600)
def _report_html(report_dict: dict) -> str:
    return health_report_html(HealthReport.from_dict(report_dict))


def health_summary(report: HealthReport) -> None:
    checked = sum(report.checked_images.values())
    st.markdown(f"**{dataset_display(report.dataset)}**: {checked:,} images checked "
                f"({', '.join(f'{n:,} {s}' for s, n in report.checked_images.items())}) with {report.backbone} at "
                f"{report.image_size} px, {report.folds}-fold out-of-fold probabilities of the feature-extraction "
                f"head and the nearest images' labels (cleanlab), seed {report.seed}; {report.seconds:.1f} s"
                + (" (every feature from the cache)." if not report.rows_computed else "."))
    st.dataframe(issue_counts(report), hide_index=True, key=f"health_counts_{report.record_id}")
    c1, c2 = st.columns(2)
    c1.download_button("HTML report", visible(_report_html(report.to_dict())), f"health-{report.record_id}.html",
                       "text/html", key=f"health_html_{report.record_id}")
    c2.download_button("Report as JSON", visible(json.dumps(report.to_dict(), indent=1)),
                       f"health-{report.record_id}.json",
                       "application/json", key=f"health_json_{report.record_id}")


def _action_label(action: str) -> str:
    return f"relabel as {action.partition(':')[2]}" if action.startswith("relabel:") else action


def _choose(key: str, name: str, options: list[str]) -> None:
    """One image's action: kept in `st.session_state[key]` (every page of the gallery, across reruns)."""
    chosen = st.session_state[key]
    widget = f"{key}::{name}"

    def keep_choice() -> None:
        chosen[name] = st.session_state[widget]

    current = chosen.get(name, "keep")
    st.selectbox(f"Action for {name}", options, index=options.index(current) if current in options else 0,
                 key=widget, format_func=_action_label, label_visibility="collapsed", on_change=keep_choice,
                 disabled=read_only())


def _cards(items: list[dict], key: str, kind: str, classes: list[str], elsewhere: frozenset = frozenset()) -> None:
    pages = max(1, -(-len(items) // PAGE))
    page = st.number_input(f"Page (of {pages}, {PAGE} images each)", 1, pages, 1, key=f"{key}_page_{kind}") \
        if pages > 1 else 1
    shown = items[(page - 1) * PAGE:page * PAGE]
    for start in range(0, len(shown), PER_ROW):
        for col, item in zip(st.columns(PER_ROW), shown[start:start + PER_ROW]):
            with col, st.container(border=True):
                if item["picture"]:
                    st.image(item["picture"], width=96)
                if kind in ("label issues", "label doubts"):
                    st.markdown(f"**{item['given']}** → {item['suggested']}  \np(given) {item['confidence']:.3f}")
                    relabel = [f"relabel:{c}" for c in [item["suggested"], *classes] if c != item["given"]]
                    options = ["keep", "exclude", *dict.fromkeys(relabel)]
                elif kind == "outliers":
                    st.markdown(f"**{item['given']}**  \nscore {item['score']:.3f}")
                    options = ["keep", "exclude"]
                else:
                    detail = (f"{item['issue'].replace('_', ' ')} {item['score']:.3f}" if item["score"] is not None
                              else "")
                    st.markdown(f"**{item['given']}**  \n{detail}")
                    options = ["keep", "exclude"]
                st.caption(f"{item['name']} · {item['split']}")
                if item["name"] in elsewhere:  # one image, one choice: where it was listed first
                    st.caption("Listed in an earlier gallery: choose its action there.")
                else:
                    _choose(key, item["name"], options)


def galleries(report: HealthReport, key: str, revision: Optional[Revision] = None) -> dict[str, str]:
    """The likely label errors and the most atypical images as galleries (picture, labels, an action each); returns
    the actions chosen so far ({image name: 'keep' | 'exclude' | 'relabel:<class>'}). A `revision` (from a link)
    fills the choices of a session that has made none."""
    labels, doubts, outliers, images, duplicates, pictures = _galleries(report.to_dict())
    actions_key = f"{key}_actions"
    if not st.session_state.get(actions_key) and revision is not None:
        st.session_state[actions_key] = {**{n: "exclude" for n in revision.exclude},
                                         **{n: f"relabel:{c}" for n, c in revision.relabel}}
    st.session_state.setdefault(actions_key, {})
    if not pictures:
        st.info("The images cannot be read back (the data is not here, or has changed since the check): the "
                "galleries name them without pictures.")
    if not read_only():
        c1, c2 = st.columns(2)
        if c1.button("Choose the suggestion", key=f"{key}_suggest", help="Exclude the listed training and val "
                     "images (likely errors and those worth a look) and keep the flagged test images, so that before "
                     "and after are scored on the same test set; change any of them below."):
            st.session_state[actions_key] = {i["name"]: i["suggestion"] for i in labels + doubts}
            _forget_widgets(key)
        if c2.button("Keep every image (clear the choices)", key=f"{key}_clear"):
            st.session_state[actions_key] = {}
            _forget_widgets(key)
    crossing = sum(1 for g in duplicates if g["crosses_splits"])
    label_tab, outlier_tab, image_tab, duplicate_tab = st.tabs([
        f"Likely label errors ({len(report.label_issues)}, {len(report.label_doubts)} more worth a look)",
        f"Most atypical images ({len(report.outliers)})",
        f"Image issues ({len(report.image_issues)})",
        f"Duplicates ({len(report.duplicates)} groups, {crossing} across splits)"])
    with label_tab:
        st.caption("Both the head (fitted on the other folds) and the 10 nearest images reject the given label; "
                   "most likely first: the given label → the suggested one, and the probability of the given label.")
        _cards(labels, actions_key, "label issues", report.classes)
        st.markdown(f"**Worth a look ({len(doubts)})**: one of the two rejects the label. The suggestion excludes "
                    "them from training and val too: dropping a correct but confusing image costs less than keeping "
                    "a wrong label.")
        _cards(doubts, actions_key, "label doubts", report.classes)
    with outlier_tab:
        st.caption("Lowest cleanlab outlier score first: images unlike the rest of the data (a ranking, not a "
                   "verdict).")
        _cards(outliers, actions_key, "outliers", report.classes, frozenset(i["name"] for i in labels + doubts))
    listed = frozenset(i["name"] for i in labels + doubts + outliers)
    with image_tab:
        st.caption("cleanvision's checks: dark, light, blurry, nearly blank (low information), odd size or aspect "
                   "ratio; the lowest score first within each type.")
        _cards(images, actions_key, "image issues", report.classes, listed)
    with duplicate_tab:
        st.caption("Groups of identical (exact) or nearly identical (near, by perceptual hash) images; a group "
                   "across splits puts a copy of a test image in training, which inflates test accuracy: keep one.")
        seen = set(listed | {i["name"] for i in images})
        for n, group in enumerate(duplicates):
            st.markdown(f"**{group['kind']} duplicates**" + (" · **across splits**" if group["crosses_splits"]
                                                              else ""))
            _cards(group["images"], actions_key, f"duplicates {n}", report.classes,
                   frozenset(i["name"] for i in group["images"]) & frozenset(seen))
            seen |= {i["name"] for i in group["images"]}
    return {n: a for n, a in st.session_state[actions_key].items() if a != "keep"}


def _forget_widgets(key: str) -> None:
    for name in [k for k in st.session_state if isinstance(k, str) and k.startswith(f"{key}_actions::")]:
        del st.session_state[name]


def save_revision_button(report: HealthReport, actions: dict[str, str], key: str) -> Optional[Revision]:
    """'Store as a revision' for the chosen actions; the stored revision (the same changes twice: the same one)."""
    exclude, relabel = changes_from(actions)
    st.caption(f"Chosen: **{len(exclude)} to exclude, {len(relabel)} to relabel**. A revision lists the changes over "
               "the original data; the files are never modified, and the original stays available.")
    c1, c2 = st.columns([3, 1])
    note = c1.text_input("A note for this revision (optional)", key=f"{key}_note", max_chars=120)
    c2.download_button("Changes as CSV", changes_table(actions).to_csv(index=False), "changes.csv", "text/csv",
                       key=f"{key}_csv", help="Edit it and store it with tlcore health --dataset ... --apply FILE")
    if not st.button("Store as a revision", type="primary", key=f"{key}_store", disabled=not (exclude or relabel)):
        return None
    if not report.source.get("source"):
        show_error("This check was stored before checks recorded their data: run the check again to revise it.")
        return None
    try:
        spec = DatasetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in report.source.items()
                              if k in DatasetSpec.__dataclass_fields__})
        return apply_fixes(DatasetSpec(spec.source, revision=spec.revision), exclude, relabel, note=note.strip())
    except (TlcoreError, TypeError) as exc:
        show_error(exc)
        return None


def revision_box(revision: Revision, sub_task: Optional[tuple]) -> str:
    """What a stored revision is and how to use it; returns the dataset text that names it."""
    label = dataset_label(DatasetSpec(revision.source, classes=sub_task, revision=revision.id))
    st.success(f"Stored revision **{revision.id}**: {len(revision.exclude)} image(s) excluded, "
               f"{len(revision.relabel)} relabelled; the files are untouched. Choose it as the data's version on "
               f"any page, or from the command line: `--dataset '{dataset_display(label)}'`.")
    return label


def before_after_table(change: BeforeAfter, key: str) -> None:
    st.markdown(change.statement())
    st.dataframe(change.to_frame(), hide_index=True, key=f"{key}_change", width="stretch")
    st.caption("Change in test accuracy points with its 95% interval: paired over the same test images where the "
               "revision left the test set as it was; otherwise Newcombe's interval for two separate proportions.")
    for note in change.revision_notes:
        st.caption(note)
