"""The network as a stack: stem -> each timm stage group -> pooling -> head, with each block's parameters, output
shape at an image size and multiply-adds, and what each strategy freezes.

Everything comes from the model and from the engine's own code, nothing is guessed from names:

- blocks are the stage groups fine-tuning counts (`backbone.stage_groups`, timm's `group_matcher`); a group's
  *units* are its outermost modules (every parameter-holding module inside belongs to that group);
- a stage's output is what the next stage receives (a forward pre-hook on the next group's first unit, so a ResNet
  stem's pooling and a ViT's position embedding belong to the stage before), and the last stage's is
  `forward_features`, the map the head pools;
- multiply-adds are torch's `FlopCounterMode` per module (convolutions, matrix products, attention) / 2;
- frozen vs trainable and BatchNorm statistics are read off a copy of the model after the engine's own freezing
  (`backbone.freeze_for_strategy`) and, for the strategies that train the network, the training mode
  `train.train_network` sets (`train.set_train_mode` with `bn_statistics_frozen`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from tlcore.core.errors import ConfigError
from tlcore.engine import backbone as bb
from tlcore.engine.strategies import StrategySpec, make_strategy
from tlcore.engine.train import bn_statistics_frozen, set_train_mode


# -- units and stage outputs -----------------------------------------------------------------------------------------
def group_units(model: torch.nn.Module, groups: list[bb.StageGroup]) -> list[tuple[str, ...]]:
    """For each group, its outermost modules: those whose parameter-holding modules all belong to that group (a
    module that also holds the classifier or another group's layers is not a unit). In definition order."""
    owners: dict[str, set[int]] = {}
    grouped = {n: g.index for g in groups for n in g.modules}
    for name, module in model.named_modules():
        if not name or not any(True for _ in module.parameters(recurse=False)):
            continue
        gid = grouped.get(name, -1)  # -1: the classifier, or a module no group claims
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            owners.setdefault(".".join(parts[:depth]), set()).add(gid)
    owned = {n: next(iter(s)) for n, s in owners.items() if len(s) == 1 and -1 not in s}
    units: list[list[str]] = [[] for _ in groups]
    for name in owners:  # insertion order follows named_modules: definition order, parents first
        if name in owned and name.rpartition(".")[0] not in owned:
            units[owned[name]].append(name)
    return [tuple(u) for u in units]


def group_label(group: bb.StageGroup, units: tuple[str, ...]) -> str:
    """The group's label, plus the units outside it: 'blocks.6 + conv_head + bn2'."""
    extra = [u for u in units if not (u == group.label or u.startswith(group.label + "."))]
    return " + ".join([group.label] + extra)


class StageTaps:
    """While active, records each stage's output: the input of the next group's first unit to be called. Use as a
    context manager around `forward_features`; the last stage's output is what `forward_features` returns."""

    def __init__(self, model: torch.nn.Module, groups: Optional[list[bb.StageGroup]] = None) -> None:
        self.model = model
        self.groups = groups if groups is not None else bb.stage_groups(model)
        self.units = group_units(model, self.groups)
        self.entered: dict[int, object] = {}
        self.order: list[int] = []
        self._handles: list = []

    def __enter__(self) -> "StageTaps":
        self.entered, self.order = {}, []
        modules = dict(self.model.named_modules())
        for gid, names in enumerate(self.units):
            for name in names:
                self._handles.append(modules[name].register_forward_pre_hook(self._hook(gid)))
        return self

    def _hook(self, gid: int):
        def pre(module, args):
            if gid not in self.entered:
                self.entered[gid] = args[0] if args else None
                self.order.append(gid)
        return pre

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def outputs(self) -> list[torch.Tensor]:
        """Outputs of every stage but the last, bottom to top (call after a forward pass)."""
        if self.order != sorted(self.order) or set(self.order) != set(range(len(self.groups))):
            raise ConfigError(f"{type(self.model).__name__}: its stage groups do not run one after another "
                              f"(call order {self.order}), so a stage's output is not defined.")
        outs = [self.entered[g] for g in range(1, len(self.groups))]
        if not all(isinstance(o, torch.Tensor) for o in outs):
            raise ConfigError(f"{type(self.model).__name__}: a stage does not pass a single tensor to the next.")
        return outs


def pool_stage(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One vector per image from an intermediate stage output: a CNN map with the model's own global pooling (timm's
    SelectAdaptivePool2d, else the spatial mean); a transformer's tokens by the mean of the patch tokens (a class
    token is nearly constant before the last blocks); anything else flattened."""
    if x.ndim == 4:
        pool = getattr(model, "global_pool", None)
        if isinstance(pool, torch.nn.Module) and type(pool).__name__ == "SelectAdaptivePool2d":
            return pool(x).flatten(1)
        return x.mean((2, 3))
    if x.ndim == 3:
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        return x[:, prefix:].mean(1) if x.shape[1] > prefix else x.mean(1)
    return x.flatten(1)


class StageEmbedding(torch.nn.Module):
    """Image batch -> the pooled output of every stage, concatenated: stages 0..n-2 pooled by `pool_stage`, the last
    exactly the feature-extraction features, `forward_head(forward_features(x), pre_logits=True)`. One pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.taps = StageTaps(model)
        self.dims: Optional[list[int]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.taps:
            feats = self.model.forward_features(x)
        parts = [pool_stage(self.model, o) for o in self.taps.outputs()]
        parts.append(self.model.forward_head(feats, pre_logits=True))
        parts = [p.flatten(1).float() for p in parts]
        self.dims = [p.shape[1] for p in parts]
        return torch.cat(parts, 1)


# -- the stack ---------------------------------------------------------------------------------------------------------
BN_NONE, BN_FROZEN, BN_UPDATING = "none", "frozen", "updating"


@dataclass(frozen=True)
class Block:
    """One box of the diagram. kind: 'stem', 'stage', 'pooling' or 'head'; `group` is the stage group's index
    (fine-tune K counts groups from the top), None for pooling and head."""

    kind: str
    label: str
    units: tuple[str, ...]
    params: int
    output_shape: tuple[int, ...]  # per image, without the batch dimension
    macs: int
    batchnorms: int
    group: Optional[int] = None


@dataclass(frozen=True)
class BlockState:
    """A block under one strategy: trainable parameters, and BatchNorm statistics 'none', 'frozen' or 'updating'."""

    trainable_params: int
    params: int
    bn: str

    @property
    def trainable(self) -> bool:
        return self.trainable_params > 0

    @property
    def state(self) -> str:
        if not self.params:
            return "no parameters"
        return "trainable" if self.trainable_params == self.params else "frozen" if not self.trainable_params else \
            "partly trainable"


@dataclass(frozen=True)
class StrategyView:
    """What one strategy freezes, block by block (same order as Anatomy.blocks)."""

    kind: str
    stages: int  # stage groups trained (0 for feature extraction)
    bn_policy: str
    blocks: tuple[BlockState, ...]
    trainable_params: int
    total_params: int

    @property
    def label(self) -> str:
        if self.kind == "fine-tune":
            return f"fine-tune, top {self.stages} stage{'s' if self.stages != 1 else ''} (BatchNorm {self.bn_policy})"
        return self.kind


@dataclass
class Anatomy:
    backbone: str
    image_size: int
    num_classes: int
    total_params: int
    total_macs: int
    blocks: list[Block]
    views: dict[str, StrategyView] = field(default_factory=dict)
    weights: str = ""  # the weights the model was measured with ('random initialisation' when none were available)

    @property
    def num_stages(self) -> int:
        """Stage groups, the stem included: what fine-tune 'all' trains."""
        return sum(b.group is not None for b in self.blocks)

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "image_size": self.image_size, "num_classes": self.num_classes,
                "weights": self.weights,
                "total_params": self.total_params, "total_macs": self.total_macs, "num_stages": self.num_stages,
                "blocks": [asdict(b) for b in self.blocks],
                "views": {k: {**asdict(v), "label": v.label} for k, v in self.views.items()}}


