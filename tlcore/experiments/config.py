"""Configs as plain, frozen data, and the one builder that makes them: a preset first, then the user's choices.

The CLI, the Python API (both through `Choices`, by the CLI's option names) and the dashboard pages all call
`build_config` / `build_sweep_config`; none sets a default of its own (the presets and the defaults are in
`defaults.py`), and nothing changes a config after it is built (use `dataclasses.replace` for a variant). "Every
training image" is spelled `None` everywhere inside tlcore (`ALL`); the words 'all' and 0 are accepted only at the
edges, by `parse_size`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional, Sequence, Union

from tlcore.core.errors import ConfigError
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import parse_dataset
from tlcore.engine.backbone import DEFAULT_BACKBONE, BackboneSpec
from tlcore.engine.strategies import StrategySpec, canonical_kind, default_strategies, make_strategy, \
    strategy_from_dict
from tlcore.experiments.defaults import (ALL, DEFAULT_DATASET, DEFAULT_DEVICE, DEFAULT_PRESET, DEFAULT_SEED,
                                         DEFAULT_STRATEGIES, DEFAULT_WEIGHTS, PRESETS, SWEEP_PRESETS, Size)

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024


def parse_size(value: Union[str, int, None]) -> Size:
    """'all', 0 or None -> ALL; '25' or 25 -> 25. The only place that knows the outside spellings of 'all'."""
    if value is None:
        return ALL
    text = str(value).strip().lower()
    if text in ("all", "0", ""):
        return ALL
    try:
        size = int(text)
    except ValueError:
        raise ConfigError(f"'{value}' is not a whole number of images per class; use e.g. 25, or 'all'.") from None
    if size < 1:
        raise ConfigError(f"Images per class must be at least 1, or 'all' (got {size}).")
    return size


def parse_sizes(text: Union[str, Sequence]) -> tuple[Size, ...]:
    """'5,10,all' -> (5, 10, ALL): sorted, unique, ALL last."""
    items = text.split(",") if isinstance(text, str) else list(text)
    sizes = {parse_size(item) for item in items if item is None or str(item).strip()}
    if not sizes:
        raise ConfigError("No sweep sizes given; use e.g. '5,10,25,50,100'.")
    return tuple(sorted(sizes, key=lambda s: (s is ALL, s or 0)))


def size_label(size: Size) -> str:
    return "all" if size is ALL else str(size)


def stored_fields(cls: type, d: dict) -> dict:
    """The entries of a stored record's dict that are fields of dataclass `cls` (older or newer records may have
    others), with 'per_class' back from its stored text ('all' or a number)."""
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in d.items() if k in names}
    if "per_class" in names:
        values["per_class"] = parse_size(values.get("per_class"))
    return values


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a comparison; plain data, saved with every result. Checked when built. The default
    comparison is `build_config()` (the default preset: 100 images a class), not this class's bare defaults (every
    image)."""

    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    strategies: tuple[StrategySpec, ...] = field(default_factory=default_strategies)
    image_size: Optional[int] = None  # None: from the data (see prepare.auto_image_size)
    seed: int = DEFAULT_SEED
    device: str = DEFAULT_DEVICE

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategies", tuple(self.strategies))
        if not self.strategies:
            raise ConfigError("No strategies given; choose one or more of feature-extraction, fine-tune, scratch.")
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ConfigError(f"Strategy names must be unique (got {names}); give each variant its own name.")
        if self.image_size is not None and not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels (got "
                              f"{self.image_size}).")
        if self.dataset.per_class is not None and self.dataset.per_class < 1:
            raise ConfigError(f"per_class must be at least 1, or None for every image (got "
                              f"{self.dataset.per_class}).")

    def strategy(self, name: str) -> StrategySpec:
        return next(s for s in self.strategies if s.name == name or s.kind == name)

    def to_dict(self) -> dict:
        return {"dataset": asdict(self.dataset), "backbone": asdict(self.backbone),
                "strategies": [s.options() for s in self.strategies], "image_size": self.image_size,
                "seed": self.seed, "device": self.device}

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        dataset = dict(d.get("dataset", {}))
        if "per_class" in dataset:  # records written before 'all' had one spelling stored 0
            dataset["per_class"] = parse_size(dataset["per_class"])
        return cls(dataset=DatasetSpec(**dataset), backbone=BackboneSpec(**d.get("backbone", {})),
                   strategies=tuple(strategy_from_dict(s) for s in d.get("strategies", [])) or default_strategies(),
                   image_size=d.get("image_size"), seed=d.get("seed", 0), device=d.get("device", "auto"))


