"""timm backbones: create by name, load weights, replace the head, find stage groups with timm's own group matcher,
freeze stages (BatchNorm statistics included, via timm's FrozenBatchNorm2d), count parameters, build transforms."""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import timm
import torch
from cachetools import LRUCache
from timm.data import create_transform, resolve_model_data_config
from timm.models import group_modules, group_parameters
from timm.layers import FrozenBatchNormAct2d
from timm.utils.model import freeze
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from tlcore.core.environment import require_within_data_roots
from tlcore.core.errors import ConfigError
from tlcore.engine.weights import PACKAGED_WEIGHTS, WeightsInfo, load_pretrained, weights_availability

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """A timm model name and where its weights come from: 'pretrained', 'none', or a path to a state_dict file."""

    name: str = DEFAULT_BACKBONE
    weights: str = "pretrained"


@dataclass(frozen=True)
class StageGroup:
    """One of timm's coarse layer groups (stem, each stage, ...); fine-tuning depth counts these from the top."""

    index: int
    modules: tuple[str, ...]
    params: tuple[str, ...]
    num_params: int

    @property
    def label(self) -> str:
        first = (self.modules or self.params)[0].split(".")
        return ".".join(first[:2]) if first[0] in ("blocks", "stages", "layers") else first[0]


def _create(name: str) -> torch.nn.Module:
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:8]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise ConfigError(f"'{name}' is not a timm model name.{hint} See timm.list_models().")
    return timm.create_model(name, pretrained=False)


