"""Before and after a dataset revision: the same comparison on the original data and on the revision, and the change
of each strategy's test accuracy with its interval.

Where both comparisons scored the same test images with the same labels (a revision that changes only training and
validation images, the health check's suggestion), the interval is paired: each test image scored by both, the mean
of the per-image differences +/- 1.96 standard errors. Where the revision changed the test set, the two accuracies
are measured on different images and the interval is Newcombe's hybrid score interval from the two Wilson intervals;
the table says which.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import numpy as np
import pandas as pd

from tlcore.core.errors import ConfigError
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.experiments.compare import compare
from tlcore.experiments.config import ExperimentConfig

Z95 = 1.959964


@dataclass
class StrategyChange:
    strategy: str
    before: Optional[float]
    after: Optional[float]
    before_interval: tuple = ()
    after_interval: tuple = ()
    change: Optional[float] = None
    change_low: Optional[float] = None
    change_high: Optional[float] = None
    paired: bool = False
    note: str = ""  # why there is no change (a run that failed or was cancelled)


@dataclass
class BeforeAfter:
    revision: str
    before_record: str
    after_record: str
    same_test_set: bool
    test_images: tuple  # (before, after)
    changes: list[StrategyChange] = field(default_factory=list)
    revision_notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for c in self.changes:
            rows.append({"strategy": c.strategy,
                         "before": _pct(c.before, c.before_interval), "after": _pct(c.after, c.after_interval),
                         "change (points)": _points(c), "interval": "paired" if c.paired else
                         ("different test sets" if c.change is not None else c.note)})
        return pd.DataFrame(rows)

    def statement(self) -> str:
        measured = [c for c in self.changes if c.change is not None]
        if not measured:
            return "No strategy finished on both versions: nothing to compare."
        clear = [c for c in measured if c.change_low > 0 or c.change_high < 0]
        parts = [f"{c.strategy} {c.change * 100:+.1f} points" for c in measured]
        verdict = (f"{len(clear)} of {len(measured)} change(s) lie outside their 95% interval around zero"
                   if clear else "no change is beyond its 95% interval: the revision made no measurable difference")
        test = "on the same test images" if self.same_test_set else "on test sets the revision changed"
        return f"Revision {self.revision}, {test}: {', '.join(parts)}; {verdict}."

    def text(self) -> str:
        return "\n".join([self.statement(), self.to_frame().to_string(index=False), *self.revision_notes])

    def to_dict(self) -> dict:
        return asdict(self)


def _pct(value: Optional[float], interval: tuple) -> str:
    if value is None:
        return ""
    return f"{value * 100:.1f}%" + (f" [{interval[0] * 100:.1f}, {interval[1] * 100:.1f}]" if interval else "")


def _points(c: StrategyChange) -> str:
    if c.change is None:
        return ""
    return f"{c.change * 100:+.1f} [{c.change_low * 100:+.1f}, {c.change_high * 100:+.1f}]"


def _paired(before: RunResult, after: RunResult, labels: np.ndarray) -> tuple[float, float, float]:
    right_before = np.asarray(before.test_predictions) == labels
    right_after = np.asarray(after.test_predictions) == labels
    diff = right_after.astype(float) - right_before.astype(float)
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return mean, mean - Z95 * se, mean + Z95 * se


def _newcombe(before: RunResult, after: RunResult) -> tuple[float, float, float]:
    p1, (l1, u1) = before.accuracy, (before.accuracy_low, before.accuracy_high)
    p2, (l2, u2) = after.accuracy, (after.accuracy_low, after.accuracy_high)
    d = p2 - p1
    return d, d - math.hypot(p2 - l2, u1 - p1), d + math.hypot(u2 - p2, p1 - l1)


def changes(before: ComparisonResult, after: ComparisonResult) -> BeforeAfter:
    """The change of each strategy's test accuracy from `before` to `after` (two stored comparisons of the same
    config on the original data and on a revision)."""
    same = (before.test_indices == after.test_indices and before.test_labels == after.test_labels
            and bool(before.test_indices))
    labels = np.asarray(after.test_labels)
    out = BeforeAfter(revision=after.config.get("dataset", {}).get("revision") or "", before_record=before.record_id,
                      after_record=after.record_id, same_test_set=same,
                      test_images=(len(before.test_labels), len(after.test_labels)),
                      revision_notes=[n for n in after.dataset.get("notes", []) if n.startswith("Revision ")])
    earlier = {r.strategy: r for r in before.runs}
    for run in after.runs:
        old = earlier.get(run.strategy)
        change = StrategyChange(run.strategy, old.accuracy if old else None, run.accuracy,
                                (old.accuracy_low, old.accuracy_high) if old and old.accuracy is not None else (),
                                (run.accuracy_low, run.accuracy_high) if run.accuracy is not None else ())
        if old is None or old.accuracy is None or run.accuracy is None:
            failed = [f"{name} {r.status}" for name, r in (("before:", old), ("after:", run))
                      if r is not None and r.accuracy is None]
            change.note = "; ".join(failed) or "not run before"
        elif same and len(run.test_predictions) == len(labels) == len(old.test_predictions):
            change.change, change.change_low, change.change_high = _paired(old, run, labels)
            change.paired = True
        else:
            change.change, change.change_low, change.change_high = _newcombe(old, run)
        out.changes.append(change)
    return out


def compare_before_after(config: ExperimentConfig, **compare_options) -> tuple[ComparisonResult, ComparisonResult,
                                                                                BeforeAfter]:
    """Run `config` (whose dataset names a revision) on the original data and on the revision, each stored as its own
    comparison (a cell already computed is reused with `resume=True`), and the change per strategy."""
    if not config.dataset.revision:
        raise ConfigError("Before and after needs a revision: name the data as SOURCE@REVISION (tlcore health "
                          "--apply prints it).")
    original = replace(config, dataset=replace(config.dataset, revision=None))
    before = compare(original, **compare_options)
    after = compare(config, **compare_options)
    return before, after, changes(before, after)
