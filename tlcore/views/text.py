"""Text for people, formatted once: progress lines, result headlines and plain-text tables. The CLI prints these and
the dashboard shows the same strings, so both front ends say the same thing in the same words."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Union

import pandas as pd

from tlcore.advice.recommend import SOURCES, Recommendation
from tlcore.core.environment import data_roots
from tlcore.core.progress import ProgressEvent
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.data.uploads import upload_label
from tlcore.experiments.config import size_label
from tlcore.experiments.sweep import SweepResult

PHASES = {"prepare": "preparing", "features": "extracting features", "head": "fitting the head",
          "lp_warmup": "head warm-up (LP-FT)", "lp-warmup": "head warm-up (LP-FT)", "frozen_prefix":
          "caching the frozen stages", "epoch": "training", "evaluate": "evaluating", "done": "done",
          "waiting": "waiting for the training slot"}


def dataset_display(name: str) -> str:
    """What a page or report calls a dataset, never where the server keeps it: an upload by its archive's name
    ('photos.zip'), a folder by its path under the data roots or else its own name; built-in names as they are. A
    sub-task's '[classA,classB]' suffix is kept."""
    base, bracket, classes = (name or "").partition("[")
    suffix = bracket + classes
    if not base or not any(sep in base for sep in ("/", "\\")):
        return name
    label = upload_label(base)
    if label:
        return label + suffix
    path = Path(base)
    for root in data_roots():
        if path.resolve().is_relative_to(root) and path.resolve() != root:
            return str(path.resolve().relative_to(root)) + suffix
    return path.name + suffix


def record_text(record: dict) -> str:
    """'comparison 7fdf12ab34cd (fashion-mnist, 3 runs)': a stored record as a page names it when it acts on it."""
    what = [dataset_display(record.get("dataset", "")) or record.get("label", "")]
    if record.get("kind") in ("comparison", "sweep"):
        count = record.get("runs_count")
        what.append(f"{count} run{'s' if count != 1 else ''}" if count is not None else "")
    details = ", ".join(w for w in what if w)
    return f"{record['kind']} {record['id']}" + (f" ({details})" if details else "")


def skipped_text(dataset: dict, limit: int = 3) -> str:
    """'13 files skipped (first 3: a.jpg: corrupt...; ...); the full list is in comparison.json', or ''."""
    skipped = dataset.get("skipped") or []
    count = dataset.get("skipped_files", len(skipped))
    if not count:
        return ""
    head = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:limit])
    return (f"{count} file(s) skipped" + (f" (first {min(limit, len(skipped))}: {head})" if head else "")
            + ("; the full list is in the result's JSON" if count > limit else ""))


def overlap_text(dataset: dict) -> str:
    """A warning when images of the training subset also appear in val or test (identical pixels), or ''."""
    overlap = dataset.get("train_test_overlap") or {}
    parts = [f"{overlap[s]} {s} image(s)" for s in ("test", "val") if overlap.get(s)]
    if not parts:
        return ""
    return (f"{' and '.join(parts)} also appear in the training subset (identical pixels after preprocessing): "
            "their scores are optimistic. Remove the duplicates (see the dataset card) for an honest test.")


def _event(event: Union[ProgressEvent, dict]) -> dict:
    return asdict(event) if is_dataclass(event) else dict(event)


def progress_line(name: str, event: Union[ProgressEvent, dict, None], waiting: str = "waiting") -> str:
    """'fine-tune: training, epoch 2/6, val 0.812, about 16 s left'."""
    if event is None:
        return f"{name}: {waiting}"
    e = _event(event)
    parts = [PHASES.get(e["phase"], e["phase"])]
    if e["phase"] in ("done", "waiting"):  # waiting: 'waiting for the run started at ... by pid ... to finish...'
        parts = [e.get("message") or PHASES[e["phase"]]]
    elif e.get("epochs"):
        parts.append(f"epoch {e['epoch']}/{e['epochs']}")
    if e.get("val_accuracy") is not None:
        parts.append(f"val {e['val_accuracy']:.3f}")
    if e.get("eta_s") is not None and e["phase"] != "done":
        parts.append(f"about {e['eta_s']:.0f} s left")
    return f"{name}: {', '.join(parts)}"


