"""Layer-wise probe: how well a linear head does on the pooled output of every stage, for the pretrained backbone
and for the same architecture with random weights.

One frozen forward pass per image collects every stage's pooled output (`tlcore.engine.anatomy.StageEmbedding`,
run by the same extraction code as feature extraction and cached the same way, under a key of its own). Each stage
gets the feature-extraction strategy's head: L-BFGS logistic regression, L2 picked on val (`fit_linear_head`). The
last stage's features are exactly the feature-extraction features, so its accuracy is the feature-extraction
strategy's on the same split.

Where the pretrained curve peaks before the last stage, the stages after the peak are specific to the source task:
the case for fine-tuning from there on (Yosinski et al., NeurIPS 2014). The random curve shows what depth alone
gives without pretraining.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional

import torch

from tlcore.core.environment import read_only
from tlcore.engine import backbone as bb
from tlcore.engine.anatomy import StageEmbedding, StageTaps, group_label
from tlcore.engine.features import ExtractOptions, FeatureCache, FeatureContext, default_cache, split_features
from tlcore.engine.strategies import StrategySpec, make_strategy
from tlcore.engine.train import fit_linear_head
from tlcore.experiments.config import ExperimentConfig, size_label
from tlcore.experiments.prepare import CellData, Prepared, prepare
from tlcore.records.store import Store, default_store

PROBE_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass
class ProbePoint:
    """One stage: the width of its pooled output and the linear head's accuracy on it."""

    stage: int  # stage group index, bottom (stem) = 0
    label: str
    dim: int
    val_accuracy: float
    test_accuracy: float
    l2: float


@dataclass
class ProbeCurve:
    weights: str  # 'pretrained' or 'random'
    weights_id: str
    points: list[ProbePoint]
    feature_seconds: float  # the forward pass (0 when every row came from the cache)
    head_seconds: float
    rows_computed: int

    @property
    def peak(self) -> ProbePoint:
        """The stage with the best val accuracy (a tie goes to the later stage: the last one is feature extraction)."""
        return max(reversed(self.points), key=lambda p: p.val_accuracy)


@dataclass
class ProbeResult:
    backbone: str
    weights: str  # the pretrained weights' description
    image_size: int
    dataset: str
    per_class: str
    seed: int
    classes: int
    images: dict[str, int]
    curves: dict[str, ProbeCurve] = field(default_factory=dict)
    record_id: str = ""  # set when stored (save_probe)
    command: str = ""  # the CLI line that measures it again

    @property
    def num_stages(self) -> int:
        return len(next(iter(self.curves.values())).points)

    def statement(self) -> str:
        """Where the pretrained features stop transferring, in one or two sentences."""
        curve = self.curves.get("pretrained")
        if curve is None:
            return "No pretrained weights: only the random-weights curve was measured."
        last, peak = curve.points[-1], curve.peak
        words = (f"The pretrained features peak at stage {peak.stage} ({peak.label}, val {peak.val_accuracy:.3f})"
                 if peak.stage != last.stage else
                 f"The pretrained features are best at the last stage ({last.label}, val {last.val_accuracy:.3f})")
        proposed = propose_stages(curve)
        k = f"K={proposed}" if proposed == "all" else f"the top {proposed} stage{'s' if proposed != 1 else ''}"
        if peak.stage != last.stage:
            later = self.num_stages - 1 - peak.stage
            after = "the stage after it is" if later == 1 else f"the {later} stages after it are"
            words += (f" and fall to {last.val_accuracy:.3f} at the last stage: {after} specific to the source task, "
                      f"the case for fine-tuning from there on ({k}).")
        else:
            words += f": they transfer all the way up, so the probe proposes fine-tuning {k}."
        words += (" (On the built-in suite this proposal was best or within 1 point less often than always fine-tuning "
                  "the top 2, so the recommendation keeps 2.)")
        rnd = self.curves.get("random")
        if rnd is not None:
            gap = last.val_accuracy - rnd.points[-1].val_accuracy
            words += (f" Random weights reach val {rnd.peak.val_accuracy:.3f} at best ({rnd.peak.label}); "
                      f"pretraining adds {gap * 100:+.1f} points at the last stage.")
        return words

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeResult":
        d = dict(d)
        curves = {k: ProbeCurve(**{**v, "points": [ProbePoint(**p) for p in v["points"]]})
                  for k, v in d.pop("curves", {}).items()}
        return cls(**d, curves=curves)


