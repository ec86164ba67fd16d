"""The three strategies as small, plain specs: what is trainable, where it starts from, how it is trained.

    feature-extraction  pretrained backbone frozen (BatchNorm statistics too), new linear head trained on cached features
    fine-tune           pretrained backbone, new head, the top `stages` timm stage groups trainable (or 'all')
    scratch             same architecture, random init, everything trainable
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Union

from .errors import ConfigError

KINDS = ("feature-extraction", "fine-tune", "scratch")
ALIASES = {"fe": "feature-extraction", "feature_extraction": "feature-extraction", "transfer": "feature-extraction",
           "linear-probe": "feature-extraction", "ft": "fine-tune", "finetune": "fine-tune", "fine_tune": "fine-tune",
           "random": "scratch", "from-scratch": "scratch"}


@dataclass(frozen=True)
class StrategySpec:
    """One strategy and its options. Fields that do not apply to a kind are ignored and not reported for it."""

    kind: str
    name: str = ""  # display name; defaults to kind
    # network training (fine-tune, scratch)
    epochs: int = 8
    lr: float = 1e-3  # head learning rate (fine-tune) or the one learning rate (scratch)
    weight_decay: float = 0.05
    batch_size: int = 32
    patience: int = 3  # early stopping on val accuracy, best checkpoint restored
    label_smoothing: float = 0.1
    augment: bool = False  # light: random resized crop (scale 0.7-1) + horizontal flip
    warmup_epochs: float = 0.5
    min_steps: int = 0  # small data: longer epochs (rounds) until this many optimizer steps (see train_network)
    # fine-tune only
    stages: Union[int, str] = 2  # top timm stage groups to train, or "all"
    backbone_lr_ratio: float = 0.1  # backbone lr = lr x ratio
    lp_ft: bool = True  # linear-probe the head on cached features first (Kumar et al., ICLR 2022)
    bn_policy: str = "train"  # BatchNorm in trainable stages: "train" (update statistics) or "frozen"
    # feature-extraction only
    head_l2_grid: tuple[float, ...] = (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
    head_max_iter: int = 300

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"Unknown strategy '{self.kind}'. Choose from {', '.join(KINDS)}.")
        if not self.name:
            object.__setattr__(self, "name", self.kind)
        if self.bn_policy not in ("train", "frozen"):
            raise ConfigError(f"bn_policy must be 'train' or 'frozen' (got '{self.bn_policy}').")
        if self.kind == "scratch" and self.bn_policy != "train":
            raise ConfigError("BatchNorm cannot be frozen when training from scratch: its statistics start random.")
        for fld, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("head_max_iter", 1)):
            if getattr(self, fld) < low:
                raise ConfigError(f"{fld} must be at least {low} (got {getattr(self, fld)}).")
        for fld in ("lr", "backbone_lr_ratio"):
            if not getattr(self, fld) > 0:
                raise ConfigError(f"{fld} must be positive (got {getattr(self, fld)}).")

    @property
    def pretrained(self) -> bool:
        return self.kind != "scratch"

    @property
    def trains_on_features(self) -> bool:
        return self.kind == "feature-extraction"

    def options(self) -> dict:
        """The options that apply to this kind, for results and tables."""
        d = asdict(self)
        head = {"head_l2_grid", "head_max_iter"}
        ft = {"stages", "backbone_lr_ratio", "lp_ft", "bn_policy"}
        net = {"epochs", "lr", "weight_decay", "batch_size", "patience", "label_smoothing", "augment",
               "warmup_epochs", "min_steps"}
        keep = {"kind", "name"} | (head if self.kind == "feature-extraction" else net | (ft if self.kind == "fine-tune"
                                                                                     else set()))
        if self.kind == "fine-tune" and self.lp_ft:
            keep |= head
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k in keep}


# Defaults per kind: scratch needs a higher learning rate and more steps than fine-tuning a pretrained network. With
# few images an epoch is only a few steps, so `min_steps` stretches each epoch into a longer round (validated once): at
# 20 images a class, 10 epochs of scratch were 60 steps and the network had not left chance level. At 100 a class, 10 epochs of scratch scored 0.712
# and 20 epochs 0.748 with a flat val curve at the end (benchmarks/bench_engine.py part 3), hence 20.
DEFAULTS: dict[str, dict] = {
    "feature-extraction": {},
    "fine-tune": {"epochs": 6, "lr": 1e-3, "stages": 2, "patience": 3, "bn_policy": "frozen", "min_steps": 150},
    "scratch": {"epochs": 20, "lr": 3e-3, "weight_decay": 0.05, "patience": 4, "warmup_epochs": 1.0,
                "min_steps": 600},
}


def canonical_kind(name: str) -> str:
    """'ft' -> 'fine-tune' and so on; unknown names are a ConfigError."""
    kind = ALIASES.get(name.strip().lower(), name.strip().lower())
    if kind not in KINDS:
        raise ConfigError(f"Unknown strategy '{kind}'. Choose from {', '.join(KINDS)}.")
    return kind


def make_strategy(kind: str, **overrides) -> StrategySpec:
    """A strategy with its kind's defaults; `overrides` with value None are ignored."""
    kind = canonical_kind(kind)
    options = dict(DEFAULTS[kind])
    options.update({k: v for k, v in overrides.items() if v is not None})
    if "head_l2_grid" in options:
        options["head_l2_grid"] = tuple(options["head_l2_grid"])
    return StrategySpec(kind=kind, **options)


def default_strategies() -> list[StrategySpec]:
    return [make_strategy(k) for k in KINDS]


def strategy_from_dict(d: dict) -> StrategySpec:
    d = dict(d)
    return make_strategy(d.pop("kind"), **d)

