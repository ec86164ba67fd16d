"""Named presets: plain overrides a UI or CLI applies before the user's own choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .backbone import BackboneSpec
from .data import DatasetSpec
from .experiment import ExperimentConfig
from .strategies import KINDS, canonical_kind, make_strategy
from .sweep import SweepConfig


@dataclass(frozen=True)
class Preset:
    description: str
    per_class: int
    strategy_overrides: dict = field(default_factory=dict)  # kind -> overrides


PRESETS: dict[str, Preset] = {
    "quick": Preset("About a minute on 2 CPU cores: 50 images a class, top stage fine-tuned for 3 epochs, scratch for "
                    "4 epochs (scratch is under-trained here: use it to try the tool, not to decide).", 50,
                    {"fine-tune": {"epochs": 3, "stages": 1, "min_steps": 0},
                     "scratch": {"epochs": 4, "min_steps": 0}}),
    "default": Preset("The benchmarked default: 100 images a class, two top stages fine-tuned (LP-FT) for 6 epochs, "
                      "scratch for 20 epochs, both with early stopping; about 4-5 minutes on 2 CPU cores.", 100, {}),
    "thorough": Preset("Longer schedules so fine-tune and scratch surely converge: 12 and 40 epochs with early "
                       "stopping; all training images.", 0,
                       {"fine-tune": {"epochs": 12, "patience": 4}, "scratch": {"epochs": 40, "patience": 6}}),
}


@dataclass(frozen=True)
class SweepPreset:
    description: str
    sizes: tuple[int, ...]
    repeats: int
    strategy_overrides: dict = field(default_factory=dict)  # kind -> overrides


# Sweeps run every strategy at every size and seed, so their schedules are shorter than a single comparison's; every
# cell records whether its validation accuracy was still rising at the end (`still_improving`), and the summary shows
# the share of such cells, so a short schedule is visible in the results, not hidden.
SWEEP_PRESETS: dict[str, SweepPreset] = {
    "quick": SweepPreset("About 2 minutes on 2 CPU cores: 5 to 50 images a class, one repeat, short schedules "
                         "(fine-tune 3 epochs of the top stage, scratch 5 epochs): a first look.",
                         (5, 10, 25, 50), 1,
                         {"fine-tune": {"epochs": 3, "stages": 1, "min_steps": 0},
                          "scratch": {"epochs": 5, "min_steps": 30}}),
    "default": SweepPreset("Under 10 minutes on 2 CPU cores: 5 to 100 images a class, 2 repeats; fine-tune 4 epochs "
                           "of two stages, scratch 5 epochs (scratch is still improving at this budget: see the "
                           "still-improving share; the thorough preset gives it the comparison's 20 epochs).",
                           (5, 10, 25, 50, 100), 2,
                           {"fine-tune": {"epochs": 4, "min_steps": 32},
                            "scratch": {"epochs": 5, "min_steps": 40}}),
    "thorough": SweepPreset("The comparison's full schedules (fine-tune 6 epochs, scratch 20) at 5 to 500 images a "
                            "class and all, 3 repeats: hours on a CPU, minutes on a GPU.",
                            (5, 10, 25, 50, 100, 250, 500, 0), 3, {}),
}


def build_config(preset: str = "default", dataset: str = "fashion-mnist", backbone: str = "tf_efficientnet_lite0",
                 weights: str = "pretrained", strategies: Optional[list[str]] = None,
                 per_class: Optional[int] = None, image_size: Optional[int] = None, seed: int = 0,
                 device: str = "auto", strategy_options: Optional[dict[str, dict]] = None) -> ExperimentConfig:
    """A preset, then the caller's choices on top (None keeps the preset's value)."""
    base = PRESETS[preset]
    chosen = strategies or list(KINDS)
    specs = []
    for name in chosen:
        kind = canonical_kind(name)
        options = {**base.strategy_overrides.get(kind, {}), **(strategy_options or {}).get(kind, {})}
        specs.append(make_strategy(kind, **options))
    pc = base.per_class if per_class is None else per_class
    return ExperimentConfig(dataset=DatasetSpec(dataset, per_class=pc or None),
                            backbone=BackboneSpec(backbone, weights), strategies=specs,
                            image_size=image_size or None, seed=seed, device=device)


def build_sweep_config(preset: str = "default", sizes: Optional[list] = None, repeats: Optional[int] = None,
                       strategy_options: Optional[dict[str, dict]] = None, **experiment) -> SweepConfig:
    """A sweep preset, then the caller's choices on top; `experiment` takes build_config's arguments."""
    base = SWEEP_PRESETS[preset]
    options = {kind: {**base.strategy_overrides.get(kind, {}), **(strategy_options or {}).get(kind, {})}
               for kind in KINDS}
    exp = build_config("default", strategy_options=options, **experiment)
    return SweepConfig(experiment=exp, sizes=list(sizes or base.sizes), repeats=repeats or base.repeats)
