"""A model card in markdown, written from the stored record: what the model was trained on, how, how well it scored
(with the interval), where it may fail. Exports and downloads carry it beside the weights."""

from __future__ import annotations

from typing import Optional

from tlcore.core.results import RunResult
from tlcore.records.models import ModelConfig


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def model_card(config: ModelConfig, run: RunResult, dataset: Optional[dict] = None) -> str:
    dataset = dataset or {}
    sizes = dataset.get("sizes", {})
    counts = dataset.get("train_counts") or {}
    overlap = dataset.get("train_test_overlap") or {}
    per_class = "\n".join(f"| {c} | {a:.3f} |" for c, a in (run.per_class_accuracy or {}).items())
    options = ", ".join(f"{k}={v}" for k, v in run.options.items() if k not in ("kind", "name", "head_l2_grid"))
    env = run.environment or {}
    low, high = run.accuracy_low or 0.0, run.accuracy_high or 0.0
    limits = [f"Trained on {min(counts.values()) if counts else '?'}-{max(counts.values()) if counts else '?'} images "
              f"a class ({sizes.get('train', '?')} in all) and scored on {run.test_images} test images: the 95% "
              f"interval of the test accuracy is {low:.3f}-{high:.3f}.",
              f"Images are resized to {config.image_size} px; detail finer than that is not seen.",
              "Classes outside the training classes are forced into one of them: there is no 'none of these'."]
    if overlap.get("test"):
        limits.append(f"{overlap['test']} test image(s) also appear in the training images: the test accuracy is "
                      "optimistic.")
    if run.kind == "feature-extraction":
        limits.append("The backbone is frozen ImageNet weights: images far from photos may be poorly represented.")
    return "\n".join([
        f"# Model card: {config.strategy} on {dataset.get('name', '?').split('/')[-1]}",
        "",
        f"Run `{config.run_id}` of record `{config.record_id}`, saved by tlcore {config.tlcore_version}.",
        "",
        "## Model",
        _table([("architecture", f"timm `{config.timm_name}`"), ("strategy", config.kind),
                ("options", options or "-"), ("started from", f"{config.backbone_weights.get('source')} weights "
                                                             f"{config.backbone_weights.get('name', '')}"),
                ("trainable parameters", f"{run.trainable_params:,}" if run.trainable_params else "-"),
                ("weights sha256", config.sha256)]),
        "",
        "## Data",
        _table([("classes", ", ".join(config.classes)), ("training images", str(sizes.get("train", "?"))),
                ("images a class", ", ".join(f"{c}: {n}" for c, n in counts.items()) or "-"),
                ("val / test images", f"{sizes.get('val', '?')} / {sizes.get('test', '?')}"),
                ("image size", f"{config.image_size} px; mean {config.preprocessing.get('mean')}, std "
                               f"{config.preprocessing.get('std')}, {config.preprocessing.get('interpolation')}, "
                               f"crop {config.preprocessing.get('crop_pct')}"),
                ("train/test overlap", f"{overlap.get('test', 0)} test and {overlap.get('val', 0)} val images also "
                                       "in training" if overlap else "not measured")]),
        "",
        "## Results",
        _table([("test accuracy", f"{run.accuracy:.3f} (95% interval {low:.3f}-{high:.3f})"),
                ("macro-F1", f"{run.macro_f1:.3f}" if run.macro_f1 is not None else "-"),
                ("training time", f"{run.train_seconds:.1f} s" if run.train_seconds is not None else "-"),
                ("inference", f"{run.throughput_ips:.0f} images/s" if run.throughput_ips else "-")]),
        "",
        "| class | test accuracy |", "|---|---|", per_class,
        "",
        "## Environment",
        _table([(k, str(v)) for k, v in env.items()]),
        "",
        "## Limitations",
        *[f"- {line}" for line in limits],
        "",
    ])