DEFAULT_SIZES = SWEEP_PRESETS[DEFAULT_PRESET].sizes


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the experiment (data, backbone, strategies, image size, device, first seed) at several sizes, repeated
    with seeds seed, seed + 1, ... The experiment's own per_class is ignored. A comparison is a sweep with one size
    and one repeat. The default sweep is `build_sweep_config()`: the default preset's long schedules, scratch from 50
    a class only and adaptive repeats, which this class's bare defaults (plain data: no long schedules) leave out."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    sizes: tuple[Size, ...] = DEFAULT_SIZES
    repeats: int = SWEEP_PRESETS[DEFAULT_PRESET].repeats
    # From this size up (ALL included), cells run `long_strategies` (same names, longer schedules) instead of the
    # experiment's: a sweep's short schedules are for the small sizes, where they are cheap; the large sizes, where
    # a strategy's curve matters most, get the schedule that flattens its val curve.
    long_from: Optional[Size] = None
    long_strategies: tuple[StrategySpec, ...] = ()
    # Strategies (by name) that run only from `long_from` up: below it a schedule that flattens their val curve costs
    # more than the sweep is meant to, and a short one would under-report them, so those cells are not run at all.
    long_only: tuple[str, ...] = ()
    # Adaptive repeats: after the `repeats`, a size whose interval of a strategy in `adaptive_kinds` (the cheap
    # ones) is wider than +-`target_half_width` gets another seed for those strategies, up to `max_repeats` seeds
    # (0: no adaptive repeats). Deterministic: it depends on the accuracies, never on the time.
    max_repeats: int = 0
    target_half_width: float = 0.05
    adaptive_kinds: tuple[str, ...] = ("feature-extraction", "fine-tune")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", parse_sizes(self.sizes))
        object.__setattr__(self, "adaptive_kinds", tuple(self.adaptive_kinds))
        object.__setattr__(self, "long_strategies", tuple(self.long_strategies))
        object.__setattr__(self, "long_only", tuple(self.long_only))
        if not 1 <= self.repeats <= 50:
            raise ConfigError(f"repeats must be between 1 and 50 (got {self.repeats}).")
        if self.max_repeats and not self.repeats <= self.max_repeats <= 50:
            raise ConfigError(f"max_repeats must be 0 (fixed repeats) or between repeats ({self.repeats}) and 50 "
                              f"(got {self.max_repeats}).")
        if not 0 < self.target_half_width < 1:
            raise ConfigError(f"target_half_width is an accuracy half-width in (0, 1), e.g. 0.05 for 5 points (got "
                              f"{self.target_half_width}).")
        if self.long_strategies and [s.name for s in self.long_strategies] != \
                [s.name for s in self.experiment.strategies]:
            raise ConfigError("long_strategies must name the same strategies, in the same order, as the experiment.")
        unknown = set(self.long_only) - {s.name for s in self.experiment.strategies}
        if unknown or (self.long_only and not self.long_strategies):
            raise ConfigError(f"long_only must name strategies of the experiment that have a long schedule (got "
                              f"{', '.join(self.long_only)}).")
        if self.long_only and self.experiment.strategies and self.cells_total == 0:
            raise ConfigError(f"Nothing to run: {', '.join(self.long_only)} runs only from {self.long_from} images a "
                              f"class in this sweep, and every size asked is smaller. Add a size of "
                              f"{self.long_from} or more, or choose the quick or thorough preset.")

    def _long(self, size: Size) -> bool:
        return bool(self.long_strategies) and self.long_from is not None and (size is ALL or size >= self.long_from)

    def strategies_at(self, size: Size) -> tuple[StrategySpec, ...]:
        """The strategies the cells of `size` run."""
        if self._long(size):
            return self.long_strategies
        return tuple(s for s in self.experiment.strategies if s.name not in self.long_only)

    def skipped(self) -> list[tuple[str, list[Size]]]:
        """The strategies this sweep does not run at some of its sizes, with those sizes."""
        out = []
        for spec in self.experiment.strategies:
            sizes = [size for size in self.sizes if spec.name not in {s.name for s in self.strategies_at(size)}]
            if sizes:
                out.append((spec.name, sizes))
        return out

    @classmethod
    def single(cls, experiment: ExperimentConfig) -> "SweepConfig":
        """The comparison `experiment` as a sweep: its own per-class size, its own seed, once."""
        return cls(experiment=experiment, sizes=(experiment.dataset.per_class,), repeats=1)

    @property
    def seeds(self) -> list[int]:
        return [self.experiment.seed + r for r in range(self.repeats)]

    @property
    def cells_total(self) -> int:
        return self.repeats * sum(len(self.strategies_at(size)) for size in self.sizes)

    def to_dict(self) -> dict:
        d = {"experiment": self.experiment.to_dict(), "sizes": list(self.sizes), "repeats": self.repeats}
        if self.long_strategies:
            d |= {"long_from": self.long_from, "long_strategies": [s.options() for s in self.long_strategies]}
        if self.long_only:
            d["long_only"] = list(self.long_only)
        if self.max_repeats:
            d |= {"max_repeats": self.max_repeats, "target_half_width": self.target_half_width,
                  "adaptive_kinds": list(self.adaptive_kinds)}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        long = tuple(strategy_from_dict(s) for s in d.get("long_strategies") or ())
        long_from = d.get("long_from")
        return cls(experiment=ExperimentConfig.from_dict(d.get("experiment", {})),
                   sizes=tuple(d.get("sizes", DEFAULT_SIZES)), repeats=d.get("repeats", 2),
                   long_from=parse_size(long_from) if long and long_from is not None else None, long_strategies=long,
                   long_only=tuple(d.get("long_only") or ()) if long else (), max_repeats=d.get("max_repeats", 0),
                   target_half_width=d.get("target_half_width", 0.05),
                   adaptive_kinds=tuple(d.get("adaptive_kinds") or ("feature-extraction", "fine-tune")))


