"""Measurements: accuracy with its binomial interval, macro-F1, per-class accuracy and the confusion matrix (from
scikit-learn), parameter counts, and peak memory sampled while a run works."""

from __future__ import annotations

import os
import threading
import time
from typing import Optional
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psutil
import torch
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, f1_score, recall_score


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy measured on `total` test images."""
    if total <= 0:
        return (float("nan"), float("nan"))
    ci = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass
class Scores:
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    macro_f1: float
    per_class_accuracy: dict[str, float]
    confusion: list[list[int]]
    test_images: int


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> Scores:
    labels = list(range(len(classes)))
    correct = int((y_true == y_pred).sum())
    low, high = wilson_interval(correct, len(y_true))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return Scores(
        accuracy=correct / len(y_true),
        accuracy_low=low,
        accuracy_high=high,
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        per_class_accuracy={c: float(r) for c, r in zip(classes, recall)},
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        test_images=len(y_true),
    )


def _rss_bytes() -> int:
    try:

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # Linux fallback
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident memory of the process (host RAM) while the block runs, sampled every 20 ms; on CUDA also the
    device's peak allocation, kept apart (`device_peak_bytes`): the two are different memories and never one
    column."""

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device = device
        self.interval = interval
        self.peak_bytes = 0
        self.device_peak_bytes: Optional[int] = None
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.peak_bytes = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_bytes())
        if self.device.type == "cuda":
            self.device_peak_bytes = int(torch.cuda.max_memory_allocated(self.device))

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def device_peak_mb(self) -> Optional[float]:
        return None if self.device_peak_bytes is None else self.device_peak_bytes / 2**20


class Stopwatch:
    """Wall time accumulated per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