def _labels(model: torch.nn.Module) -> list[str]:
    taps = StageTaps(model)
    return [group_label(g, units) for g, units in zip(taps.groups, taps.units)]


def stage_dims(model: torch.nn.Module, image_size: int) -> list[int]:
    """Width of every stage's pooled output at `image_size` (one image through StageEmbedding)."""
    embed = StageEmbedding(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            embed(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    return list(embed.dims)


def stage_features(prepared: Prepared, data: CellData, model: torch.nn.Module, weights_id: str,
                   cache: Optional[FeatureCache] = None, extract: Optional[ExtractOptions] = None,
                   splits: tuple[str, ...] = SPLITS) -> dict[str, torch.Tensor]:
    """Every stage's pooled output for each split, concatenated (columns in stage order), through the feature cache
    under a key of their own: the backbone, the weights, the data and the preprocessing."""
    context = FeatureContext(model=model, backbone_name=f"{prepared.config.backbone.name}|stages-v{PROBE_VERSION}",
                             weights_sha=weights_id, dataset=data.dataset, splits=data.splits, cfg=data.cfg,
                             transform_key=data.transform_key, device=prepared.device, cache=cache,
                             options=extract or ExtractOptions(), embedding=StageEmbedding)
    return {s: split_features(context, s) for s in splits}


def probe_curve(feats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], dims: list[int],
                names: list[str], num_classes: int, head: StrategySpec,
                progress: Optional[Callable[[str], None]] = None) -> tuple[list[ProbePoint], float]:
    """A linear head per stage (the feature-extraction head, L2 picked on val); val and test accuracy."""
    points, start, offset = [], time.perf_counter(), 0
    for stage, (dim, name) in enumerate(zip(dims, names)):
        cols = {s: feats[s][:, offset:offset + dim].contiguous() for s in SPLITS}
        offset += dim
        fit = fit_linear_head(cols["train"], labels["train"], cols["val"], labels["val"], num_classes,
                              head.head_l2_grid, head.head_max_iter)
        test_logits = cols["test"] @ fit.weight.T + fit.bias
        test_acc = int((test_logits.argmax(1) == labels["test"]).sum()) / max(1, len(labels["test"]))  # as score()
        points.append(ProbePoint(stage, name, dim, fit.val_accuracy, test_acc, fit.l2))
        if progress:
            progress(f"stage {stage} {name}: {dim} features, val {fit.val_accuracy:.3f}, test {test_acc:.3f}")
    return points, time.perf_counter() - start


def layer_probe(config: ExperimentConfig, random_weights: bool = True, cache: Optional[FeatureCache] = None,
                extract: Optional[ExtractOptions] = None,
                progress: Optional[Callable[[str], None]] = None) -> ProbeResult:
    """The probe on `config`'s data, split, image size and backbone (the feature-extraction head options from its
    feature-extraction strategy if it has one). Refused in read-only mode, as `prepare` refuses."""
    head = next((s for s in config.strategies if s.kind == "feature-extraction"), make_strategy("feature-extraction"))
    prepared = prepare(replace(config, strategies=(head,)))
    ds = prepared.subset(config.dataset.per_class, config.seed)
    data = prepared.cell_data(ds)
    labels = {s: data.splits[s].labels for s in SPLITS}
    cache = cache or default_cache()
    size = prepared.image_size.pixels
    models = []
    if prepared.weights.pretrained:
        models.append(("pretrained", prepared.reference, prepared.weights_id))
    if random_weights or not prepared.weights.pretrained:
        model, info = bb.load_template(replace(config.backbone, weights="none"))
        models.append(("random", model, info.sha256 or info.name))
    result = ProbeResult(config.backbone.name, prepared.weights.name, size, ds.name,
                         size_label(config.dataset.per_class), config.seed, ds.num_classes,
                         {s: len(labels[s]) for s in SPLITS}, command=probe_command(config, size, random_weights))
    for kind, model, weights_id in models:
        dims, names = stage_dims(model, size), _labels(model)
        if progress:
            progress(f"{kind} weights: one pass over {sum(result.images.values())} images, {len(dims)} stages")
        before = cache.stats.rows_computed
        start = time.perf_counter()
        feats = stage_features(prepared, data, model, weights_id, cache, extract)
        seconds = time.perf_counter() - start
        points, head_seconds = probe_curve(feats, labels, dims, names, ds.num_classes, head, progress)
        result.curves[kind] = ProbeCurve(kind, weights_id, points, round(seconds, 3), round(head_seconds, 3),
                                         cache.stats.rows_computed - before)
    return result


def probe_table(result: ProbeResult) -> list[dict]:
    """One row per stage: val and test accuracy of each curve."""
    rows = []
    for i in range(result.num_stages):
        row: dict = {}
        for kind, curve in result.curves.items():
            p = curve.points[i]
            row.update({"stage": p.stage, "block": p.label, "features": p.dim, f"{kind} val": round(p.val_accuracy, 4),
                        f"{kind} test": round(p.test_accuracy, 4)})
        rows.append(row)
    return rows


def propose_stages(curve: ProbeCurve) -> int | str:
    """How many top stages to fine-tune, from the probe: the stages after the pretrained peak (val; a tie goes to the
    later stage), at least 1; 'all' when the stem peaks. Checked against measured fine-tunes by
    `tlcore.advice.depth.validate_depth`."""
    later = len(curve.points) - 1 - curve.peak.stage
    if later >= len(curve.points) - 1:
        return "all"
    return max(1, later)



def probe_command(config: ExperimentConfig, image_size: int, random_weights: bool) -> str:
    """`python -m tlcore anatomy ...` with this probe's data, size, backbone, weights and seed."""
    spec = config.dataset
    dataset = spec.source + (":" + "|".join(spec.classes) if spec.classes else "")
    parts = ["python", "-m", "tlcore", "anatomy", "--dataset", dataset, "--per-class", size_label(spec.per_class),
             "--backbone", config.backbone.name, "--weights", config.backbone.weights, "--image-size",
             str(image_size), "--seed", str(config.seed)] + ([] if random_weights else ["--no-random"])
    return " ".join(shlex.quote(p) for p in parts)


def save_probe(result: ProbeResult, config: ExperimentConfig, random_weights: bool,
               store: Optional[Store] = None) -> str:
    """Store a probe as a record (kind 'probe'): it gets a share link, a report and a place in the history. The same
    inputs probed again update the record already stored. Nothing is stored in read-only mode ('' returned)."""
    if read_only():
        return ""
    store = store or default_store()
    key = {"experiment": config.to_dict(), "random_weights": random_weights, "image_size": result.image_size,
           "probe_version": PROBE_VERSION}
    key = json.loads(json.dumps(key, default=str))
    existing = next((r for r in store.records(kind="probe") if r["config"] == key), None)
    peak = result.curves.get("pretrained") or next(iter(result.curves.values()))
    label = f"probe: peak at stage {peak.peak.stage} of {result.num_stages - 1}"
    result.record_id = existing["id"] if existing else store.create_record(
        "probe", key, label=label, dataset=result.dataset, backbone=config.backbone.name,
        status="completed")
    store.update_record(result.record_id, summary=result.to_dict())
    return result.record_id


def probe_from_record(record: dict) -> ProbeResult:
    """The probe a stored record holds (History, share links, reports)."""
    result = ProbeResult.from_dict(record["summary"])
    result.record_id = record["id"]
    return result
