"""Several backbones, each at an image size, under one comparison or one sweep: strategy x backbone side by side.

Each candidate runs as an ordinary comparison (or sweep) of its own, stored as its own record, so everything a
comparison has (share link, report, models, resume, the feature cache) it keeps; a record of kind "backbones" holds
the set: the base config, the candidates, and each member's record id as soon as it starts. The members run one after
another in the order given (a ranking's best first), so a cancel keeps the best finished ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import pandas as pd

from tlcore.core.errors import ConfigError
from tlcore.core.progress import CancelToken, ProgressCallback, ProgressEvent
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.engine.backbone import BackboneSpec
from tlcore.engine.features import FeatureCache
from tlcore.experiments.compare import compare, load_comparison
from tlcore.experiments.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, ExperimentConfig, SweepConfig, size_label
from tlcore.experiments.sweep import SweepResult, load_sweep, run_sweep
from tlcore.records.store import Store, default_store

MAX_CANDIDATES = 12  # members of one multi-backbone comparison: each is a whole comparison
FASTER = 0.9  # a run within a point of the best is named as the faster choice only below this share of its time
KIND = "backbones"
RUN_COLUMNS = ["candidate", "backbone", "image_size", "strategy", "kind", "images a class", "seed", "status",
               "accuracy", "accuracy_low", "accuracy_high", "best_val_accuracy", "train_seconds", "trainable_params",
               "total_params", "throughput_ips", "ms_per_image", "peak_memory_mb", "record"]


@dataclass(frozen=True)
class Candidate:
    """A backbone at an image size, with its weights: 'pretrained' (packaged, then the hub) or a state_dict file."""

    backbone: str
    image_size: int
    weights: str = "pretrained"

    def __post_init__(self) -> None:
        if not self.backbone.strip():
            raise ConfigError("A candidate needs a backbone name, e.g. tf_efficientnet_lite0@96.")
        if not MIN_IMAGE_SIZE <= int(self.image_size) <= MAX_IMAGE_SIZE:
            raise ConfigError(f"Candidate {self.backbone}: image size must be between {MIN_IMAGE_SIZE} and "
                              f"{MAX_IMAGE_SIZE} px (got {self.image_size}).")

    @property
    def label(self) -> str:
        """'tf_efficientnet_lite0 at 96 px' (a weights file adds its name)."""
        own = "" if self.weights in ("pretrained", "packaged", "hub") else f" ({Path(self.weights).name})"
        return f"{self.backbone} at {self.image_size} px{own}"

    @property
    def spec(self) -> str:
        """'name@size' (or 'name@size@weights'): how the CLI names it."""
        own = "" if self.weights == "pretrained" else f"@{self.weights}"
        return f"{self.backbone}@{self.image_size}{own}"

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "image_size": int(self.image_size), "weights": self.weights}


def parse_candidates(text: str) -> list[Candidate]:
    """'name@size,name@size@/path/weights.pth' -> candidates (weights 'pretrained' unless given)."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, rest = item.partition("@")
        size_text, _, weights = rest.partition("@")
        try:
            size = int(size_text)
        except ValueError:
            raise ConfigError(f"Candidate '{item}': give it as name@size, e.g. tf_efficientnet_lite0@96 (a weights "
                              "file as name@size@path).") from None
        out.append(Candidate(name.strip(), size, weights.strip() or "pretrained"))
    if not out:
        raise ConfigError("No candidates given; use e.g. 'tf_efficientnet_lite0@96,tf_efficientnet_lite2@128'.")
    return out


@dataclass(frozen=True)
class BackbonesConfig:
    """A comparison (or sweep) `base` run once for each candidate: its backbone, weights and image size replaced, all
    else the same (data, subset, split, strategies, schedules, seeds). `ranking`: the ranking record they came from."""

    base: Union[ExperimentConfig, SweepConfig]
    candidates: tuple[Candidate, ...]
    ranking: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if not self.candidates:
            raise ConfigError("No backbones to compare: give at least one candidate (name@size).")
        if len(self.candidates) > MAX_CANDIDATES:
            raise ConfigError(f"{len(self.candidates)} candidates: one multi-backbone comparison runs at most "
                              f"{MAX_CANDIDATES}; confirm the top ones of a ranking instead.")
        labels = [c.label for c in self.candidates]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"Each candidate must differ in backbone, size or weights (got {', '.join(labels)}).")

    @property
    def is_sweep(self) -> bool:
        return isinstance(self.base, SweepConfig)

    @property
    def experiment(self) -> ExperimentConfig:
        return self.base.experiment if self.is_sweep else self.base

    @property
    def cells_total(self) -> int:
        per = self.base.cells_total if self.is_sweep else len(self.base.strategies)
        return per * len(self.candidates)

    def member(self, candidate: Candidate) -> Union[ExperimentConfig, SweepConfig]:
        """The base config with this candidate's backbone, weights and image size."""
        experiment = replace(self.experiment, backbone=BackboneSpec(candidate.backbone, candidate.weights),
                             image_size=int(candidate.image_size))
        return replace(self.base, experiment=experiment) if self.is_sweep else experiment

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "sweep": self.is_sweep,
                "candidates": [c.to_dict() for c in self.candidates], "ranking": self.ranking}

    @classmethod
    def from_dict(cls, d: dict) -> "BackbonesConfig":
        base = (SweepConfig if d.get("sweep") else ExperimentConfig).from_dict(d.get("base", {}))
        return cls(base=base, candidates=tuple(Candidate(**c) for c in d.get("candidates", [])),
                   ranking=d.get("ranking", ""))


