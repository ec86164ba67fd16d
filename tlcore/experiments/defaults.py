"""What every front end runs when the user changes nothing: the CLI's option defaults, the dashboard's starting
values and the Python API's keyword defaults all come from here, so `python -m tlcore compare`, an untouched Compare
page and `tlcore.compare()` submit the same comparison (and likewise for sweeps; tests/test_defaults.py checks it).

A preset fixes the size of the data (images per class; a sweep's sizes and repeats) and the strategies' schedules;
`DEFAULT_PRESET` is the one the CLI, the pages and the API start on. The strategies' own options (learning rates,
batch sizes, ...) default in `tlcore.engine.strategies.make_strategy`; a preset overrides some of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tlcore.engine.backbone import DEFAULT_BACKBONE  # noqa: F401  tf_efficientnet_lite0, packaged ImageNet weights
from tlcore.engine.strategies import KINDS

ALL = None  # images per class: every training image (its only spelling inside tlcore; see config.parse_size)
Size = int | None

# The benchmarked preset: the one whose figures docs/benchmarks.md reports. The dashboard opens on it too (its time
# estimate is shown before anything runs, and Quick is one click away).
DEFAULT_PRESET = "default"
DEFAULT_DATASET = "fashion-mnist"  # the bundled subset: offline, and every benchmark's data
DEFAULT_WEIGHTS = "pretrained"
DEFAULT_STRATEGIES: tuple[str, ...] = KINDS  # all three
DEFAULT_SEED = 0
DEFAULT_DEVICE = "auto"


@dataclass(frozen=True)
class Preset:
    description: str
    per_class: Size
    strategy_overrides: dict = field(default_factory=dict)  # kind -> overrides


PRESETS: dict[str, Preset] = {
    "quick": Preset("A first look: 50 images a class, top stage fine-tuned for 3 epochs, scratch for "
                    "4 epochs (scratch is under-trained here: use it to try the tool, not to decide).", 50,
                    {"fine-tune": {"epochs": 3, "stages": 1, "min_steps": 0},
                     "scratch": {"epochs": 4, "min_steps": 0}}),
    "default": Preset("The benchmarked default: 100 images a class, two top stages fine-tuned (LP-FT) for 6 epochs, "
                      "scratch for 20 epochs (batches of 64, light augmentation), both with early stopping.", 100,
                      {}),
    "thorough": Preset("Longer schedules so fine-tune and scratch surely converge: 12 and 40 epochs with early "
                       "stopping; all training images.", ALL,
                       {"fine-tune": {"epochs": 12, "patience": 4}, "scratch": {"epochs": 40, "patience": 6}}),
}


@dataclass(frozen=True)
class SweepPreset:
    description: str
    sizes: tuple[Size, ...]
    repeats: int
    strategy_overrides: dict = field(default_factory=dict)  # kind -> overrides
    long_from: Size = None  # from this size up, `long_overrides` replace a kind's overrides
    long_overrides: dict = field(default_factory=dict)  # kind -> overrides ({}: the comparison's schedule)
    long_only: tuple[str, ...] = ()  # kinds run only from long_from (with their long schedule)
    max_repeats: int = 0  # adaptive repeats of the cheap strategies up to this many seeds (SweepConfig)


# Sweeps run every strategy at every size and seed, so their schedules are shorter than a single comparison's; every
# cell records whether its validation accuracy was still rising at the end (`still_improving`), and the summary shows
# the share of such cells, so a short schedule is visible in the results, not hidden.
SWEEP_PRESETS: dict[str, SweepPreset] = {
    "quick": SweepPreset("A first look: 5 to 50 images a class, one repeat, short schedules "
                         "(fine-tune 3 epochs of the top stage, scratch 5 epochs): a first look.",
                         (5, 10, 25, 50), 1,
                         {"fine-tune": {"epochs": 3, "stages": 1, "min_steps": 0},
                          "scratch": {"epochs": 5, "min_steps": 30}}),
    "default": SweepPreset("The benchmarked default: 5 to 100 images a class, 2 repeats; fine-tune 4 epochs "
                           "of two stages; scratch from 50 a class only, on the comparison's schedule (20 epochs, "
                           "until its val curve is flat). Below 50 a class that schedule would about double the "
                           "sweep's time, and a short one under-reports scratch, so those cells are not run.",
                           (5, 10, 25, 50, 100), 2,
                           {"fine-tune": {"epochs": 4, "min_steps": 32},
                            "scratch": {"epochs": 5, "min_steps": 40}},  # what recommend --validate runs everywhere
                           long_from=50, long_overrides={"scratch": {}}, long_only=("scratch",), max_repeats=8),
    "thorough": SweepPreset("The comparison's full schedules (fine-tune 6 epochs, scratch 20) at 5 to 500 images a "
                            "class and all, 3 repeats: hours on a CPU, minutes on a GPU.",
                            (5, 10, 25, 50, 100, 250, 500, ALL), 3, {}),
}
