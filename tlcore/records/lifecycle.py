"""The life of one stored record, written once for comparisons, sweeps and queued jobs alike:

    open (create it, or claim a queued job's record) -> add each finished run -> finish with the overall status
                                                    \\-> fail (an error before the runs could say so)

A record left 'queued' or 'running' by a process that died is marked 'interrupted' by the store when it is next
opened (`Store.mark_interrupted`); running the same config again resumes it from its stored cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tlcore.core.errors import TlcoreError
from tlcore.core.results import RunResult
from tlcore.records.store import Store

MAX_ERRORS_SHOWN = 5


def overall_status(statuses: Sequence[str], cancelled: bool) -> str:
    """cancelled if the user cancelled (whatever finished is kept); failed if every run failed; else completed."""
    if cancelled or "cancelled" in statuses:
        return "cancelled"
    if statuses and all(s == "failed" for s in statuses):
        return "failed"
    return "completed"


def error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TlcoreError) else f"{type(exc).__name__}: {exc}"


@dataclass
class RecordLifecycle:
    store: Store
    record_id: str

    @classmethod
    def open(cls, store: Store, kind: str, config: dict, label: str = "", dataset: str = "", backbone: str = "",
             record_id: Optional[str] = None) -> "RecordLifecycle":
        """A new record (status running), or the queued record `record_id` claimed by this process."""
        if record_id is None:
            record_id = store.create_record(kind, config, label=label, dataset=dataset, backbone=backbone)
        else:
            store.claim(record_id)
        return cls(store, record_id)

    def add(self, run: RunResult, cell_key: Optional[str], per_class: Optional[int], resumed: bool = False) -> None:
        """One finished run (or a cell reused from the store), in its own transaction."""
        self.store.add_run(self.record_id, run, cell_key=cell_key, per_class=per_class, resumed=resumed)

    def finish(self, status: str, runs: Sequence[tuple[str, RunResult]], summary: dict) -> None:
        """The overall status (see `overall_status`), the runs' errors (labelled), and the record's summary."""
        errors = [f"{label}: {run.error}" for label, run in runs if run.error]
        self.store.update_record(self.record_id, status=status, summary=summary,
                                 error="; ".join(errors[:MAX_ERRORS_SHOWN]) or None)

    def fail(self, exc: BaseException) -> None:
        """The run stopped before it could finish its record: Ctrl-C is a cancel, anything else a failure."""
        self.store.update_record(self.record_id, status="cancelled" if isinstance(exc, KeyboardInterrupt) else
                                 "failed", error=error_text(exc))