@dataclass
class Member:
    """One candidate's comparison or sweep: its record, and the result once it ran."""

    candidate: Candidate
    record_id: str = ""
    status: str = "not started"
    result: Optional[Union[ComparisonResult, SweepResult]] = None

    def runs(self) -> list[RunResult]:
        if self.result is None:
            return []
        if isinstance(self.result, SweepResult):
            return [c.run for c in self.result.cells]
        return list(self.result.runs)


@dataclass
class BackbonesResult:
    """Strategy x backbone: every member's runs in one table, and the front of test accuracy against inference time."""

    config: BackbonesConfig
    members: list[Member]
    record_id: str = ""
    status: str = "completed"
    wall_seconds: float = 0.0

    def to_frame(self) -> pd.DataFrame:
        """One row a run (a sweep's: a cell), members in their order, then each member's strategies in order."""
        rows = []
        for member in self.members:
            for run in member.runs():
                row = {k: v for k, v in run.to_row().items() if k in RUN_COLUMNS}
                row.update({"candidate": member.candidate.label, "backbone": member.candidate.backbone,
                            "image_size": run.image_size or member.candidate.image_size, "kind": run.kind,
                            "images a class": _per_class(member, run), "record": member.record_id,
                            "ms_per_image": round(1000.0 / run.throughput_ips, 3) if run.throughput_ips else None})
                rows.append(row)
        return pd.DataFrame(rows, columns=RUN_COLUMNS)

    def front(self) -> pd.DataFrame:
        """The completed runs on the Pareto front of test accuracy (higher) against time per image (lower), cheapest
        first: no other run is at least as accurate and at least as fast, and better in one."""
        frame = self.to_frame()
        done = frame[(frame["status"] == "completed") & frame["accuracy"].notna() & frame["ms_per_image"].notna()]
        keep = [i for i, r in done.iterrows() if not any(
            (o.accuracy >= r.accuracy and o.ms_per_image <= r.ms_per_image
             and (o.accuracy > r.accuracy or o.ms_per_image < r.ms_per_image)) for o in done.itertuples())]
        return done.loc[keep].sort_values("ms_per_image")

    def best(self) -> Optional[pd.Series]:
        """The completed run of highest test accuracy; of equals, the one that trained fewer parameters (fine-tune
        that kept its start is feature extraction's model), then fewer ms per image."""
        frame = self.to_frame()
        done = frame[(frame["status"] == "completed") & frame["accuracy"].notna()]
        if done.empty:
            return None
        return done.sort_values(["accuracy", "trainable_params", "ms_per_image"],
                                ascending=[False, True, True]).iloc[0]

    def statement(self) -> str:
        """The answer in one line: the most accurate run, and the fastest run within 1 point of it when that takes
        under FASTER of its time per image (closer than that is timing noise)."""
        best = self.best()
        if best is None:
            return "No run finished."
        text = f"Most accurate: {best.strategy} on {best.candidate} ({best.accuracy:.1%} test accuracy"
        text += f", {best.ms_per_image:.1f} ms an image)" if best.ms_per_image else ")"
        front = self.front()
        near = front[(front["accuracy"] >= best.accuracy - 0.01 - 1e-12) & (front["ms_per_image"] < (
            FASTER * best.ms_per_image if best.ms_per_image else np.inf))]
        if not near.empty:
            fast = near.iloc[0]
            text += (f"; {fast.strategy} on {fast.candidate} is within 1 point ({fast.accuracy:.1%}) at "
                     f"{fast.ms_per_image / best.ms_per_image:.0%} of its time per image")
        return text + "."

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "record_id": self.record_id, "status": self.status,
                "wall_seconds": self.wall_seconds,
                "members": [{"candidate": m.candidate.to_dict(), "record_id": m.record_id, "status": m.status}
                            for m in self.members],
                "runs": self.to_frame().replace({np.nan: None}).to_dict(orient="records")}


