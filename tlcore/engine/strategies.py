"""The three strategies as small, plain specs: what is trainable, where it starts from, how it is trained.

    feature-extraction  pretrained backbone frozen (BatchNorm statistics too), new linear head trained on cached
                        features
    fine-tune           pretrained backbone, new head, the top `stages` timm stage groups trainable (or 'all')
    scratch             same architecture, random init, everything trainable
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

from tlcore.core.errors import ConfigError

KINDS = ("feature-extraction", "fine-tune", "scratch")
ALIASES = {"fe": "feature-extraction", "feature_extraction": "feature-extraction", "transfer": "feature-extraction",
           "linear-probe": "feature-extraction", "ft": "fine-tune", "finetune": "fine-tune", "fine_tune": "fine-tune",
           "random": "scratch", "from-scratch": "scratch"}


# The one place where defaults live. `COMMON` holds the values every kind shares; `KIND_DEFAULTS` what differs by
# kind. Why these values (the measurements behind them: docs/benchmarks.md, "Figures moved from code comments"):
# - Scratch needs a higher learning rate and more steps than fine-tuning a pretrained network, and 20 epochs: its val
#   curve is still rising at 10.
# - With few images an epoch is only a few steps, so `min_steps` stretches each epoch into a longer round; without it
#   scratch on small data takes too few optimizer steps to leave chance level.
# - Scratch trains in batches of 64 (more images a second than 32 on a CPU; the learning rate scaled by sqrt(2)) with
#   light augmentation (crop + flip), which keeps its accuracy at 20 epochs in less time.
# - Fine-tuning keeps BatchNorm statistics frozen (a small batch's statistics are noisy); scratch must update them
#   (they start random).
# - Scratch's early stopping ignores val gains of a point or less (`min_delta`, the tolerance `still_rising` calls
#   flat): its val curve wanders within a point for several epochs, and each new best by an image or two would reset
#   patience. Fine-tuning keeps min_delta 0: its stop can only save its last epoch or two, and those still add test
#   accuracy.
COMMON: dict = {"epochs": 8, "lr": 1e-3, "weight_decay": 0.05, "batch_size": 32, "patience": 3, "min_delta": 0.0,
                "label_smoothing": 0.1, "augment": False, "warmup_epochs": 0.5, "min_steps": 0, "stages": 2,
                "backbone_lr_ratio": 0.1, "lp_ft": True, "bn_policy": "train",
                "head_l2_grid": (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), "head_max_iter": 300}
KIND_DEFAULTS: dict[str, dict] = {
    "feature-extraction": {},
    "fine-tune": {"epochs": 6, "lr": 1e-3, "stages": 2, "patience": 3, "bn_policy": "frozen", "min_steps": 150},
    "scratch": {"epochs": 20, "lr": 4.2e-3, "weight_decay": 0.05, "patience": 4, "warmup_epochs": 1.0,
                "min_steps": 300, "batch_size": 64, "augment": True, "min_delta": 0.01},
}


def default_option(kind: str, option: str):
    """The default of one option for one kind (what a page shows before the user changes it)."""
    return KIND_DEFAULTS[canonical_kind(kind)].get(option, COMMON[option])


@dataclass(frozen=True)
class StrategySpec:
    """One strategy and its options. An option left at None takes its kind's default (`KIND_DEFAULTS`, then `COMMON`),
    so `StrategySpec("fine-tune")` and `make_strategy("fine-tune")` are the same spec. Options that do not apply to a
    kind are ignored and not reported for it."""

    kind: str
    name: str = ""  # display name; defaults to kind
    # network training (fine-tune, scratch)
    epochs: Optional[int] = None
    lr: Optional[float] = None  # head learning rate (fine-tune) or the one learning rate (scratch)
    weight_decay: Optional[float] = None
    batch_size: Optional[int] = None
    patience: Optional[int] = None  # early stopping on val accuracy, best checkpoint restored
    min_delta: Optional[float] = None  # a val accuracy rise (fraction) must exceed this to reset patience
    label_smoothing: Optional[float] = None
    augment: Optional[bool] = None  # light: random resized crop (scale 0.7-1) + horizontal flip
    warmup_epochs: Optional[float] = None
    min_steps: Optional[int] = None  # small data: longer epochs (rounds) until this many optimizer steps
    # fine-tune only
    stages: Union[int, str, None] = None  # top timm stage groups to train, or "all"
    backbone_lr_ratio: Optional[float] = None  # backbone lr = lr x ratio
    lp_ft: Optional[bool] = None  # linear-probe the head on cached features first (Kumar et al., ICLR 2022)
    bn_policy: Optional[str] = None  # BatchNorm in trainable stages: "train" (update statistics) or "frozen"
    # feature-extraction (and the LP-FT warm-up)
    head_l2_grid: Optional[tuple[float, ...]] = None
    head_max_iter: Optional[int] = None

    def __post_init__(self) -> None:
        kind = canonical_kind(self.kind)
        object.__setattr__(self, "kind", kind)
        if not self.name:
            object.__setattr__(self, "name", kind)
        for option in COMMON:
            if getattr(self, option) is None:
                object.__setattr__(self, option, default_option(kind, option))
        object.__setattr__(self, "head_l2_grid", tuple(float(v) for v in self.head_l2_grid))
        if self.bn_policy not in ("train", "frozen"):
            raise ConfigError(f"bn_policy must be 'train' or 'frozen' (got '{self.bn_policy}').")
        if kind == "scratch" and self.bn_policy != "train":
            raise ConfigError("BatchNorm cannot be frozen when training from scratch: its statistics start random.")
        if not (self.stages == "all" or (isinstance(self.stages, int) and self.stages >= 1)):
            raise ConfigError(f"stages must be a whole number of at least 1 or 'all' (got {self.stages!r}).")
        for fld, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("head_max_iter", 1)):
            if getattr(self, fld) < low:
                raise ConfigError(f"{fld} must be at least {low} (got {getattr(self, fld)}).")
        if not 0 <= self.min_delta < 1:
            raise ConfigError(f"min_delta is a share of val accuracy, from 0 up to 1 (got {self.min_delta}).")
        for fld in ("lr", "backbone_lr_ratio"):
            if not getattr(self, fld) > 0:
                raise ConfigError(f"{fld} must be positive (got {getattr(self, fld)}).")

    @property
    def pretrained(self) -> bool:
        return self.kind != "scratch"

    @property
    def uses_frozen_features(self) -> bool:
        """Feature extraction, and fine-tuning's LP-FT warm-up, fit a head on the cached frozen features."""
        return self.kind == "feature-extraction" or (self.kind == "fine-tune" and self.lp_ft)

    def options(self) -> dict:
        """The options that apply to this kind, for results and tables."""
        d = asdict(self)
        head = {"head_l2_grid", "head_max_iter"}
        ft = {"stages", "backbone_lr_ratio", "lp_ft", "bn_policy"}
        net = {"epochs", "lr", "weight_decay", "batch_size", "patience", "min_delta", "label_smoothing", "augment",
               "warmup_epochs", "min_steps"}
        keep = {"kind", "name"} | (head if self.kind == "feature-extraction" else net | (ft if self.kind == "fine-tune"
                                                                                     else set()))
        if self.kind == "fine-tune" and self.lp_ft:
            keep |= head
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k in keep}


def canonical_kind(name: str) -> str:
    """'ft' -> 'fine-tune' and so on; unknown names are a ConfigError."""
    kind = ALIASES.get(name.strip().lower(), name.strip().lower())
    if kind not in KINDS:
        raise ConfigError(f"Unknown strategy '{kind}'. Choose from {', '.join(KINDS)}.")
    return kind


def make_strategy(kind: str, **overrides) -> StrategySpec:
    """A strategy with its kind's defaults; `overrides` with value None keep the default."""
    return StrategySpec(kind=kind, **overrides)


def default_strategies() -> tuple[StrategySpec, ...]:
    return tuple(make_strategy(k) for k in KINDS)


def strategy_from_dict(d: dict) -> StrategySpec:
    d = dict(d)
    return make_strategy(d.pop("kind"), **d)
