"""Does the ranking pick the backbone that training would? For datasets and sizes of the built-in suite: rank the
candidates (no training), then measure feature extraction and fine-tune for every candidate with the real
comparison, and score each ranking score against the measured test accuracies.

Per score (the FE head's val accuracy, which is the ranking's order; k-NN accuracy; LogME; H-score): the weighted
Kendall tau against each strategy's measured accuracy (`scipy.stats.weightedtau`, hyperbolic weights, the measure of
thuml's model-selection benchmark: LogME 0.665, H-score 0.670 on 8 datasets and 10 ImageNet CNNs), and how often the
score's top candidate is within 1 point of the best measured one. Time: the ranking from nothing against the
measurement (which reuses the ranking's cached features, so its frozen passes are added to it).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy.stats import weightedtau

from tlcore.advice.candidates import NEAR, Ranking, candidate_sizes, rank_candidates
from tlcore.advice.validate import VALIDATION_SUITE
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label, load_dataset
from tlcore.engine.weights import PACKAGED_WEIGHTS, weights_availability
from tlcore.experiments.backbones import BackbonesConfig, Candidate, compare_backbones
from tlcore.experiments.config import build_config
from tlcore.experiments.prepare import auto_image_size

SCORES = {"fe_val_accuracy": "FE head val accuracy (the ranking)",
          "cv_accuracy": "FE head 5-fold accuracy, training + val", "knn_accuracy": "k-NN accuracy",
          "logme": "LogME", "h_score": "H-score"}
MEASURED = {"feature-extraction": "feature extraction", "fine-tune": "fine-tune"}
RANKING_SIZES = (20, 100)
PUBLISHED_TAU = {"logme": 0.665, "h_score": 0.670}  # thuml, examples/model_selection/README.md


@dataclass
class RankingCase:
    """One dataset at one size: every candidate's scores and measured accuracies."""

    dataset: str
    per_class: int
    candidates: list[dict]  # label, backbone, image_size, the scores, and measured accuracy per strategy kind
    ranking_seconds: float
    extract_seconds: float  # the ranking's frozen passes (the measurement reused them)
    measure_seconds: float
    ranking_id: str = ""
    backbones_id: str = ""

    def values(self, name: str, kind: Optional[str] = None) -> np.ndarray:
        key = f"measured:{kind}" if kind else name
        return np.array([np.nan if c.get(key) is None else float(c[key]) for c in self.candidates])

    def tau(self, score: str, kind: str) -> Optional[float]:
        """Weighted Kendall tau of a score against a strategy's measured test accuracy, over the candidates that have
        both (None when fewer than 3 or a side is constant)."""
        x, y = self.values(score), self.values("", kind)
        keep = ~(np.isnan(x) | np.isnan(y))
        if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            return None
        value = float(weightedtau(x[keep], y[keep]).statistic)
        return value if math.isfinite(value) else None

    def top_within(self, score: str, kind: str) -> Optional[bool]:
        """Whether the score's top candidate measured within 1 point of the best measured one."""
        x, y = self.values(score), self.values("", kind)
        keep = ~(np.isnan(x) | np.isnan(y))
        if not keep.any():
            return None
        top = int(np.flatnonzero(keep)[np.argmax(x[keep])])
        return bool(y[top] >= np.nanmax(y[keep]) - NEAR - 1e-12)


@dataclass
class RankingValidation:
    cases: list[RankingCase] = field(default_factory=list)
    preset: str = "quick"

    def table(self) -> pd.DataFrame:
        """Per score and measured strategy: mean weighted tau, share of cases whose top candidate was within 1 point
        of the best, and the cases counted."""
        rows = []
        for score, words in SCORES.items():
            for kind, kind_words in MEASURED.items():
                if not any(f"measured:{kind}" in row for case in self.cases for row in case.candidates):
                    continue
                taus = [t for t in (c.tau(score, kind) for c in self.cases) if t is not None]
                tops = [t for t in (c.top_within(score, kind) for c in self.cases) if t is not None]
                rows.append({"score": words, "measured": kind_words,
                             "mean weighted tau": round(float(np.mean(taus)), 3) if taus else None,
                             "top within 1 point": round(float(np.mean(tops)), 3) if tops else None,
                             "cases": len(taus), "published tau": PUBLISHED_TAU.get(score)})
        return pd.DataFrame(rows)

    def timing(self) -> dict:
        ranking = sum(c.ranking_seconds for c in self.cases)
        measure = sum(c.measure_seconds + c.extract_seconds for c in self.cases)
        return {"ranking_seconds": round(ranking, 1), "measurement_seconds": round(measure, 1),
                "ratio": round(ranking / measure, 3) if measure else None}

    def to_dict(self) -> dict:
        return {"preset": self.preset, "cases": [asdict(c) for c in self.cases],
                "table": self.table().replace({np.nan: None}).to_dict(orient="records"), "timing": self.timing()}


