"""Progress events and cooperative cancellation: what a CLI progress bar or a dashboard subscribes to."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from tlcore.core.errors import RunCancelled


@dataclass
class ProgressEvent:
    """One step of work. `fraction` is the share of this strategy's work done; `eta_s` is an estimate or None."""

    strategy: str
    phase: str  # "prepare", "features", "head", "lp-warmup", "epoch", "evaluate", "done"
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    loss: Optional[float] = None
    val_accuracy: Optional[float] = None
    fraction: float = 0.0
    elapsed_s: float = 0.0
    eta_s: Optional[float] = None
    message: str = ""
    cell: str = ""  # in a sweep: which (strategy, size, seed) cell this event belongs to

    def to_dict(self) -> dict:
        return asdict(self)


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken:
    """Thread-safe flag checked between batches, so a cancelled run stops within one batch."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise RunCancelled("cancelled by the user")


class Reporter:
    """Sends events for one strategy to the subscribers and checks for cancellation on every call."""

    def __init__(self, strategy: str, callbacks: list[ProgressCallback] | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.strategy = strategy
        self.callbacks = list(callbacks or [])
        self.cancel = cancel or CancelToken()
        self.started = time.perf_counter()

    def __call__(self, phase: str, fraction: float = 0.0, **fields) -> None:
        self.cancel.check()
        if not self.callbacks:
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed * (1 - fraction) / fraction if 0.02 < fraction < 1 else (0.0 if fraction >= 1 else None)
        event = ProgressEvent(strategy=self.strategy, phase=phase, fraction=min(max(fraction, 0.0), 1.0),
                              elapsed_s=elapsed, eta_s=eta, **fields)
        for callback in self.callbacks:
            callback(event)
