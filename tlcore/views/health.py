"""A data health check for people: counts per issue type, and galleries (the flagged images as small pictures beside
their given and suggested labels) as tables a page shows or edits. The images are read back from the data the check
ran on; where that data is gone or has changed, the gallery names the images without pictures."""

from __future__ import annotations

import io
from typing import Optional

import pandas as pd
from PIL import Image

from tlcore.advice.health import IMAGE_CHECKS, HealthReport, suggested_fixes
from tlcore.core.errors import TlcoreError
from tlcore.data.dataset import Dataset, DatasetSpec, to_rgb
from tlcore.data.load import load_dataset

THUMBNAIL = 72  # px, the longer side of a gallery picture


def thumbnail(image: Image.Image, size: int = THUMBNAIL) -> bytes:
    """A small PNG of an image for a gallery: shrunk to `size` px, or, for tiny images (8 px digits), enlarged with
    visible pixels rather than blurred."""
    image = to_rgb(image)
    image.thumbnail((size, size))
    if max(image.size) < size:
        scale = max(1, size // max(image.size))
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def checked_dataset(report: HealthReport) -> Optional[Dataset]:
    """The data the check ran on, loaded again (None when the report does not say, or it cannot be loaded now)."""
    if not report.source:
        return None
    try:
        spec = DatasetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in report.source.items()
                              if k in DatasetSpec.__dataclass_fields__})
        dataset = load_dataset(spec, report.seed)
    except (TlcoreError, OSError, TypeError):
        return None
    return dataset if dataset.source_fingerprint() == report.data_fingerprint else None


def _pictures(rows: list, dataset: Optional[Dataset]) -> list[Optional[bytes]]:
    if dataset is None:
        return [None] * len(rows)
    out = []
    for flagged in rows:
        try:
            out.append(thumbnail(dataset.pools[flagged.split].load(flagged.index)))
        except (OSError, KeyError, IndexError, ValueError):
            out.append(None)
    return out


def issue_counts(report: HealthReport) -> pd.DataFrame:
    """One row per issue type, with where it was found."""
    rows = [{"issue": "likely label errors", "images": len(report.label_issues),
             "where": ", ".join(f"{sum(1 for f in report.label_issues if f.split == s)} in {s}"
                                for s in report.checked_images)},
            {"issue": "labels worth a look (head or neighbours reject it)", "images": len(report.label_doubts),
             "where": ", ".join(f"{sum(1 for f in report.label_doubts if f.split == s)} in {s}"
                                for s in report.checked_images)},
            {"issue": "most atypical images (outliers)", "images": len(report.outliers),
             "where": ", ".join(f"{sum(1 for f in report.outliers if f.split == s)} in {s}"
                                for s in report.checked_images)}]
    for issue in IMAGE_CHECKS:
        found = [f for f in report.image_issues if f.issue == issue]
        rows.append({"issue": f"{issue.replace('_', ' ')} images (cleanvision)", "images": len(found),
                     "where": ", ".join(f"{sum(1 for f in found if f.split == s)} in {s}"
                                        for s in report.checked_images)})
    for kind in ("exact", "near"):
        groups = [g for g in report.duplicates if g.kind == kind]
        rows.append({"issue": f"{kind} duplicate groups (cleanvision)", "images": sum(len(g.images) for g in groups),
                     "where": f"{len(groups)} groups, {sum(1 for g in groups if g.crosses_splits)} across splits "
                              "(they bias the test)"})
    if report.skipped_classes:
        rows.append({"issue": f"classes with fewer than {report.folds} images (not label-checked)",
                     "images": len(report.skipped_classes), "where": ", ".join(report.skipped_classes)})
    return pd.DataFrame(rows)


def gallery(report: HealthReport, dataset: Optional[Dataset], kind: str = "label issues",
            limit: int = 200) -> list[dict]:
    """The flagged images of `kind` ('label issues', most likely first, 'label doubts', worth a look, or 'outliers',
    most atypical first), each
    with its picture (PNG bytes; None where it cannot be read back), name, split, given label, and the suggested
    label and confidence (label issues) or the outlier score, and the action the suggestion proposes
    (`suggested_fixes`: exclude in training and val, keep in test; outliers: keep)."""
    rows = {"label issues": report.label_issues, "label doubts": report.label_doubts, "outliers": report.outliers,
            "image issues": report.image_issues}[kind][:limit]
    suggested = ({r.name: r.action for r in suggested_fixes(report).itertuples()}
                 if kind in ("label issues", "label doubts") else {})
    return [{"picture": picture, "name": f.name, "split": f.split, "given": f.given, "suggested": f.suggested,
             "confidence": f.confidence, "score": f.score, "issue": f.issue,
             "suggestion": suggested.get(f.name, "keep")}
            for f, picture in zip(rows, _pictures(rows, dataset))]


def duplicate_gallery(report: HealthReport, dataset: Optional[Dataset], limit: int = 50) -> list[dict]:
    """The duplicate groups (across splits first), each with its images as `gallery` items."""
    out = []
    for group in report.duplicates[:limit]:
        items = [{"picture": p, "name": f.name, "split": f.split, "given": f.given, "suggested": "",
                  "confidence": None, "score": None, "issue": group.kind, "suggestion": "keep"}
                 for f, p in zip(group.images, _pictures(group.images, dataset))]
        out.append({"kind": group.kind, "crosses_splits": group.crosses_splits, "images": items})
    return out


def changes_table(actions: dict[str, str]) -> pd.DataFrame:
    """Chosen actions ({image name: 'keep' | 'exclude' | 'relabel:<class>'}) as the CSV `tlcore health --apply`
    reads: name, action, label."""
    rows = []
    for name, action in actions.items():
        kind, _, label = action.partition(":")
        rows.append({"name": name, "action": kind, "label": label})
    return pd.DataFrame(rows, columns=["name", "action", "label"])


def changes_from(actions: dict[str, str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(images to exclude, (image, class) to relabel) from chosen actions ({name: 'keep' | 'exclude' |
    'relabel:<class>'})."""
    exclude = [name for name, action in actions.items() if action == "exclude"]
    relabel = [(name, action.partition(":")[2]) for name, action in actions.items() if action.startswith("relabel:")]
    return exclude, relabel
