"""Text for people, formatted once: progress lines, result headlines and plain-text tables. The CLI prints these and
the dashboard shows the same strings, so both front ends say the same thing in the same words."""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Optional, Union

import pandas as pd

from tlcore.advice.rules import SOURCES, Recommendation
from tlcore.core.environment import data_roots
from tlcore.core.progress import ProgressEvent
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.data.uploads import upload_label
from tlcore.deploy.skipped import named_in_summary, summarize_skipped
from tlcore.engine.throughput import Throughput
from tlcore.experiments.config import size_label
from tlcore.experiments.sweep import SweepResult
from tlcore.records.models import WEIGHTS, models_dir

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


def skipped_text(dataset: dict, limit: int = 6, full_list: str = "the result's JSON") -> str:
    """'13 file(s) skipped: 12 truncated (e.g. cat/a.jpg), 1 over 50 megapixels (cat/huge.png); the full list is in
    the result's JSON', or '': a count and an example for each kind of reason (at most `limit` kinds)."""
    skipped = dataset.get("skipped") or []
    count = dataset.get("skipped_files", len(skipped))
    if not count:
        return ""
    summary = summarize_skipped(skipped, limit)
    named = named_in_summary(skipped, limit)
    return (f"{count} file(s) skipped" + (f": {summary}" if summary else "")
            + (f"; the full list is in {full_list}" if count > named and full_list else ""))


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


MISSING = "-"  # where a run has no value (failed, or the figure does not apply)
KEPT_START = "no fine-tuning epoch beat its start: the same model as feature extraction"


def kept_start(run: RunResult) -> bool:
    """A fine-tune (LP-FT) whose best epoch is 0: no epoch beat the fitted head on the pretrained backbone, so its
    model is feature extraction's head on the same backbone, and it predicts exactly as feature extraction does."""
    return (run.kind == "fine-tune" and run.status == "completed" and run.epochs_run > 0 and run.best_epoch == 0
            and any(point.get("epoch") == 0 for point in run.curve))


def epochs_text(run: RunResult) -> str:
    """What an epochs column says: 'L-BFGS' for feature extraction's head; a trained network's epochs run (out of
    those planned when it stopped early) and the epoch restored, '3 (best 0)' or '8/10 (best 6)'; '-' when it never
    trained."""
    if run.kind == "feature-extraction":
        return "L-BFGS" if run.status == "completed" else MISSING
    if not run.epochs_run:
        return MISSING
    planned = run.extra.get("planned_epochs")
    ran = f"{run.epochs_run}/{planned}" if planned and run.epochs_run < planned else str(run.epochs_run)
    return f"{ran} (best {run.best_epoch})"


SHARED_PARTS = {"features": "features", "head_fit": "head fit"}  # RunResult.shared's keys, in the order work is done


def _parts_text(run: RunResult) -> str:
    ordered = [part for part in SHARED_PARTS if part in run.shared] + [p for p in run.shared if p not in SHARED_PARTS]
    return ", ".join(SHARED_PARTS.get(part, part) for part in ordered)


def shared_text(run: RunResult) -> str:
    """'train s includes 3.1 s shared with feature-extraction (features, head fit)', or '' when nothing was shared."""
    if not run.shared:
        return ""
    return (f"train s includes {run.shared_seconds():.1f} s shared with {', '.join(run.shared_with())} "
            f"({_parts_text(run)})")


def throughput_text(run: RunResult) -> str:
    """'img/s measured while the machine was busy (...)' when other processes used the CPU during its timing, or
    'img/s timed on only 6 images (...): too short to compare'; '' for a figure fit to compare."""
    measured = Throughput.from_dict(run.extra.get("throughput"))
    if measured is None or measured.comparable:
        return ""
    return f"img/s {measured.busy_text() or measured.short_text()}"


def run_notes(run: RunResult) -> list[str]:
    """What a reader must know to read a run's row: its error, a fine-tune that kept its start, the shared part of
    its training time, an img/s taken on a busy machine."""
    notes = [run.error or "", KEPT_START if kept_start(run) else "", shared_text(run), throughput_text(run)]
    return [note for note in notes if note]


@dataclass
class DeployChoice:
    """Which completed run to deploy: among those whose 95% interval overlaps the most accurate one's, the cheapest
    to deploy (smallest model, then fastest); among equally cheap ones the most accurate, then the cheapest to
    train."""

    run: RunResult
    as_accurate: list[RunResult]  # the other runs within the intervals, most accurate first
    less_accurate: list[RunResult]  # the runs whose interval does not reach the best's, most accurate first
    sizes: dict[str, Optional[int]]  # run id -> bytes to deploy