def _preset(table: dict, name: str):
    if name not in table:
        raise ConfigError(f"Unknown preset '{name}'; choose from {', '.join(table)}.")
    return table[name]


def _strategies(overrides: dict[str, dict], names: Optional[Sequence[str]],
                strategy_options: Optional[dict[str, dict]]) -> tuple[StrategySpec, ...]:
    """Preset overrides, then the caller's options (None keeps the preset's or the kind's default)."""
    chosen = [canonical_kind(n) for n in (names or DEFAULT_STRATEGIES) if str(n).strip()]
    user = {canonical_kind(k): v for k, v in (strategy_options or {}).items()}
    specs = []
    for kind in chosen:
        given = {k: v for k, v in user.get(kind, {}).items() if v is not None}
        specs.append(make_strategy(kind, **{**overrides.get(kind, {}), **given}))
    return tuple(specs)


def _experiment(overrides: dict[str, dict], per_class: Size, *, dataset: Union[str, DatasetSpec], backbone: str,
                weights: str, strategies: Optional[Sequence[str]], image_size: Optional[int], seed: int, device: str,
                strategy_options: Optional[dict[str, dict]], val_fraction: Optional[float],
                test_fraction: Optional[float], split_seed: Optional[int]) -> ExperimentConfig:
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    split = {k: v for k, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction),
                               ("split_seed", split_seed)) if v is not None}
    spec = replace(spec, per_class=per_class, **split)
    return ExperimentConfig(dataset=spec, backbone=BackboneSpec(backbone, weights),
                            strategies=_strategies(overrides, strategies, strategy_options),
                            image_size=image_size or None, seed=seed, device=device)