def _shape(x) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape[1:]) if isinstance(x, torch.Tensor) else ()


def _batchnorms(model: torch.nn.Module, units: tuple[str, ...]) -> list[torch.nn.Module]:
    out = []
    for unit in units:
        for m in model.get_submodule(unit).modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) or type(m).__name__.startswith("FrozenBatchNorm"):
                out.append(m)
    return out


def describe(model: torch.nn.Module, image_size: int, name: str = "") -> Anatomy:
    """The stack of `model` (not modified: a copy is measured) at `image_size` pixels."""
    model = copy.deepcopy(model).float().eval()
    groups = bb.stage_groups(model)
    units = group_units(model, groups)
    head = model.get_classifier()
    head_names = sorted(bb.classifier_names(model))
    x = torch.zeros(1, 3, image_size, image_size)
    try:
        with torch.no_grad():
            taps = StageTaps(model, groups)
            with taps:
                feats = model.forward_features(x)
            outs = taps.outputs() + [feats]
            pooled = model.forward_head(feats, pre_logits=True)
            logits = model.forward_head(feats)
            with FlopCounterMode(display=False) as counter:
                model(x)
    except ConfigError:
        raise
    except Exception as exc:  # e.g. a ViT made for another input size
        raise ConfigError(f"{name or type(model).__name__} does not run at {image_size} px: {exc}") from exc
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def macs(module_names) -> int:
        return int(sum(sum(counts.get(f"{root}.{n}", {}).values()) for n in module_names) // 2)

    total_macs = int(sum(counts.get("Global", {}).values()) // 2)
    total_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    head_params = sum(p.numel() for p in head.parameters())
    blocks = []
    for g, u, out in zip(groups, units, outs):
        blocks.append(Block("stem" if g.index == 0 else "stage", group_label(g, u), u, g.num_params, _shape(out),
                            macs(u), len(_batchnorms(model, u)), g.index))
    head_macs = macs(head_names)
    pool_params = total_params - sum(g.num_params for g in groups) - head_params
    pool_macs = max(0, total_macs - sum(b.macs for b in blocks) - head_macs)
    pool = getattr(model, "global_pool", None)
    pool_kind = getattr(pool, "pool_type", pool) if pool is not None else ""
    blocks.append(Block("pooling", f"pooling ({pool_kind})" if isinstance(pool_kind, str) and pool_kind else "pooling",
                        (), pool_params, _shape(pooled), pool_macs, 0))
    blocks.append(Block("head", f"head ({', '.join(head_names)})", tuple(head_names), head_params, _shape(logits),
                        head_macs, 0))
    return Anatomy(name or getattr(model, "default_cfg", {}).get("architecture", root), image_size,
                   int(logits.shape[1]), total_params, total_macs, blocks)


def strategy_view(model: torch.nn.Module, anatomy: Anatomy, spec: StrategySpec) -> StrategyView:
    """Freeze a copy of `model` the way a run of `spec` does and read what trains and which BatchNorm statistics
    update: requires_grad after `freeze_for_strategy`, and BatchNorm modes after the training mode train_network
    sets (feature extraction never trains the network: its backbone stays in eval mode)."""
    model = copy.deepcopy(model)
    groups, k = bb.freeze_for_strategy(model, spec.kind, spec.stages)
    if spec.kind == "feature-extraction":
        model.eval()
    else:
        set_train_mode(model, bn_statistics_frozen(spec))
    params = dict(model.named_parameters())
    states = []
    for block in anatomy.blocks:
        if block.kind == "head":
            names = [n for n in params if any(n.startswith(h + ".") for h in block.units)]
        elif block.kind == "pooling":
            grouped = {n for g in groups for n in g.params}
            heads = anatomy.blocks[-1].units
            names = [n for n in params if n not in grouped and not any(n.startswith(h + ".") for h in heads)]
        else:
            names = [n for n in groups[block.group].params if n in params]
        trainable = sum(params[n].numel() for n in names if params[n].requires_grad)
        bns = _batchnorms(model, block.units) if block.group is not None else []
        updating = [isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
                    for m in bns]
        bn = BN_NONE if not bns else BN_UPDATING if all(updating) else BN_FROZEN if not any(updating) else "mixed"
        states.append(BlockState(trainable, block.params, bn))
    # FrozenBatchNorm2d holds its scale and shift as buffers: the totals are the unfrozen model's
    return StrategyView(spec.kind, k, spec.bn_policy, tuple(states), bb.count_parameters(model)[0],
                        anatomy.total_params)


def standard_views(model: torch.nn.Module, anatomy: Anatomy, stages: int | str = 2,
                   bn_policy: Optional[str] = None) -> dict[str, StrategyView]:
    """Feature extraction, fine-tune with the top `stages` groups (the default BatchNorm policy unless given) and
    scratch, each as the engine would run it."""
    ft = make_strategy("fine-tune", stages=stages, bn_policy=bn_policy)
    return {s.kind: strategy_view(model, anatomy, s)
            for s in (make_strategy("feature-extraction"), ft, make_strategy("scratch"))}


def backbone_anatomy(spec: bb.BackboneSpec | str, image_size: Optional[int] = None,
                     num_classes: Optional[int] = None, stages: int | str = 2,
                     bn_policy: Optional[str] = None) -> tuple[Anatomy, torch.nn.Module]:
    """The anatomy of a backbone with a `num_classes` head (its own head when None) at `image_size` (the model's
    default input size when None), with the three standard strategy views. Weights do not change the anatomy: a
    backbone without weights here is described from its random initialisation. Returns the model for more views."""
    spec = bb.BackboneSpec(spec) if isinstance(spec, str) else spec
    try:
        model, info = bb.load_template(spec)
    except Exception:  # weights unavailable: the structure is the same
        model, info = bb.load_template(bb.BackboneSpec(spec.name, "none"))
    model = copy.deepcopy(model)
    if num_classes is not None:
        model.reset_classifier(num_classes)
    size = image_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    anatomy = describe(model, size, spec.name)
    anatomy.weights = info.name if info.pretrained else "random initialisation"
    anatomy.views = standard_views(model, anatomy, stages, bn_policy)
    return anatomy, model


ANATOMY_CACHE_BYTES = 512 * 2**20
_MEASURED = bb.ModelCache(ANATOMY_CACHE_BYTES, size=lambda value: bb.model_bytes(value[1]))


def measured_anatomy(backbone: str, weights: str, image_size: int, num_classes: int) -> tuple[Anatomy, torch.nn.Module]:
    """`backbone_anatomy` kept per process within 512 MiB of models, so a server measures each network once and
    visitors who ask for many networks cannot make it hold them all. Share the model read-only: copy it to change
    it."""
    return _MEASURED.get((backbone, weights, image_size, num_classes),
                         lambda: backbone_anatomy(bb.BackboneSpec(backbone, weights), image_size, num_classes))