# Sizes within 5% count as equal; img/s within 25%, the agreement of two timings of one model on a shared machine.
SIZE_TIE, SPEED_TIE = 0.05, 0.25
WIDE = 0.2  # a 95% interval wider than this: the test set is too small to tell close strategies apart


def deploy_bytes(run: RunResult, record_id: str) -> Optional[int]:
    """What deploying the run takes on disk: its saved model file (tlcore.records.models). Feature extraction saves
    only its head, but deploying it needs the frozen backbone too: its weights are counted, at 4 bytes a parameter
    as a saved float32 network stores them. Without a saved file, 4 bytes a parameter; None when unknown."""
    path = models_dir() / record_id / run.run_id / WEIGHTS if record_id and run.run_id else None
    saved = path.stat().st_size if path is not None and path.is_file() else None
    if run.total_params is None:
        return saved
    if run.kind == "feature-extraction":
        head = run.trainable_params or 0
        return (saved if saved is not None else 4 * head) + 4 * (run.total_params - head)
    return saved if saved is not None else 4 * run.total_params


def _ips(run: RunResult) -> Optional[float]:
    """img/s fit to compare: measured long enough, and not on a busy machine (Throughput.comparable)."""
    measured = Throughput.from_dict(run.extra.get("throughput"))
    return None if not run.throughput_ips or (measured is not None and not measured.comparable) else run.throughput_ips


def _cheapest(runs: list[RunResult], sizes: dict[str, Optional[int]]) -> RunResult:
    known = [sizes[r.run_id] for r in runs if sizes[r.run_id] is not None]
    if known:
        runs = [r for r in runs if sizes[r.run_id] is None or sizes[r.run_id] <= min(known) * (1 + SIZE_TIE)]
    speeds = [_ips(r) for r in runs if _ips(r) is not None]
    if speeds:
        runs = [r for r in runs if _ips(r) is None or _ips(r) >= max(speeds) * (1 - SPEED_TIE)]
    return min(runs, key=lambda r: (-r.accuracy, r.train_seconds if r.train_seconds is not None else float("inf"),
                                    r.trainable_params or 0))


def choose_deploy(result: ComparisonResult) -> Optional[DeployChoice]:
    """The run to deploy (see DeployChoice), or None when no run finished with a score."""
    done = [r for r in result.runs if r.status == "completed" and None not in (r.accuracy, r.accuracy_low,
                                                                             r.accuracy_high)]
    if not done:
        return None
    done.sort(key=lambda r: -r.accuracy)
    best = done[0]
    tied = [r for r in done if r.accuracy_high >= best.accuracy_low]
    sizes = {r.run_id: deploy_bytes(r, result.record_id) for r in done}
    choice = _cheapest(tied, sizes)
    return DeployChoice(choice, [r for r in tied if r is not choice], [r for r in done if r not in tied], sizes)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size < 1e8 else f"{size / 1e6:.0f} MB"


def _same_model(a: RunResult, b: RunResult) -> bool:
    return {a.kind, b.kind} == {"feature-extraction", "fine-tune"} and (kept_start(a) or kept_start(b))


def _accuracy_clause(choice: DeployChoice) -> str:
    run = choice.run
    if choice.as_accurate:
        each = []
        for other in choice.as_accurate:
            same = f": {other.strategy if kept_start(other) else run.strategy} kept its start, the same model" \
                if _same_model(run, other) else ""
            each.append(f"{other.strategy} ({run.accuracy:.3f} vs {other.accuracy:.3f}{same})")
        clause = "as accurate as " + " and ".join(each) + " within the 95% intervals"
        if all(run.accuracy > other.accuracy for other in choice.as_accurate):  # chosen on accuracy among equals
            clause = ("the most accurate (" + ", ".join(f"{run.accuracy:.3f} vs {other.strategy} {other.accuracy:.3f}"
                                                         for other in choice.as_accurate)
                      + "), though within the 95% intervals")
        best = max([run] + choice.as_accurate, key=lambda r: r.accuracy)
        apart = max(abs(run.accuracy - other.accuracy) for other in choice.as_accurate) > 0.05
        if apart and best.accuracy_high - best.accuracy_low > WIDE:
            clause += (f" (with {best.test_images or 'few'} test images they are wide, "
                       f"{best.accuracy_low:.2f}-{best.accuracy_high:.2f}: more test images may separate them)")
        return clause
    clause = f"the most accurate ({run.accuracy:.3f}, 95% CI {run.accuracy_low:.3f}-{run.accuracy_high:.3f})"
    if choice.less_accurate:
        nxt = choice.less_accurate[0]
        clause += f"; no other interval reaches it (next: {nxt.strategy}, {nxt.accuracy:.3f})"
    return clause