def per_class_text(dataset: dict) -> str:
    """The training images a class actually used: '100 a class', or '9-10 a class (asked for 50)'."""
    counts = list((dataset.get("train_counts") or {}).values())
    asked = dataset.get("per_class")
    if not counts:
        return f"{asked or 'all'} a class"
    low, high = min(counts), max(counts)
    used = f"{low} a class" if low == high else f"{low}-{high} a class"
    return used + (f" (asked for {asked})" if asked and low < asked else "")


def run_size_text(run: RunResult) -> str:
    """The training images a class one run used: '100', or '10.3 on average (asked for 50)'."""
    asked = (run.dataset or {}).get("per_class")
    used = run.extra.get("images_per_class")
    if used is None:
        return size_label(asked)
    if asked and used < asked - 1e-9:
        return f"{used:.1f} on average (asked for {asked})"
    return f"{used:.0f}" if float(used).is_integer() else f"{used:.1f}"


def comparison_headline(result: ComparisonResult) -> str:
    ds, cfg = result.dataset, result.config
    if not ds:
        return f"comparison {result.record_id}"
    return (f"{dataset_display(ds['name'])}: {len(ds['classes'])} classes, {ds['sizes']['train']} training images "
            f"({per_class_text(ds)}), {ds['sizes']['val']} val, {ds['sizes']['test']} test · "
            f"{cfg['backbone']['name']} · {ds.get('image_size') or str(cfg.get('image_size')) + ' px'} · "
            f"seed {cfg['seed']} · {result.wall_seconds:.1f} s wall")


def sweep_headline(result: SweepResult) -> str:
    ds, cfg = result.dataset or {}, result.config
    resumed = sum(c.resumed for c in result.cells)
    return (f"{dataset_display(ds.get('name', ''))}: {len(ds.get('classes', []))} classes, test set of "
            f"{ds.get('sizes', {}).get('test')} images for every cell · {cfg['experiment']['backbone']['name']} · "
            f"{ds.get('image_size') or str(cfg.get('image_size')) + ' px'} · {cfg['repeats']} repeat(s) from seed "
            f"{cfg['experiment']['seed']} · {len(result.cells)} cells ({resumed} from the store) · "
            f"{result.wall_seconds:.1f} s wall · frozen outputs (features, fine-tune's frozen stages): "
            f"{result.feature_cache.get('rows_computed', 0)} image rows computed, "
            f"{result.feature_cache.get('rows_reused', 0)} reused")


def comparison_table(result: ComparisonResult) -> str:
    rows = []
    for r in result.runs:
        ok = r.accuracy is not None
        rows.append({
            "strategy": r.strategy,
            "status": r.status,
            "accuracy": f"{r.accuracy:.3f} [{r.accuracy_low:.3f}, {r.accuracy_high:.3f}]" if ok else "-",
            "macro-F1": f"{r.macro_f1:.3f}" if ok else "-",
            "train s": f"{r.train_seconds:.1f}" if r.train_seconds is not None else "-",
            "img/s": f"{r.throughput_ips:.0f}" if r.throughput_ips else "-",
            "trainable": f"{r.trainable_params:,}" if r.trainable_params is not None else "-",
            "total": f"{r.total_params:,}" if r.total_params else "-",
            "peak MB": f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb else "-",
            "epochs": f"{r.epochs_run} (best {r.best_epoch})" if r.kind != "feature-extraction" else "L-BFGS",
        })
    notes = [f"  {r.strategy}: {r.error}" for r in result.runs if r.error]
    warnings = [w for w in (skipped_text(result.dataset), overlap_text(result.dataset)) if w]
    lines = [comparison_headline(result)] + warnings + [pd.DataFrame(rows).to_string(index=False)]
    return "\n".join(lines + (["problems:"] + notes if notes else []))


NOT_RUN = "not run"


def not_run_text(config: dict) -> str:
    """Which strategies a sweep skipped at which sizes, and why (SweepConfig.long_only); '' when none."""
    config = config or {}
    names, long_from = config.get("long_only") or [], config.get("long_from")
    below = [size for size in config.get("sizes", []) if size is not None and long_from is not None and size < long_from]
    if not names or not below:
        return ""
    return (f"{' and '.join(names)} runs only from {long_from} images a class in this sweep, on the schedule that "
            "trains it until its val curve is flat. Below that size, the schedule would cost more than the sweep is "
            "meant to spend and a short one under-reports it, so those cells are not run "
            f"({', '.join(str(x) for x in below)} a class): the thorough preset, or a comparison at that size, "
            "measures it.")


