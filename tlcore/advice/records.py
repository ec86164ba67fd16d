"""Recommendations and the run store: the measured runs on the same data that outweigh the rules
(`evidence_from_store`), a recommendation saved as a record like every run (`save_recommendation`) and opened again
(`recommendation_from_record`), and `advise`, which measures, recommends and saves in one call.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from tlcore.advice.rules import RULES_VERSION, Recommendation, recommend
from tlcore.advice.signals import Signals, measure
from tlcore.core.environment import read_only
from tlcore.core.errors import ConfigError
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import parse_dataset
from tlcore.engine import backbone as bb
from tlcore.experiments.config import parse_size
from tlcore.records.store import default_store

# Signals that change from one measurement of the same data to the next (timings); the rest must match for a stored
# recommendation to be the same one.
_TIMINGS = ("seconds", "extract_seconds", "seconds_per_image")


def evidence_from_store(signals: Signals, store=None, tolerance: float = 0.25) -> list[dict]:
    """Measured runs on the same data and split, backbone and weights, at about this size (within +-25% images a
    class): {kind, stages, per_class, accuracy, train_seconds, seed, record_id}."""
    if not signals.data_fingerprint:
        return []
    store = store or default_store()
    out = []
    for row in store.runs_for_data(signals.data_fingerprint, signals.backbone):
        run = row["run"]
        if run.status != "completed" or run.accuracy is None:
            continue
        if run.kind != "scratch" and (run.weights or {}).get("sha256") not in (None, signals.weights):
            continue
        size = float(run.extra.get("images_per_class") or row["per_class"] or 0)
        if not size or abs(size - signals.images_per_class) > tolerance * signals.images_per_class:
            continue
        out.append({"kind": run.kind, "stages": run.options.get("stages"), "per_class": size,
                    "accuracy": run.accuracy, "train_seconds": run.train_seconds, "seed": run.seed,
                    "record_id": row["record_id"]})
    return out


def advise(dataset: DatasetSpec | str, backbone: bb.BackboneSpec | str = bb.BackboneSpec(),
           per_class: int | None = None, seed: int = 0, image_size: int | None = None,
           use_evidence: bool = True, store=None, device: str = "auto") -> Recommendation:
    """Measure, then recommend (with the stored evidence on this data unless `use_evidence` is False), and store the
    recommendation. A dataset given as text is read as the CLI reads `--dataset` (`parse_dataset`), so
    'fashion-mnist:Sandal|Sneaker' is the 2-class sub-task, measured and stored as such."""
    store = store or default_store()
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    signals = measure(spec, backbone, per_class=per_class, seed=seed, image_size=image_size, device=device)
    rec = recommend(signals, evidence_from_store(signals, store) if use_evidence else None)
    save_recommendation(rec, spec, backbone, per_class=per_class, seed=seed, image_size=image_size, store=store)
    return rec


def _comparable(value) -> object:
    """A JSON round trip, so a value compares equal to its stored copy (tuples become lists, numpy scalars floats)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _same_signals(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in _TIMINGS} == {k: v for k, v in b.items() if k not in _TIMINGS}


def save_recommendation(rec: Recommendation, dataset: DatasetSpec | str, backbone: bb.BackboneSpec | str,
                        per_class: int | str | None = None, seed: int = 0, image_size: int | None = None,
                        store=None) -> str:
    """Store a recommendation like every run (it gets a link and shows in the history); not in read-only mode.

    The same inputs (dataset, backbone, images per class, seed, image size, rules version) measured again with the
    same signals update the record already stored (its id does not change) instead of adding another."""
    if read_only():
        return ""
    store = store or default_store()
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    backbone = bb.BackboneSpec(backbone) if isinstance(backbone, str) else backbone
    config = _comparable({"dataset": asdict(spec), "backbone": asdict(backbone),
                          "per_class": parse_size(per_class) if per_class is not None else None, "seed": seed,
                          "image_size": image_size, "rules_version": RULES_VERSION})
    signals = _comparable(rec.signals.to_dict())
    label = f"recommend: {rec.choice.label}"
    existing = next((r for r in store.records(kind="recommendation") if r["config"] == config and r["summary"] and
                     _same_signals(r["summary"].get("signals") or {}, signals)), None)
    if existing is not None:
        rec.record_id = existing["id"]
    else:
        rec.record_id = store.create_record("recommendation", config, label=label, dataset=rec.signals.dataset,
                                            backbone=rec.signals.backbone, status="completed")
    store.update_record(rec.record_id, summary=rec.to_dict())
    return rec.record_id


def recommendation_from_record(record: dict) -> Recommendation:
    """A stored recommendation record (`Store.record(id)`, kind "recommendation") as a `Recommendation`, so a page
    opened from the history or a share link shows the same card as when it was made."""
    if record.get("kind") != "recommendation" or not record.get("summary"):
        raise ConfigError(f"Record {record.get('id', '?')} is not a stored recommendation with a summary.")
    return Recommendation.from_dict(record["summary"], record_id=record.get("id", ""))