def _cost_clauses(choice: DeployChoice) -> list[str]:
    """Size, speed, trainable parameters and training time against the most accurate of the runs it was chosen
    over (or, when it stands alone, its own size and speed)."""
    run = choice.run
    size = choice.sizes.get(run.run_id)
    counted = "backbone weights + head" if run.kind == "feature-extraction" else ""
    other = choice.as_accurate[0] if choice.as_accurate else None
    if other is None:
        alone = [f"{_megabytes(size)} to deploy" + (f" ({counted})" if counted else "") if size else "",
                 f"{run.throughput_ips:.0f} img/s" if _ips(run) else ""]
        return [c for c in alone if c]
    clauses = []
    theirs = choice.sizes.get(other.run_id)
    if size and theirs:
        what = f": {counted}" if counted else ""
        clauses.append(f"{_megabytes(size)} to deploy{what}, instead of {_megabytes(theirs)}"
                       if size < theirs * (1 - SIZE_TIE) else f"the same size to deploy ({_megabytes(size)}{what})")
    mine, their_ips = _ips(run), _ips(other)
    if mine and their_ips:
        figures = f"{mine:.0f} vs {their_ips:.0f} img/s"
        if mine > their_ips * (1 + SPEED_TIE):
            clauses.append(f"{mine / their_ips:.1f}x the speed ({figures})")
        else:
            clauses.append(f"as fast ({figures})" if mine >= their_ips * (1 - SPEED_TIE) else figures)
    if run.trainable_params and other.trainable_params and other.trainable_params >= 1.5 * run.trainable_params:
        clauses.append(f"{other.trainable_params / run.trainable_params:.0f}x fewer trainable parameters")
    if run.train_seconds and other.train_seconds and other.train_seconds >= 1.2 * run.train_seconds:
        clauses.append(f"{other.train_seconds / run.train_seconds:.1f}x less training time "
                       f"({run.train_seconds:.1f} s vs {other.train_seconds:.1f} s)")
    return clauses


def deploy_verdict(result: ComparisonResult) -> str:
    """One line: which model to deploy and why, accuracy within its interval first, then size and speed. 'Deploy
    feature-extraction: as accurate as fine-tune (0.755 vs 0.755: fine-tune kept its start, the same model) within
    the 95% intervals, the same size to deploy (14.2 MB: backbone weights + head), as fast (1336 vs 1290 img/s),
    80x fewer trainable parameters.' '' when no run finished."""
    choice = choose_deploy(result)
    if choice is None:
        return ""
    run = choice.run
    if choice.as_accurate or choice.less_accurate:
        clauses = [_accuracy_clause(choice)] + _cost_clauses(choice)
    else:
        clauses = [f"the only strategy that finished ({run.accuracy:.3f})"] + _cost_clauses(choice)
    same = any(_same_model(run, other) for other in choice.as_accurate)
    kept = f"; {KEPT_START}" if kept_start(run) and not same else ""
    return f"Deploy {run.strategy}: " + ", ".join(clauses) + kept + "."


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
    on_gpu = any("device_peak_memory_mb" in r.extra for r in result.runs)
    for r in result.runs:
        ok = r.accuracy is not None
        rows.append({
            "strategy": r.strategy,
            "status": r.status,
            "accuracy": f"{r.accuracy:.3f} [{r.accuracy_low:.3f}, {r.accuracy_high:.3f}]" if ok else "-",
            "macro-F1": f"{r.macro_f1:.3f}" if ok else "-",
            "train s": f"{r.train_seconds:.1f}" if r.train_seconds is not None else "-",
            "img/s": (f"{r.throughput_ips:.0f}" + ("*" if throughput_text(r) else "")) if r.throughput_ips else "-",
            "trainable": f"{r.trainable_params:,}" if r.trainable_params is not None else "-",
            "total": f"{r.total_params:,}" if r.total_params else "-",
            "peak MB": f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb else "-",  # host RAM
            "epochs": epochs_text(r),
        })
        if on_gpu:  # the device's own peak, apart from the host's
            gpu_mb = r.extra.get("device_peak_memory_mb")
            rows[-1]["GPU peak MB"] = f"{gpu_mb:.0f}" if gpu_mb else "-"
    problems = [f"  {r.strategy}: {r.error}" for r in result.runs if r.error]
    notes = [f"  {r.strategy}: {note}" for r in result.runs for note in run_notes(r) if note != r.error]
    warnings = [w for w in (skipped_text(result.dataset), overlap_text(result.dataset)) if w]
    verdict = deploy_verdict(result)
    lines = [comparison_headline(result)] + warnings + [pd.DataFrame(rows).to_string(index=False)]
    lines += (["notes (* img/s not fit to compare, see its note):" if any(throughput_text(r) for r in result.runs)
               else "notes:"] + notes if notes else [])
    return "\n".join(lines + (["problems:"] + problems if problems else []) + ([verdict] if verdict else []))