def adaptive_text(config: dict) -> str:
    """What a sweep's adaptive repeats will do (its config as a dict), or '' when it has none."""
    most, repeats = config.get("max_repeats", 0), config.get("repeats", 1)
    present = {s.get("kind") for s in config.get("experiment", {}).get("strategies", [])}
    kinds = [k for k in config.get("adaptive_kinds", ()) if k in present]
    if not most or most <= repeats or not kinds:
        return ""
    return (f"Then {' and '.join(kinds)}, the cheap cells, get more seeds (up to {most}) at the sizes where their 95% "
            f"interval is wider than +-{config.get('target_half_width', 0.05) * 100:g} points: at most "
            f"{(most - repeats) * len(config.get('sizes', ())) * len(kinds)} more cells.")


def sweep_report(result: SweepResult) -> str:
    summary = result.summary()
    if summary.empty:
        return "no finished cells"
    summary["cell"] = [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                       zip(summary["accuracy"], summary["accuracy_low"], summary["accuracy_high"])]
    order = list(dict.fromkeys(summary.sort_values("images_per_class")["size"]))
    acc = summary.pivot(index="strategy", columns="size", values="cell")[order].fillna(NOT_RUN)
    secs = summary.pivot(index="strategy", columns="size", values="train_seconds")[order].map(
        lambda v: NOT_RUN if pd.isna(v) else f"{v:.1f}")
    warnings = [w for w in (skipped_text(result.dataset), not_run_text(result.config)) if w]
    lines = [f"sweep {result.record_id} | {sweep_headline(result)}"] + warnings + ["",
             "test accuracy: mean [95% interval] by images per class", acc.to_string(), "",
             "training seconds (mean)", secs.to_string(), ""]
    improving = summary[summary["undertrained_share"] > 0]
    if not improving.empty:
        lines.append("still improving at the last epoch (a longer schedule may score higher): " + ", ".join(
            f"{r.strategy} at {r.size}/class ({r.undertrained_share:.0%} of repeats)" for r in improving.itertuples()))
    lines += ["crossovers:"] + [f"  {c.statement}" for c in result.crossovers()]
    failed = [f"  {c.label}: {c.run.error}" for c in result.cells if c.run.error]
    return "\n".join(lines + (["problems:"] + failed if failed else []))


def recommendation_report(rec: Recommendation) -> str:
    s = rec.signals
    lines = [f"recommended: {rec.choice.label}   (runner-up: {rec.runner_up.label}; confidence {rec.confidence}, "
             f"{rec.confidence_score:.2f}; based on {rec.based_on})", "",
             f"data: {s.dataset} | {s.classes} classes | {s.images_per_class:g} images a class (min {s.min_per_class}, "
             f"max {s.max_per_class}) | native {s.native_size} px | measured in {s.seconds:.1f} s"]
    skipped = skipped_text({"skipped": s.skipped, "skipped_files": len(s.skipped)})
    lines += ([skipped] if skipped else []) + ["", "signals:"]
    for name, value in (("k-NN accuracy (frozen features, cross-validated)", s.knn_accuracy),
                        ("linear-probe val accuracy", s.linear_probe_accuracy),
                        ("raw-pixel baseline val accuracy", s.pixel_accuracy), ("LogME", s.logme),
                        ("ImageNet head entropy (0 sure .. 1 uniform)", s.head_entropy), ("LEEP", s.leep),
                        ("similarity to the pretraining data", s.similarity)):
        if value is not None:
            lines.append(f"  {name:50} {value:.3f}")
    lines += ["", "reasons:"] + [f"  - {r.text()}\n      [{SOURCES[r.source]}]" for r in rec.reasons]
    lines += ["", "what to expect:"]
    for o in rec.outlooks:
        secs = f"{o.seconds:.0f} s" if o.seconds is not None else "-"
        lines.append(f"  {o.strategy:32} accuracy {o.accuracy_low:.2f}-{o.accuracy_high:.2f}   training {secs:>7}   "
                     f"({o.basis})")
    return "\n".join(lines)
