"""Accuracy against labelled images per class: the mean and 95% interval of every (strategy, size) cell of a sweep,
and the sizes where the strategies cross.

Intervals: with R >= 2 repeats, Student's t interval of the mean across repeats (each repeat is another seed: another
subset, initialisation and batch order); with R = 1, the Wilson interval of that one run's test accuracy. Two repeats
give a wide t interval (t = 12.7 at one degree of freedom) on purpose: two seeds say little about the spread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

SCRATCH_MARGIN = 0.01  # "scratch comes within 1 point of the best strategy"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student's t interval of the mean, clipped to [0, 1]; needs two or more values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError("a t interval needs at least two values")
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


SUMMARY_COLUMNS = ["strategy", "kind", "size", "images_per_class", "repeats", "accuracy", "accuracy_low",
                   "accuracy_high", "accuracy_sd", "interval", "train_seconds", "train_seconds_sd",
                   "trainable_params", "accuracy_per_train_second", "undertrained_share"]


def summarize(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (strategy, size) from completed cells (columns as in SweepCell.to_row; `size` is its label, '25'
    or 'all', and `images_per_class` the number to sort and plot by)."""
    if cells.empty or "status" not in cells:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    done = cells[cells["status"] == "completed"]
    rows = []
    for (strategy, size), g in done.groupby(["strategy", "size"], sort=False):
        acc = g["accuracy"].to_numpy(dtype=float)
        if len(g) >= 2:
            mean, low, high = mean_interval(acc)
            interval = f"t, {len(g)} repeats"
        else:
            mean, low, high = float(acc[0]), float(g["accuracy_low"].iloc[0]), float(g["accuracy_high"].iloc[0])
            interval = "Wilson, test set"
        seconds = g["train_seconds"].to_numpy(dtype=float)
        rows.append({
            "strategy": strategy, "kind": g["kind"].iloc[0], "size": str(size),
            "images_per_class": float(g["images_per_class"].mean()), "repeats": len(g),
            "accuracy": mean, "accuracy_low": low, "accuracy_high": high,
            "accuracy_sd": float(acc.std(ddof=1)) if len(g) >= 2 else None, "interval": interval,
            "train_seconds": float(seconds.mean()), "train_seconds_sd": float(seconds.std(ddof=1)) if len(g) >= 2
            else None, "trainable_params": int(g["trainable_params"].iloc[0]),
            "accuracy_per_train_second": mean / max(float(seconds.mean()), 1e-9),
            "undertrained_share": float(g["still_improving"].mean()) if "still_improving" in g else 0.0,
        })
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return out.sort_values(["strategy", "images_per_class"], kind="stable").reset_index(drop=True)


@dataclass
class Crossover:
    """Where one strategy catches another, or a plain statement that it did not happen in the sizes measured."""

    name: str  # "fine-tune beats feature extraction", "scratch within 1 point of the best"
    size: Optional[str]  # the size label ('25', 'all') where it first happens; None: not in the range measured
    images_per_class: Optional[float]
    statement: str

    def to_dict(self) -> dict:
        return asdict(self)


def _best_of_kind(summary: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per size, the row of the best strategy of `kind` (by mean accuracy)."""
    rows = summary[summary["kind"] == kind]
    if rows.empty:
        return rows
    return rows.loc[rows.groupby("size")["accuracy"].idxmax()].sort_values("images_per_class")


def _label(row) -> str:
    return "all images" if row["size"] == "all" else f"{row['size']} images a class"


def find_crossovers(summary: pd.DataFrame, margin: float = SCRATCH_MARGIN) -> list[Crossover]:
    """(1) The smallest size where fine-tuning beats feature extraction with non-overlapping intervals (and, for
    context, where its mean first does); (2) the smallest size where scratch's mean is within `margin` of the best
    strategy's mean."""
    out: list[Crossover] = []
    if summary.empty:
        return out
    span = summary.sort_values("images_per_class")
    sizes = span.drop_duplicates("size")
    lo_label, hi_label = _label(sizes.iloc[0]), _label(sizes.iloc[-1])
    measured = f"between {lo_label} and {hi_label}" if len(sizes) > 1 else f"at {lo_label}"

    fe, ft = _best_of_kind(summary, "feature-extraction"), _best_of_kind(summary, "fine-tune")
    if not fe.empty and not ft.empty:
        both = fe.merge(ft, on="size", suffixes=("_fe", "_ft")).sort_values("images_per_class_fe")
        clear = both[both["accuracy_low_ft"] > both["accuracy_high_fe"]]
        ahead = both[both["accuracy_ft"] > both["accuracy_fe"]]
        if not clear.empty:
            r = clear.iloc[0]
            out.append(Crossover("fine-tune beats feature extraction", str(r["size"]),
                                 float(r["images_per_class_fe"]),
                                 f"From {_label(r)}, fine-tuning ({r['accuracy_ft']:.3f} "
                                 f"[{r['accuracy_low_ft']:.3f}, {r['accuracy_high_ft']:.3f}]) beats feature "
                                 f"extraction ({r['accuracy_fe']:.3f} [{r['accuracy_low_fe']:.3f}, "
                                 f"{r['accuracy_high_fe']:.3f}]) with non-overlapping 95% intervals."))
        else:
            note = ""
            if not ahead.empty:
                r = ahead.iloc[0]
                note = (f" Its mean is higher from {_label(r)} ({r['accuracy_ft']:.3f} vs {r['accuracy_fe']:.3f}), "
                        "but the intervals overlap: more repeats would tell.")
            out.append(Crossover("fine-tune beats feature extraction", None, None,
                                 f"Fine-tuning did not beat feature extraction beyond the 95% intervals anywhere "
                                 f"{measured}.{note}"))

    scratch = _best_of_kind(summary, "scratch")
    if not scratch.empty:
        best = summary.groupby("size")["accuracy"].max().rename("best")
        s = scratch.join(best, on="size").sort_values("images_per_class")
        close = s[s["accuracy"] >= s["best"] - margin - 1e-12]
        if not close.empty:
            r = close.iloc[0]
            out.append(Crossover(f"scratch within {margin * 100:.0f} point of the best", str(r["size"]),
                                 float(r["images_per_class"]),
                                 f"From {_label(r)}, training from scratch ({r['accuracy']:.3f}) comes within "
                                 f"{margin * 100:.0f} point of the best strategy ({r['best']:.3f})."))
        else:
            gap = s.iloc[-1]
            # scratch's own sizes: a sweep may run it only at some of them (SweepConfig.long_only)
            where = (f"between {_label(s.iloc[0])} and {_label(gap)}" if len(s) > 1 else f"at {_label(gap)}")
            out.append(Crossover(f"scratch within {margin * 100:.0f} point of the best", None, None,
                                 f"Training from scratch did not come within {margin * 100:.0f} point of the best "
                                 f"strategy anywhere {where}; at {_label(gap)} it was "
                                 f"{(gap['best'] - gap['accuracy']) * 100:.1f} points behind."))
    return out