def build_config(preset: str = DEFAULT_PRESET, *, dataset: Union[str, DatasetSpec] = DEFAULT_DATASET,
                 per_class: Union[Size, str] = "preset", backbone: str = DEFAULT_BACKBONE,
                 weights: str = DEFAULT_WEIGHTS, strategies: Optional[Sequence[str]] = None,
                 strategy_options: Optional[dict[str, dict]] = None, image_size: Optional[int] = None,
                 seed: int = DEFAULT_SEED, device: str = DEFAULT_DEVICE, val_fraction: Optional[float] = None,
                 test_fraction: Optional[float] = None, split_seed: Optional[int] = None) -> ExperimentConfig:
    """A comparison: the preset, then the caller's choices on top. `per_class` 'preset' keeps the preset's size;
    `dataset` may name a sub-task ('fashion-mnist:Sandal|Sneaker')."""
    base = _preset(PRESETS, preset)
    size = base.per_class if per_class == "preset" else parse_size(per_class)
    return _experiment(base.strategy_overrides, size, dataset=dataset, backbone=backbone, weights=weights,
                       strategies=strategies, image_size=image_size, seed=seed, device=device,
                       strategy_options=strategy_options, val_fraction=val_fraction, test_fraction=test_fraction,
                       split_seed=split_seed)


def build_sweep_config(preset: str = DEFAULT_PRESET, *, sizes: Union[str, Sequence, None] = None,
                       repeats: Optional[int] = None, dataset: Union[str, DatasetSpec] = DEFAULT_DATASET,
                       backbone: str = DEFAULT_BACKBONE, weights: str = DEFAULT_WEIGHTS,
                       strategies: Optional[Sequence[str]] = None, strategy_options: Optional[dict[str, dict]] = None,
                       image_size: Optional[int] = None, seed: int = DEFAULT_SEED, device: str = DEFAULT_DEVICE,
                       val_fraction: Optional[float] = None, test_fraction: Optional[float] = None,
                       split_seed: Optional[int] = None, long_schedules: bool = True) -> SweepConfig:
    """A sweep: the sweep preset (sizes, repeats, schedules), then the caller's choices on top. `long_schedules`
    False keeps the preset's short schedules at every size (what the recommendation's calibration was fitted on)."""
    base = _preset(SWEEP_PRESETS, preset)
    exp = _experiment(base.strategy_overrides, ALL, dataset=dataset, backbone=backbone, weights=weights,
                      strategies=strategies, image_size=image_size, seed=seed, device=device,
                      strategy_options=strategy_options, val_fraction=val_fraction, test_fraction=test_fraction,
                      split_seed=split_seed)
    long = ()
    if base.long_from is not None and long_schedules:
        long = _strategies({**base.strategy_overrides, **base.long_overrides}, strategies, strategy_options)
    return SweepConfig(experiment=exp, sizes=parse_sizes(sizes) if sizes is not None else base.sizes,
                       repeats=repeats or base.repeats, long_from=base.long_from if long else None,
                       long_strategies=long,
                       long_only=tuple(s.name for s in long if s.kind in base.long_only),
                       max_repeats=max(base.max_repeats, repeats or 0) if base.max_repeats else 0)