NOT_RUN = "not run"


def not_run_text(config: dict) -> str:
    """Which strategies a sweep skipped at which sizes, and why (SweepConfig.long_only); '' when none."""
    config = config or {}
    names, long_from = config.get("long_only") or [], config.get("long_from")
    below = [size for size in config.get("sizes", [])
             if size is not None and long_from is not None and size < long_from]
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


def measured_where(signals) -> str:
    """Where the signals were measured: the image size and the device, which the time estimates and the one-click
    confirmation use too."""
    device = {"cpu": "CPU", "cuda": "GPU", "mps": "Apple GPU (MPS)"}.get(signals.device, signals.device)
    return (f"Measured at {signals.image_size} px on the {device}; the time estimates are this device's and the "
            "confirmation runs there at this size.")


def recommendation_report(rec: Recommendation) -> str:
    s = rec.signals
    lines = [f"recommended: {rec.choice.label}   (runner-up: {rec.runner_up.label}; confidence {rec.confidence}, "
             f"{rec.confidence_score:.2f}; based on {rec.based_on})", "",
             f"data: {s.dataset} | {s.classes} classes | {s.images_per_class:g} images a class (min {s.min_per_class}, "
             f"max {s.max_per_class}) | native {s.native_size} px | measured in {s.seconds:.1f} s",
             measured_where(s)]
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
        lines.append(f"  {o.strategy:32} accuracy {o.accuracy_low:.2f}-{o.accuracy_high:.2f}   training "
                     f"{outlook_seconds(o):>14}   ({o.basis})")
    return "\n".join(lines)


def outlook_seconds(outlook) -> str:
    """The training time stated for a strategy: the estimate, and the range measured around such estimates on the
    validation suite ("12 s (7-14 s)"), or "-" when there is no estimate."""
    if outlook.seconds is None:
        return "-"
    span = getattr(outlook, "seconds_range", None)
    return f"{outlook.seconds:.0f} s" + (f" ({span[0]:.0f}-{span[1]:.0f} s)" if span else "")


def backbones_table(result) -> str:
    """A multi-backbone comparison (`BackbonesResult`) for a terminal: strategy x backbone, best first within each
    candidate, with the front of test accuracy against time per image marked, and the one-line answer."""
    frame = result.to_frame()
    if frame.empty:
        return "No run finished."
    front = set(result.front().index)
    rows = []
    for i, r in frame.iterrows():
        ok = r.status == "completed" and r.accuracy is not None
        rows.append({"candidate": r.candidate, "strategy": r.strategy, "status": r.status,
                     **({"a class": r["images a class"]} if result.config.is_sweep else {}),
                     "accuracy": f"{r.accuracy:.3f} [{r.accuracy_low:.3f}, {r.accuracy_high:.3f}]" if ok else "-",
                     "val": f"{r.best_val_accuracy:.3f}" if ok and r.best_val_accuracy is not None else "-",
                     "train s": f"{r.train_seconds:.1f}" if r.train_seconds is not None else "-",
                     "ms/img": f"{r.ms_per_image:.2f}" if r.ms_per_image else "-",
                     "trainable": f"{int(r.trainable_params):,}" if r.trainable_params else "-",
                     "front": "*" if i in front else ""})
    lines = [pd.DataFrame(rows).to_string(index=False), "front: on the Pareto front of test accuracy against time "
             "per image (inference, measured alike in every run)", result.statement()]
    lines += [f"  {m.candidate.label}: {m.status}" for m in result.members if m.status != "completed"]
    return "\n".join(lines)