def _per_class(member: Member, run: RunResult) -> str:
    if isinstance(member.result, SweepResult):
        cell = next((c for c in member.result.cells if c.run is run), None)
        return size_label(cell.size) if cell is not None else ""
    return size_label((run.dataset or {}).get("per_class"))


def _member_summary(members: list[Member]) -> list[dict]:
    return [{"candidate": m.candidate.to_dict(), "record_id": m.record_id, "status": m.status} for m in members]


def _relabel(callbacks: list[ProgressCallback], candidate: Candidate) -> list[ProgressCallback]:
    """Events of a member under '<candidate> · <strategy or cell>', so the members' strategies do not collide."""
    def forward(event: ProgressEvent) -> None:
        tagged = replace(event, cell=f"{candidate.label} · {event.cell or event.strategy}")
        for callback in callbacks:
            callback(tagged)
    return [forward] if callbacks else []


def compare_backbones(config: BackbonesConfig, callbacks: Optional[list[ProgressCallback]] = None,
                      cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
                      store: Optional[Store] = None, on_result: Optional[Callable[[RunResult], None]] = None,
                      label: str = "", record_id: Optional[str] = None,
                      on_member: Optional[Callable[[Member], None]] = None,
                      resume: Optional[bool] = None) -> BackbonesResult:
    """Run the base comparison (or sweep) for each candidate in order, each stored as its own record, all listed in
    one record of kind "backbones" (`record_id`: one created already, e.g. a queued job's). A member that fails does
    not stop the others; a cancel stops after the current batch and lists the members not started. `resume`: as for
    `compare` (default off) and `run_sweep` (default on), runs already stored under the same content key are
    reused."""
    store = store or default_store()
    cancel = cancel or CancelToken()
    started = time.perf_counter()
    exp = config.experiment
    if record_id is None:
        record_id = store.create_record(KIND, config.to_dict(), label=label, dataset=exp.dataset.source,
                                        backbone=", ".join(c.backbone for c in config.candidates), status="running")
    else:
        store.claim(record_id)
        store.update_record(record_id, status="running")
    members = [Member(c) for c in config.candidates]
    for member in members:
        if cancel.cancelled:
            member.status = "cancelled"
            continue
        child = store.create_record("sweep" if config.is_sweep else "comparison", config.member(member.candidate)
                                    .to_dict(), label=f"{label or 'backbones'} · {member.candidate.label}",
                                    dataset=exp.dataset.source, backbone=member.candidate.backbone, status="queued")
        member.record_id, member.status = child, "running"
        store.update_record(record_id, summary={"members": _member_summary(members)})
        relabelled = _relabel(list(callbacks or []), member.candidate)
        if config.is_sweep:
            member.result = run_sweep(config.member(member.candidate), callbacks=relabelled, cancel=cancel,
                                      cache=cache, store=store, record_id=child, label=label,
                                      on_cell=(lambda cell: on_result(cell.run)) if on_result else None,
                                      resume=True if resume is None else resume)
        else:
            member.result = compare(config.member(member.candidate), callbacks=relabelled, cancel=cancel,
                                    cache=cache, store=store, on_result=on_result, record_id=child,
                                    resume=bool(resume))
        member.status = member.result.status
        if on_member:
            on_member(member)
    status = "cancelled" if cancel.cancelled else (
        "completed" if any(m.status == "completed" for m in members) else "failed")
    result = BackbonesResult(config=config, members=members, record_id=record_id, status=status,
                             wall_seconds=round(time.perf_counter() - started, 3))
    store.update_record(record_id, status=status, summary={"members": _member_summary(members),
                                                           "wall_seconds": result.wall_seconds,
                                                           "statement": result.statement()})
    return result


def load_backbones(record_id: str, store: Optional[Store] = None) -> Optional[BackbonesResult]:
    """A stored multi-backbone comparison (also one still running or interrupted: its finished members)."""
    store = store or default_store()
    record = store.record(record_id)
    if record is None or record["kind"] != KIND:
        return None
    config = BackbonesConfig.from_dict(record["config"])
    summary = record["summary"] or {}
    stored = {(m["candidate"]["backbone"], m["candidate"]["image_size"], m["candidate"]["weights"]): m
              for m in summary.get("members", [])}
    members = []
    for candidate in config.candidates:
        row = stored.get((candidate.backbone, candidate.image_size, candidate.weights))
        member = Member(candidate)
        if row and row.get("record_id"):
            member.record_id = row["record_id"]
            child = store.record(member.record_id)
            member.status = child["status"] if child else "deleted"
            if child is not None:
                member.result = (load_sweep if config.is_sweep else load_comparison)(member.record_id, store)
        members.append(member)
    return BackbonesResult(config=config, members=members, record_id=record_id, status=record["status"],
                           wall_seconds=summary.get("wall_seconds", 0.0))
