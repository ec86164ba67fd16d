"""How long a comparison or a sweep will take on this machine, said before it starts: the planned work of each
strategy (images through a frozen forward pass, optimizer steps on each schedule, val passes) times this machine's
measured rates (tlcore.engine.rates, measured once and kept). Schedules are counted in full, without early
stopping, so the estimate is an upper bound of the computation; a machine busy with other work is slower still, and
the estimate says so when the load is measured high."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tlcore.core.environment import resolve_device
from tlcore.data.load import load_dataset
from tlcore.engine.rates import MachineRates, machine_busy, machine_rates
from tlcore.engine.strategies import StrategySpec
from tlcore.experiments.config import ALL, ExperimentConfig, Size, SweepConfig
from tlcore.experiments.prepare import auto_image_size

HEAD_FIT_SECONDS = 1.0  # the L-BFGS head on cached features: about a second at these sizes
THROUGHPUT_IMAGES = 256 + 32  # every trained model is timed on this many test images (tlcore.engine.train)


@dataclass
class Estimate:
    seconds: dict[str, float]  # strategy name -> seconds
    image_size: int
    images: dict[str, int]  # split -> images
    rates: MachineRates
    busy: str = ""  # '' or why the machine counts as busy now
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def text(self) -> str:
        """'Estimated about 25 s on this machine (feature-extraction 3 s, ...; an upper bound: early stopping
        usually ends sooner).'"""
        parts = ", ".join(f"{name} {_seconds(s)}" for name, s in self.seconds.items())
        words = (f"Estimated at most {_seconds(self.total)} on this machine ({parts}; full schedules at "
                 f"{self.image_size} px, from rates measured here once: early stopping usually ends sooner).")
        if self.busy:
            words += f" The machine is busy now ({self.busy}): expect longer."
        return " ".join([words, *self.notes])


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def batches_per_epoch(spec: StrategySpec, images: int) -> int:
    """What the training loop runs an epoch as (tlcore.engine.train): full batches, at least min_steps / epochs."""
    batch = min(spec.batch_size, max(images, 1))
    return max(1, images // batch, math.ceil(spec.min_steps / spec.epochs))


def strategy_seconds(spec: StrategySpec, images: dict[str, int], rates: MachineRates, features_shared: bool) -> float:
    """One strategy's full schedule on this machine, alone (`features_shared`: another strategy of the same run
    already passes the images through the frozen backbone)."""
    everything = sum(images.values())
    extract = 0.0 if features_shared else everything * rates.forward
    timing = THROUGHPUT_IMAGES * rates.forward
    if spec.kind == "feature-extraction":
        return extract + HEAD_FIT_SECONDS + timing
    steps = spec.epochs * batches_per_epoch(spec, images["train"])
    train = steps * min(spec.batch_size, max(images["train"], 1)) * rates.train(spec.kind)
    val = spec.epochs * images["val"] * rates.forward
    prefix = extract + HEAD_FIT_SECONDS if spec.kind == "fine-tune" and spec.lp_ft else 0.0
    return prefix + train + val + images["test"] * rates.forward + timing


def _split_counts(config: ExperimentConfig) -> tuple[dict[str, dict[str, int]], int]:
    """Images a class in each split, and the images' native size: the dataset is scanned, nothing decoded."""
    dataset = load_dataset(replace(config.dataset, per_class=None), seed=config.seed)
    return {split: dataset.counts(split) for split in ("train", "val", "test")}, dataset.native_size()


def _images(counts: dict[str, dict[str, int]], size: Size) -> dict[str, int]:
    train = counts["train"].values()
    return {"train": sum(train) if size is ALL or size is None else sum(min(size, n) for n in train),
            "val": sum(counts["val"].values()), "test": sum(counts["test"].values())}


def _image_size(config: ExperimentConfig, native: int) -> int:
    if config.image_size:
        return config.image_size
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(config.backbone.name)
    return auto_image_size(native, resolve_device(config.device).type, int(cfg.input_size[-1]) if cfg else 0)


def estimate_comparison(config: ExperimentConfig, check_load: bool = True) -> Estimate:
    """The comparison's time on this machine, per strategy."""
    counts, native = _split_counts(config)
    images = _images(counts, config.dataset.per_class)
    size = _image_size(config, native)
    rates = machine_rates(config.backbone, size, config.device)
    seconds, extracted = {}, False
    for spec in config.strategies:
        seconds[spec.name] = round(strategy_seconds(spec, images, rates, features_shared=extracted), 1)
        extracted = extracted or spec.uses_frozen_features
    return Estimate(seconds, size, images, rates, machine_busy() if check_load else "")


def estimate_sweep(config: SweepConfig, check_load: bool = True) -> Estimate:
    """The sweep's planned cells on this machine, per strategy (adaptive repeats not included: they depend on the
    results)."""
    exp = config.experiment
    counts, native = _split_counts(exp)
    full = _images(counts, ALL)
    size = _image_size(exp, native)
    rates = machine_rates(exp.backbone, size, exp.device)
    seconds: dict[str, float] = {}
    for per_class in config.sizes:
        images = _images(counts, per_class)
        for spec in config.strategies_at(per_class):
            cell = strategy_seconds(spec, images, rates, features_shared=True)
            seconds[spec.name] = round(seconds.get(spec.name, 0.0) + cell * config.repeats, 1)
    first = next(iter(seconds), None)
    if first is not None:  # each seed extracts the largest subset's features once
        seconds[first] += round(config.repeats * sum(_images(counts, config.sizes[-1]).values()) * rates.forward, 1)
    notes = ["Adaptive repeats can add cells where intervals stay wide."] if config.max_repeats > config.repeats \
        else []
    return Estimate(seconds, size, full, rates, machine_busy() if check_load else "", notes)