def saved_config(path: str | Path) -> dict:
    """The config saved in a result's JSON (`.save(dir)`, `--out`, the dashboard's download), as a dict for
    `ExperimentConfig.from_dict` or `SweepConfig.from_dict`: what `--config` re-runs."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the config file '{path}': {exc}. Give a comparison.json or sweep.json "
                          "written by tlcore.") from None
    return data.get("config", data)


def preset_strategy(preset: str, kind: str, sweep: bool = False) -> StrategySpec:
    """The strategy a preset runs when the user changes nothing: what a page shows as its starting values."""
    base = _preset(SWEEP_PRESETS if sweep else PRESETS, preset)
    return make_strategy(kind, **base.strategy_overrides.get(canonical_kind(kind), {}))


@dataclass(frozen=True)
class Choices:
    """A user's choices for a comparison, a sweep or a layer-wise probe, by the CLI's option names (`--per-class`
    is `per_class`, `--scratch-epochs` is `scratch_epochs`). The CLI and the Python API build their configs through
    it, so an option left out has the same default in both: the one in `tlcore.experiments.defaults`; None keeps the
    preset's value (or the strategy's own default)."""

    preset: str = DEFAULT_PRESET
    dataset: str | DatasetSpec = DEFAULT_DATASET  # a sub-task as 'name:classA|classB'
    per_class: Size | str = "preset"  # a comparison's or probe's images a class: 'preset', a number or 'all'
    sizes: str | Sequence | None = None  # a sweep's sizes ('5,10,all'); None: the preset's
    repeats: int | None = None  # a sweep's seeds per cell; None: the preset's
    backbone: str = DEFAULT_BACKBONE
    weights: str = DEFAULT_WEIGHTS
    strategies: str | Sequence[str] = DEFAULT_STRATEGIES  # names, or one comma-separated string
    image_size: int | None = None  # None: from the data (see prepare.auto_image_size)
    seed: int = DEFAULT_SEED
    device: str = DEFAULT_DEVICE
    val_fraction: float | None = None
    test_fraction: float | None = None
    split_seed: int | None = None
    # strategy options: fine-tune's, or both fine-tune's and scratch's where the CLI has one option for both
    epochs: int | None = None  # fine-tune
    scratch_epochs: int | None = None
    lr: float | None = None  # fine-tune's head
    scratch_lr: float | None = None
    batch_size: int | None = None
    patience: int | None = None
    min_delta: float | None = None
    ft_stages: int | str | None = None
    lp_ft: bool | None = None
    backbone_lr_ratio: float | None = None
    bn_policy: str | None = None
    augment: bool | None = None

    @classmethod
    def of(cls, values: dict) -> Choices:
        """The choices among `values` (e.g. `vars()` of the CLI's parsed arguments); other keys are left out."""
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def strategy_names(self) -> list[str]:
        names = self.strategies.split(",") if isinstance(self.strategies, str) else list(self.strategies)
        return [n.strip() for n in names if n.strip()]

    def strategy_options(self) -> dict[str, dict]:
        common = {"batch_size": self.batch_size, "patience": self.patience, "min_delta": self.min_delta,
                  "augment": self.augment}
        options = {
            "fine-tune": {**common, "epochs": self.epochs, "lr": self.lr, "stages": self.ft_stages,
                          "lp_ft": self.lp_ft, "backbone_lr_ratio": self.backbone_lr_ratio,
                          "bn_policy": self.bn_policy},
            "scratch": {**common, "epochs": self.scratch_epochs, "lr": self.scratch_lr},
        }
        return {kind: {k: v for k, v in opts.items() if v is not None} for kind, opts in options.items()}

    def _experiment(self) -> dict:
        return {"dataset": self.dataset, "backbone": self.backbone, "weights": self.weights,
                "strategies": self.strategy_names(), "image_size": self.image_size, "seed": self.seed,
                "device": self.device, "strategy_options": self.strategy_options(), "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "split_seed": self.split_seed}

    def config(self) -> ExperimentConfig:
        """The comparison: the preset, then these choices."""
        return build_config(self.preset, per_class=self.per_class, **self._experiment())

    def sweep_config(self) -> SweepConfig:
        """The sweep: the sweep preset, then these choices (`per_class` is not used: a sweep has `sizes`)."""
        return build_sweep_config(self.preset, sizes=self.sizes, repeats=self.repeats, **self._experiment())

    def probe_config(self) -> ExperimentConfig:
        """What a layer-wise probe measures on: the comparison's data, split, size and backbone, with the
        feature-extraction head (the strategy options are not used)."""
        return build_config(self.preset, dataset=self.dataset, per_class=self.per_class, backbone=self.backbone,
                            weights=self.weights, strategies=["feature-extraction"], image_size=self.image_size,
                            seed=self.seed, device=self.device, val_fraction=self.val_fraction,
                            test_fraction=self.test_fraction, split_seed=self.split_seed)