def validation_candidates(spec: DatasetSpec, seed: int = 0) -> list[Candidate]:
    """Every installed backbone at the automatic CPU size and at twice it (capped at its pretrained size): the
    sizes a CPU user can afford to fine-tune at, so every candidate can be measured."""
    native = load_dataset(spec, seed=seed).native_size()
    low = auto_image_size(native, "cpu")
    out = []
    for name in PACKAGED_WEIGHTS:
        if weights_availability(name) != "packaged":
            continue
        top = max(candidate_sizes(name, native))
        out += [Candidate(name, size) for size in sorted({low, min(2 * low, top)})]
    return out


def _row(ranking: Ranking, label: str) -> dict:
    c = next(r for r in ranking.candidates if r.label == label)
    return {"label": c.label, "backbone": c.backbone, "image_size": c.image_size, "rank": c.rank,
            **{s: getattr(c, s) for s in SCORES}, "macs": c.macs, "ms_per_image": c.ms_per_image}


def validate_ranking(datasets: Sequence[DatasetSpec] = tuple(VALIDATION_SUITE), sizes: Sequence[int] = RANKING_SIZES,
                     preset: str = "quick", seed: int = 0, candidates: Optional[list[Candidate]] = None,
                     progress: Optional[Callable[[str], None]] = None,
                     strategies: Sequence[str] = tuple(MEASURED)) -> RankingValidation:
    """Rank, then measure feature extraction and fine-tune (the preset's schedules) for every candidate, for each
    dataset and size; both stored (a ranking and a multi-backbone comparison a case). Runs already stored under the
    same content key are reused, so running it again re-scores the rankings without training again."""
    out = RankingValidation(preset=preset)
    say = progress or (lambda _m: None)
    for spec in datasets:
        chosen = candidates or validation_candidates(spec, seed)
        for size in sizes:
            name = dataset_label(spec)
            say(f"{name}, {size} a class: ranking {len(chosen)} candidates")
            started = time.perf_counter()
            ranking = rank_candidates(spec, chosen, per_class=size, seed=seed)
            ranking_seconds = time.perf_counter() - started
            done = [c.candidate for c in ranking.completed]
            say(f"  {ranking.statement} ({ranking_seconds:.0f} s); measuring {len(done)} candidates")
            config = BackbonesConfig(build_config(preset, dataset=spec, per_class=size, seed=seed,
                                                  strategies=list(strategies)), tuple(done),
                                    ranking=ranking.record_id)
            measured = compare_backbones(config, label=f"ranking validation · {name} · {size}/class", resume=True)
            rows = {c.label: _row(ranking, c.label) for c in done}
            for member in measured.members:
                for run in member.runs():
                    if run.status == "completed":
                        rows[member.candidate.label][f"measured:{run.kind}"] = run.accuracy
            case = RankingCase(name, size, list(rows.values()), round(ranking_seconds, 2),
                               round(ranking.extract_seconds, 2), round(measured.wall_seconds, 2),
                               ranking.record_id, measured.record_id)
            out.cases.append(case)
            taus = ", ".join(f"{k}: {case.tau('fe_val_accuracy', k):.2f}" if case.tau('fe_val_accuracy', k)
                             is not None else f"{k}: -" for k in strategies)
            say(f"  measured in {measured.wall_seconds:.0f} s; weighted tau of the ranking: {taus}")
    return out
