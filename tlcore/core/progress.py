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
    """Sends events for one strategy to the subscribers and checks for cancellation on every call.

    The time left is estimated from the time per unit of progress measured in the current phase, and only in the
    phases that run to the end (`eta_phases`, all by default): a fast head warm-up says nothing about the epochs that
    follow, so extrapolating it promised "16 s left" before the epochs took minutes."""

    def __init__(self, strategy: str, callbacks: list[ProgressCallback] | None = None,
                 cancel: CancelToken | None = None, eta_phases: Optional[set[str]] = None) -> None:
        self.strategy = strategy
        self.callbacks = list(callbacks or [])
        self.cancel = cancel or CancelToken()
        self.started = time.perf_counter()
        self.eta_phases = eta_phases
        self._phase, self._phase_started, self._phase_fraction = "", self.started, 0.0

    def _eta(self, phase: str, fraction: float, now: float) -> Optional[float]:
        if phase != self._phase:
            self._phase, self._phase_started, self._phase_fraction = phase, now, fraction
        if fraction >= 1:
            return 0.0
        progress, spent = fraction - self._phase_fraction, now - self._phase_started
        if (self.eta_phases is not None and phase not in self.eta_phases) or progress < 0.01 or spent < 0.2:
            return None
        return spent * (1 - fraction) / progress

    def __call__(self, phase: str, fraction: float = 0.0, **fields) -> None:
        self.cancel.check()
        if not self.callbacks:
            return
        now = time.perf_counter()
        eta = self._eta(phase, fraction, now)
        event = ProgressEvent(strategy=self.strategy, phase=phase, fraction=min(max(fraction, 0.0), 1.0),
                              elapsed_s=now - self.started, eta_s=eta, **fields)
        for callback in self.callbacks:
            callback(event)
