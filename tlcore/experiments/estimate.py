"""How long a comparison or a sweep will take on this machine, said before it starts: the planned work of each
strategy (images through a frozen forward pass, optimizer steps on each schedule, val passes) times this machine's
measured rates (tlcore.engine.rates, measured once and kept). Schedules are counted in full, without early
stopping, so the estimate is an upper bound of the computation; a machine busy with other work is slower still, and
the estimate says so when the load is measured high."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tlcore.core.environment import available_memory_bytes, cache_dir, free_disk_bytes, resolve_device
from tlcore.core.errors import ConfigError
from tlcore.data.load import load_dataset
from tlcore.engine.rates import MachineRates, machine_busy, machine_rates
from tlcore.engine.strategies import StrategySpec
from tlcore.experiments.config import ALL, ExperimentConfig, Size, SweepConfig
from tlcore.experiments import prepare as prepare_module
from tlcore.experiments.prepare import auto_image_size

HEAD_FIT_SECONDS = 1.0  # the L-BFGS head on cached features: about a second at these sizes
MB = 2**20
# What a run's peak resident memory is made of (fitted to benchmarks/bench_memory.py's runs, docs/benchmarks.md
# "Memory flat in dataset size"): the process with torch (a CUDA build), timm, the data's index and the model
# running a batch; the decoded pixels kept in memory (up to prepare.IN_MEMORY_BYTES); a chunk of decoded images read
# back when a split streams; the features of every split, about FEATURE_COPIES times (the head standardises the
# training features in place), plus what the cache keeps in memory; and, for a trained strategy, its activations and
# optimizer state, per image of a batch at 96 px (scaled by area).
BASE_MB = 1720.0
FEATURE_COPIES = 1.0
TRAIN_MB_PER_IMAGE_96PX = 12.0
THROUGHPUT_IMAGES = 256 + 32  # every trained model is timed on this many test images (tlcore.engine.train)


@dataclass
class Resources:
    """What a run will need besides time, said before it starts, and what this machine has."""

    peak_memory_mb: float
    feature_cache_mb: float  # frozen features written to disk (TLCORE_HOME/cache/features)
    decoded_mb: float  # decoded images written to disk for splits beyond the in-memory budget
    prefix_mb: float = 0.0  # fine-tune's frozen-prefix rows on disk (the feature cache, or their own store)
    available_memory_mb: float | None = None
    free_disk_mb: float | None = None

    @property
    def disk_mb(self) -> float:
        return self.feature_cache_mb + self.decoded_mb + self.prefix_mb

    def now(self) -> "Resources":
        """The same needs against what this machine has at this moment."""
        memory, disk = available_memory_bytes(), free_disk_bytes(cache_dir())
        return replace(self, available_memory_mb=None if memory is None else round(memory / MB),
                       free_disk_mb=None if disk is None else round(disk / MB))

    def problems(self) -> list[str]:
        """Why this machine cannot hold the run ('' when it can): checked before anything is computed."""
        out = []
        if self.available_memory_mb is not None and self.peak_memory_mb > self.available_memory_mb:
            out.append(f"it needs about {_size(self.peak_memory_mb)} of memory at its peak and this machine has "
                       f"{_size(self.available_memory_mb)} available")
        if self.free_disk_mb is not None and self.disk_mb > self.free_disk_mb:
            out.append(f"its caches need about {_size(self.disk_mb)} of disk under TLCORE_HOME and "
                       f"{_size(self.free_disk_mb)} is free there")
        return out

    def text(self) -> str:
        have = ", ".join(part for part in (
            f"{_size(self.available_memory_mb)} of memory available" if self.available_memory_mb is not None else "",
            f"{_size(self.free_disk_mb)} of disk free" if self.free_disk_mb is not None else "") if part)
        return (f"Needs about {_size(self.peak_memory_mb)} of memory at its peak and {_size(self.disk_mb)} of disk "
                f"for its caches ({_size(self.feature_cache_mb)} of features, {_size(self.decoded_mb)} of decoded "
                f"images" + (f", {_size(self.prefix_mb)} of fine-tune's frozen-layer outputs" if self.prefix_mb else "")
                + ")" + (f"; this machine has {have}." if have else "."))


def _size(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def num_features(backbone: str) -> int:
    """The backbone's pooled feature width, from its architecture alone (built on the meta device: no weights, no
    memory)."""
    import timm
    import torch

    with torch.device("meta"):
        return int(timm.create_model(backbone, num_classes=0).num_features)


def prefix_row_bytes(backbone: str, image_size: int, spec: StrategySpec) -> int:
    """Bytes of fine-tune's frozen-prefix activation for one image (the input of the first trainable module, which
    the runner caches: tlcore.engine.prefix), from the architecture alone, on the meta device; 0 where no prefix is
    cached (other strategies, all stages trained, augmented batches)."""
    if spec.kind != "fine-tune" or spec.augment:
        return 0
    import timm
    import torch

    from tlcore.engine import backbone as bb

    with torch.device("meta"):
        try:
            model = timm.create_model(backbone, num_classes=2)
            groups, trainable = bb.freeze_for_strategy(model, spec.kind, spec.stages)
        except Exception:  # an architecture the meta device cannot build or freeze: no estimate of its prefix
            return 0
        if trainable >= len(groups):
            return 0
        seen: list[torch.Tensor] = []

        class _Stop(Exception):
            pass

        def first_trainable(module, args):
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                seen.append(args[0])
                raise _Stop

        handles = [m.register_forward_pre_hook(first_trainable) for m in model.modules()]
        try:
            model.eval()(torch.empty(1, 3, image_size, image_size))
        except _Stop:
            pass
        except Exception:  # an architecture the meta device cannot run: no estimate of its prefix
            return 0
        finally:
            for handle in handles:
                handle.remove()
    return int(seen[0][0].numel()) * 4 if seen else 0


def resources(images: dict[str, int], image_size: int, width: int, strategies: list[StrategySpec],
              prefix_bytes: int = 0) -> Resources:
    """Peak memory and disk of a run over `images` (split -> count) at `image_size` px with features `width` wide
    and, for fine-tune, frozen-prefix rows of `prefix_bytes` an image (`prefix_row_bytes`): a split's rows are held
    in memory up to ROWS_IN_MEMORY_BYTES (and kept in the feature cache on disk), beyond it only on disk."""
    pixels = 3 * image_size * image_size
    in_memory = on_disk = 0
    for split in ("train", "val", "test"):  # the order cells ask for them
        if in_memory + images[split] * pixels > prepare_module.IN_MEMORY_BYTES:
            on_disk += images[split] * pixels
        else:
            in_memory += images[split] * pixels
    uses_features = any(s.uses_frozen_features for s in strategies)
    features = sum(images.values()) * width * 4 if uses_features else 0
    from tlcore.engine.features import CHUNK_ROWS, MEMORY_BYTES, ROWS_IN_MEMORY_BYTES

    streaming = CHUNK_ROWS * pixels if on_disk else 0
    train_batch = max((s.batch_size for s in strategies if s.kind != "feature-extraction"), default=0)
    training = train_batch * TRAIN_MB_PER_IMAGE_96PX * MB * (image_size / 96) ** 2
    rows = [images[split] * prefix_bytes for split in ("train", "val", "test")]
    rows_in_memory = sum(r for r in rows if r <= ROWS_IN_MEMORY_BYTES)
    rows_on_disk = sum(r for r in rows if r > ROWS_IN_MEMORY_BYTES)
    peak = (BASE_MB * MB + in_memory + streaming + features * FEATURE_COPIES + min(features, MEMORY_BYTES)
            + training + rows_in_memory)
    return Resources(round(peak / MB), round(features / MB, 3), round(on_disk / MB, 3),
                     round((rows_in_memory + rows_on_disk) / MB, 3)).now()


def require_resources(estimate: "Estimate") -> None:
    """Refuse, before anything is computed, a run this machine cannot hold (rather than be killed part way)."""
    problems = estimate.resources.problems() if estimate.resources else []
    if problems:
        raise ConfigError(f"This run does not fit this machine: {'; '.join(problems)}. Use fewer images a class "
                          "(--per-class), a smaller --image-size, or free memory or disk.")


@dataclass
class Estimate:
    seconds: dict[str, float]  # strategy name -> seconds
    image_size: int
    images: dict[str, int]  # split -> images
    rates: MachineRates
    busy: str = ""  # '' or why the machine counts as busy now
    notes: list[str] = field(default_factory=list)
    resources: Resources | None = None

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def text(self) -> str:
        """'Estimated about 25 s on this machine (feature-extraction 3 s, ...; an upper bound: early stopping
        usually ends sooner).'"""
        parts = ", ".join(f"{name} {_seconds(s)}" for name, s in self.seconds.items())
        words = (f"Estimated at most {_seconds(self.total)} on this machine ({parts}; full schedules at "
                 f"{self.image_size} px, from rates measured here once: early stopping usually ends sooner).")
        if self.resources:
            words += " " + self.resources.text()
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


def _prefix_bytes(backbone: str, image_size: int, strategies) -> int:
    return max((prefix_row_bytes(backbone, image_size, s) for s in strategies), default=0)


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
    return Estimate(seconds, size, images, rates, machine_busy() if check_load else "",
                    resources=resources(images, size, num_features(config.backbone.name), list(config.strategies),
                                        _prefix_bytes(config.backbone.name, size, config.strategies)))


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
    largest = _images(counts, config.sizes[-1])
    strategies = list({s.name: s for p in config.sizes for s in config.strategies_at(p)}.values())
    return Estimate(seconds, size, full, rates, machine_busy() if check_load else "", notes,
                    resources(largest, size, num_features(exp.backbone.name), strategies,
                              _prefix_bytes(exp.backbone.name, size, strategies)))