def model_bytes(model: torch.nn.Module) -> int:
    """The memory a model's parameters and buffers hold."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


class ModelCache:
    """Models kept by key up to a total size in bytes, least recently used out first (cachetools' LRUCache weighs
    each by `model_bytes`). A model bigger than the whole cache is handed out and not kept. A server keeps what
    visitors ask for here, so the bound is in memory, not in a count: one huge model must not stay for good."""

    def __init__(self, max_bytes: int, size=lambda value: model_bytes(value[0])) -> None:
        self.max_bytes = max_bytes
        self._cache = LRUCache(maxsize=max_bytes, getsizeof=size)
        self._lock = threading.RLock()

    def get(self, key, build):
        with self._lock:  # one build at a time: two sessions asking for the same model build it once
            if key in self._cache:
                return self._cache[key]
            value = build()
            try:
                self._cache[key] = value
            except ValueError:  # larger than the whole cache
                pass
            return value

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    @property
    def bytes_held(self) -> int:
        return int(self._cache.currsize)


TEMPLATE_CACHE_ENV = "TLCORE_MODEL_CACHE_MB"


def _template_cache_bytes() -> int:
    text = os.environ.get(TEMPLATE_CACHE_ENV, "").strip()
    try:
        return int(float(text) * 2**20) if text else 1024 * 2**20
    except ValueError:
        raise ConfigError(f"{TEMPLATE_CACHE_ENV}={text!r} is not a number of MiB; use e.g. 1024.") from None


_TEMPLATES = ModelCache(_template_cache_bytes())


def load_template(spec: BackboneSpec) -> tuple[torch.nn.Module, WeightsInfo]:
    """The model with its original (e.g. ImageNet) head, kept per process within TLCORE_MODEL_CACHE_MB (default
    1024). Never train it: use `for_run`."""

    def build() -> tuple[torch.nn.Module, WeightsInfo]:
        with torch.random.fork_rng():  # 'none' weights must be the same random weights in every process
            torch.manual_seed(0)
            model = _create(spec.name)
        info = load_pretrained(model, spec.name, spec.weights)
        return model.eval(), info

    if spec.weights not in ("pretrained", "packaged", "hub", "none", "random", "scratch"):
        # a file is checked on every use, not only when first read: a model cached for one caller is no way round
        # the data roots for the next
        require_within_data_roots(Path(spec.weights).expanduser(), "weights file")
    return _TEMPLATES.get(spec, build)


def for_run(spec: BackboneSpec, num_classes: int, pretrained: bool = True,
            seed: Optional[int] = None) -> tuple[torch.nn.Module, WeightsInfo]:
    """A private copy with a new `num_classes` head (timm's reset_classifier), or a random-init model for scratch."""
    if seed is not None:
        torch.manual_seed(seed)
    if not pretrained:
        model = _create(spec.name)
        model.reset_classifier(num_classes)
        return model, WeightsInfo("none", "random init", None, f"torch seed {seed}")
    template, info = load_template(spec)
    model = copy.deepcopy(template)
    model.reset_classifier(num_classes)
    return model, info


def classifier_names(model: torch.nn.Module) -> set[str]:
    head = model.get_classifier()
    return {name for name, module in model.named_modules() if module is head and name}


def stage_groups(model: torch.nn.Module) -> list[StageGroup]:
    """Backbone groups from timm's `group_matcher(coarse=True)`, bottom to top, the classifier excluded.

    Parameters held by the model itself (a ViT's cls_token and pos_embed) belong to the group timm assigns them to.
    """
    heads = classifier_names(model)

    def in_head(name: str) -> bool:
        return any(name == h or name.startswith(h + ".") for h in heads)

    matcher = model.group_matcher(coarse=True)
    modules = group_modules(model, matcher)
    params = group_parameters(model, matcher)
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    out: list[StageGroup] = []
    for gid in sorted(set(modules) | set(params)):
        mods = tuple(n for n in modules.get(gid, []) if not in_head(n))
        names = tuple(n for n in params.get(gid, []) if not in_head(n))
        if not mods and not names:
            continue
        out.append(StageGroup(len(out), mods, names, sum(sizes[n] for n in names)))
    return out


class FrozenBatchNormAct2dFused(FrozenBatchNormAct2d):
    """timm's FrozenBatchNormAct2d (the same buffers, state_dict and isinstance) computed by one eval-mode batch_norm
    kernel instead of four elementwise passes: the same numbers, and on a CPU a deployed frozen model runs about a
    quarter faster (docs/benchmarks.md, "Ranking backbones")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(self.drop(x))


class FrozenBatchNorm2dFused(FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d, as timm's `freeze` makes it of a plain BatchNorm2d, by the same kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


FUSED = {FrozenBatchNormAct2d: FrozenBatchNormAct2dFused, FrozenBatchNorm2d: FrozenBatchNorm2dFused}


def freeze_groups(model: torch.nn.Module, groups: list[StageGroup]) -> None:
    """Freeze parameters and swap BatchNorm for timm's FrozenBatchNorm2d, so running statistics cannot drift (each
    computed by the fused kernel: FrozenBatchNormAct2dFused)."""
    names = [n for g in groups for n in g.modules]
    if names:
        freeze(model, submodules=names, include_bn_running_stats=True)
        for module in model.modules():
            if type(module) in FUSED:
                module.__class__ = FUSED[type(module)]
    owned = dict(model.named_parameters())
    for g in groups:
        for n in g.params:
            if n in owned:
                owned[n].requires_grad_(False)


def freeze_for_strategy(model: torch.nn.Module, kind: str, stages: int | str = "all") -> tuple[list[StageGroup], int]:
    """Freeze what a strategy keeps frozen, the one way every run does it: feature extraction the whole backbone,
    fine-tune all but the top `stages` groups, scratch nothing. Returns the groups (bottom to top, found before
    freezing) and how many of the top ones stay trainable; the classifier is never frozen."""
    groups = stage_groups(model)
    k = {"feature-extraction": 0, "scratch": len(groups)}.get(kind)
    if k is None:
        k = resolve_stages(stages, len(groups))
    freeze_groups(model, groups[:len(groups) - k])
    return groups, k


def resolve_stages(stages: int | str, available: int) -> int:
    """'all' or an int in 1..available."""
    if stages == "all":
        return available
    try:
        k = int(stages)
    except (TypeError, ValueError):
        raise ConfigError(f"fine-tune stages must be a number or 'all' (got {stages!r}).") from None
    if not 1 <= k <= available:
        raise ConfigError(f"fine-tune stages must be between 1 and {available} for this backbone, or 'all' "
                          f"(got {k}).")
    return k


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting each tensor once."""
    seen: dict[int, torch.nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total


def data_config(model: torch.nn.Module, image_size: int) -> dict:
    """timm's preprocessing for this model (mean, std, interpolation, crop) at the chosen image size."""
    cfg = resolve_model_data_config(model)
    cfg["input_size"] = (3, image_size, image_size)
    return cfg


def eval_transform(cfg: dict):
    """PIL image -> uint8 CHW array (use_prefetcher=True leaves normalisation to the batch, done once on device)."""
    return create_transform(**cfg, is_training=False, use_prefetcher=True)


def transform_key(cfg: dict) -> str:
    return (f"{cfg['input_size'][1]}x{cfg['input_size'][2]}|{cfg['interpolation']}|{cfg['crop_pct']}|"
            f"{cfg.get('crop_mode', 'center')}")


WEIGHTS_LABELS = {"packaged": "offline weights installed", "packaged-missing": "offline weights: pip package missing",
                  "hub": "weights from the hub", "none": "no pretrained weights: scratch or a local file"}


def backbone_catalog() -> list[dict]:
    """Backbones for a picker: offline-weight models first, then timm's test models, then every architecture timm has
    pretrained weights for, each with where its weights would come from. Opens no connection: whether the hub is
    reachable is checked only when hub weights are asked for (see tlcore.core.environment.hub_reachable)."""
    rows = [{"name": n, "weights": weights_availability(n)} for n in PACKAGED_WEIGHTS]
    rows += [{"name": n, "weights": weights_availability(n)} for n in timm.list_models("test_*")]
    seen = {r["name"] for r in rows}
    for n in sorted({m.split(".")[0] for m in timm.list_models(pretrained=True)}):
        if n not in seen:
            rows.append({"name": n, "weights": "hub"})
    for r in rows:
        r["label"] = f"{r['name']}  ({WEIGHTS_LABELS[r['weights']]})"
    return rows
