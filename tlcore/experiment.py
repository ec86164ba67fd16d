"""compare(): the chosen strategies on one dataset, one split, one test set, one backbone; each run measured alike.

Work shared between strategies is done once: the dataset is loaded and preprocessed once, the pretrained backbone is
loaded once (each strategy trains its own copy), and frozen features are cached for feature extraction and for the
LP-FT head warm-up.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Optional

import numpy as np
import torch

from . import backbone as bb
from .data import Dataset, DatasetSpec, PreparedImages, load_dataset, prepare_split
from .environment import library_versions, resolve_device
from .errors import ConfigError, RunCancelled, RunFailed, TlcoreError
from .features import ExtractOptions, FeatureCache, Normalizer, default_cache, split_features
from .metrics import PeakMemory, Stopwatch, score
from .progress import CancelToken, ProgressCallback, Reporter
from .results import ComparisonResult, RunResult
from .store import Store, default_store
from .strategies import StrategySpec, default_strategies, strategy_from_dict
from .prefix import split_frozen_prefix
from .train import ImageInputs, TensorInputs, fit_linear_head, predict, set_head, train_network
from .weights import WeightsInfo

THROUGHPUT_IMAGES = 256


@dataclass
class ExperimentConfig:
    """Everything that defines a comparison; plain data, saved with every result."""

    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    backbone: bb.BackboneSpec = field(default_factory=bb.BackboneSpec)
    strategies: list[StrategySpec] = field(default_factory=default_strategies)
    image_size: Optional[int] = None  # None: from the data (see auto_image_size)
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return {"dataset": asdict(self.dataset), "backbone": asdict(self.backbone),
                "strategies": [s.options() for s in self.strategies], "image_size": self.image_size,
                "seed": self.seed, "device": self.device}

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        return cls(dataset=DatasetSpec(**d.get("dataset", {})), backbone=bb.BackboneSpec(**d.get("backbone", {})),
                   strategies=[strategy_from_dict(s) for s in d.get("strategies", [])] or default_strategies(),
                   image_size=d.get("image_size"), seed=d.get("seed", 0), device=d.get("device", "auto"))


def auto_image_size(native: int) -> int:
    """About 1.75x the native size, a multiple of 16 between 48 and 128. On the bundled Fashion-MNIST (28 px) the
    frozen-feature accuracy at 48 px matched 64 px (0.776 vs 0.769) at about half the compute; 128 px keeps photos
    affordable on a CPU."""
    return int(min(128, max(48, 16 * int(1.75 * native / 16))))


@dataclass
class PreparedData:
    """A dataset preprocessed for one backbone and image size: shared by every strategy of a comparison."""

    dataset: Dataset
    cfg: dict
    transform_key: str
    splits: dict[str, PreparedImages]


def prepare_data(dataset: Dataset, model: torch.nn.Module, image_size: int) -> PreparedData:
    cfg = bb.data_config(model, image_size)
    transform = bb.eval_transform(cfg)
    splits = {s: prepare_split(dataset, s, transform) for s in ("train", "val", "test")}
    return PreparedData(dataset, cfg, bb.transform_key(cfg), splits)


class Runner:
    """Runs strategies on prepared data; one instance per comparison (or per sweep cell)."""

    def __init__(self, config: ExperimentConfig, data: PreparedData, device: torch.device,
                 callbacks: Optional[list[ProgressCallback]] = None, cancel: Optional[CancelToken] = None,
                 cache: Optional[FeatureCache] = None, extract: Optional[ExtractOptions] = None,
                 keep_models: bool = False, skip_frozen_prefix: bool = True) -> None:
        self.config = config
        self.skip_frozen_prefix = skip_frozen_prefix
        self.data = data
        self.device = device
        self.callbacks = callbacks or []
        self.cancel = cancel or CancelToken()
        self.cache = cache or default_cache()
        self.extract = extract or ExtractOptions()
        self.norm = Normalizer(data.cfg, device, channels_last=True)
        self.keep_models = keep_models
        self.models: dict[str, torch.nn.Module] = {}  # trained models by strategy name, when keep_models

    # -- shared pieces ------------------------------------------------------------------------------------------
    def _features(self, template: torch.nn.Module, info: WeightsInfo, split: str, reporter: Reporter,
                  span: tuple[float, float]) -> torch.Tensor:
        return split_features(self.cache, template, self.config.backbone.name, info.sha256 or info.name,
                              self.data.dataset, split, self.data.splits[split], self.data.cfg,
                              self.data.transform_key, self.device, self.extract, reporter, span)

    def _linear_probe(self, reporter: Reporter, spec: StrategySpec, watch: Stopwatch, span: tuple[float, float]):
        template, info = bb.load_template(self.config.backbone)
        lo, hi = span
        mid = lo + (hi - lo) * 0.8
        with watch.phase("features"):
            feats = {s: self._features(template, info, s, reporter, (lo + (mid - lo) * i / 3, lo + (mid - lo) *
                                                                    (i + 1) / 3))
                     for i, s in enumerate(("train", "val", "test"))}
        labels = {s: self.data.splits[s].labels for s in feats}
        with watch.phase("head" if spec.kind == "feature-extraction" else "lp_warmup"):
            fit = fit_linear_head(feats["train"], labels["train"], feats["val"], labels["val"],
                                  self.data.dataset.num_classes, spec.head_l2_grid, spec.head_max_iter, reporter,
                                  (mid, hi))
        return feats, fit

    def _skip_frozen_prefix(self, model: torch.nn.Module, train_in: ImageInputs, val_in: ImageInputs):
        """Compute the frozen bottom's output once (see prefix.py); fall back to images when it cannot be split."""
        model.to(self.device).to(memory_format=torch.channels_last)
        prefix = split_frozen_prefix(model, val_in.batch(slice(0, 8)))
        if prefix is None:
            return train_in, val_in, None

        def activations(inputs: ImageInputs) -> TensorInputs:
            with torch.inference_mode():
                parts = [prefix.compute(inputs.batch(slice(s, s + 128))).cpu() for s in range(0, len(inputs), 128)]
            return TensorInputs(torch.cat(parts).contiguous(), inputs.labels, self.device)

        return activations(train_in), activations(val_in), prefix

    # -- one strategy -------------------------------------------------------------------------------------------
    def run(self, spec: StrategySpec) -> RunResult:
        reporter = Reporter(spec.name, self.callbacks, self.cancel)
        result = RunResult(run_id=uuid.uuid4().hex[:12], strategy=spec.name, kind=spec.kind, status="completed",
                           backbone=self.config.backbone.name, options=spec.options(), seed=self.config.seed,
                           image_size=self.data.cfg["input_size"][-1], device=self.device.type,
                           precision="bf16-autocast" if self.device.type == "cuda" else "fp32",
                           started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           dataset=asdict(self.config.dataset) | {"fingerprint": self.data.dataset.source_fingerprint()},
                           environment=library_versions() | {"torch_threads": torch.get_num_threads()})
        watch = Stopwatch()
        memory = PeakMemory(self.device)
        start = time.perf_counter()
        try:
            with memory:
                self._run(spec, result, reporter, watch)
        except RunCancelled as exc:
            result.status, result.error = "cancelled", str(exc)
        except (RunFailed, TlcoreError) as exc:
            result.status, result.error = "failed", str(exc)
        except Exception as exc:  # an unexpected error fails this strategy only; the others still run
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.extra["images_per_class"] = float(np.mean(list(self.data.dataset.counts("train").values())))
        result.timings = {**{k: round(v, 4) for k, v in watch.seconds.items()},
                          "total": round(time.perf_counter() - start, 4)}
        result.train_seconds = round(result.timings["total"] - watch.seconds.get("evaluate", 0.0), 4)
        result.peak_memory_mb = round(memory.peak_mb, 1)
        reporter.cancel = CancelToken()  # the final event must get out even after a cancel
        reporter("done", 1.0, message=result.status)
        return result

    def _run(self, spec: StrategySpec, result: RunResult, reporter: Reporter, watch: Stopwatch) -> None:
        ds, splits = self.data.dataset, self.data.splits
        reporter("prepare", 0.0)
        torch.manual_seed(self.config.seed)
        model, info = bb.for_run(self.config.backbone, ds.num_classes, pretrained=spec.pretrained,
                                 seed=self.config.seed)
        result.weights = info.to_dict()
        if self.keep_models:
            self.models[spec.name] = model
        groups = bb.stage_groups(model)
        result.total_params = bb.count_parameters(model)[1]

        if spec.kind == "feature-extraction":
            bb.freeze_groups(model, groups)
            result.trainable_params = bb.count_parameters(model)[0]
            result.phases = [{"phase": "head", "trainable_params": result.trainable_params}]
            feats, fit = self._linear_probe(reporter, spec, watch, (0.0, 0.95))
            set_head(model, fit)
            result.curve = fit.curve
            result.epochs_run, result.best_epoch = len(fit.curve), len(fit.curve)
            result.best_val_accuracy = fit.val_accuracy
            result.extra = {"head_l2": fit.l2, "head_grid": fit.grid}
            with watch.phase("evaluate"):
                test_logits = feats["test"] @ fit.weight.T + fit.bias
                sample = replace(splits["test"], images=splits["test"].images[:THROUGHPUT_IMAGES],
                                 labels=splits["test"].labels[:THROUGHPUT_IMAGES])
                full_logits, result.throughput_ips = predict(model.to(self.device).to(
                    memory_format=torch.channels_last), ImageInputs(sample, self.norm), reporter=reporter)
            # The deployed model (backbone + new head) must agree with the head trained on cached features.
            result.extra["max_logit_diff_full_vs_cached"] = float(
                (full_logits - test_logits[:len(full_logits)]).abs().max())
        else:
            if spec.kind == "fine-tune":
                k = bb.resolve_stages(spec.stages, len(groups))
                frozen, trainable = groups[:len(groups) - k], groups[len(groups) - k:]
                bb.freeze_groups(model, frozen)
                result.trainable_stages = [g.label for g in trainable]
                span = (0.0, 0.95)
                if spec.lp_ft:
                    head_params = sum(p.numel() for p in model.get_classifier().parameters())
                    _, fit = self._linear_probe(reporter, spec, watch, (0.0, 0.15))
                    set_head(model, fit)
                    result.phases.append({"phase": "lp-warmup (head only)", "trainable_params": head_params})
                    result.extra = {"lp_head_l2": fit.l2, "lp_val_accuracy": fit.val_accuracy}
                    span = (0.15, 0.95)
            else:
                result.trainable_stages = [g.label for g in groups]
                span = (0.0, 0.95)
            result.trainable_params = bb.count_parameters(model)[0]
            result.phases.append({"phase": spec.kind, "trainable_params": result.trainable_params})
            train_in = ImageInputs(splits["train"], self.norm, spec.augment)
            val_in = ImageInputs(splits["val"], self.norm)
            prefix = None
            if self.skip_frozen_prefix and spec.kind == "fine-tune" and not spec.augment and len(trainable) < len(
                    groups):
                with watch.phase("frozen_prefix"):
                    train_in, val_in, prefix = self._skip_frozen_prefix(model, train_in, val_in)
            result.extra["frozen_prefix_cached"] = prefix is not None
            with watch.phase("epochs"):
                try:
                    fit = train_network(model, spec, train_in, val_in, reporter, self.config.seed, span)
                finally:
                    if prefix is not None:
                        prefix.restore()
            result.curve = fit.curve
            result.epochs_run, result.best_epoch = fit.epochs_run, fit.best_epoch
            result.extra["planned_epochs"] = fit.planned_epochs
            result.extra["steps_per_epoch"] = fit.steps_per_epoch
            result.stopped_early, result.best_val_accuracy = fit.stopped_early, fit.best_val_accuracy
            reporter("evaluate", 0.96)
            with watch.phase("evaluate"):
                test_logits, result.throughput_ips = predict(model, ImageInputs(splits["test"], self.norm),
                                                             reporter=reporter)
        y_true = splits["test"].labels.numpy()
        y_pred = test_logits.argmax(1).numpy()
        s = score(y_true, y_pred, ds.classes)
        result.accuracy, result.accuracy_low, result.accuracy_high = s.accuracy, s.accuracy_low, s.accuracy_high
        result.macro_f1, result.per_class_accuracy, result.confusion = s.macro_f1, s.per_class_accuracy, s.confusion
        result.test_images, result.test_predictions = s.test_images, y_pred.tolist()
        result.throughput_ips = round(result.throughput_ips, 1) if result.throughput_ips else None


def build_runner(config: ExperimentConfig, callbacks: Optional[list[ProgressCallback]] = None,
                 cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
                 keep_models: bool = False) -> Runner:
    """Validate the config, load and preprocess the data once, and return a Runner for its strategies."""
    if not config.strategies:
        raise ConfigError("No strategies given; choose one or more of feature-extraction, fine-tune, scratch.")
    names = [s.name for s in config.strategies]
    if len(set(names)) != len(names):
        raise ConfigError(f"Strategy names must be unique (got {names}); give repeated kinds distinct names.")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    dataset = load_dataset(config.dataset, seed=config.seed)
    if any(s.pretrained for s in config.strategies):
        reference, _ = bb.load_template(config.backbone)  # fails early and clearly if weights cannot be had
    else:
        reference, _ = bb.for_run(replace(config.backbone, weights="none"), dataset.num_classes, pretrained=False)
    image_size = config.image_size or auto_image_size(dataset.native_size())
    if not 16 <= image_size <= 1024:
        raise ConfigError(f"image_size must be between 16 and 1024 pixels (got {image_size}).")
    data = prepare_data(dataset, reference, image_size)
    return Runner(replace(config, image_size=image_size), data, device, callbacks, cancel, cache,
                  keep_models=keep_models)


def compare(config: Optional[ExperimentConfig] = None, callbacks: Optional[list[ProgressCallback]] = None,
            cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
            on_result: Optional[Callable[[RunResult], None]] = None, store: Optional[Store] = None,
            label: str = "", record_id: Optional[str] = None, executor=None) -> ComparisonResult:
    """Run every strategy of `config` on the same split and test set; a failed strategy does not stop the others, a
    cancel stops the rest and keeps what finished. Each run is written to the run store as it finishes."""
    started = time.perf_counter()
    config = config or ExperimentConfig()
    cancel = cancel or CancelToken()
    store = store or default_store()
    if record_id is None:
        record_id = store.create_record("comparison", config.to_dict(), label=label, dataset=config.dataset.source,
                                        backbone=config.backbone.name)
    else:  # a queued job's record
        store.claim(record_id)
    try:
        runner = build_runner(config, callbacks, cancel, cache)
    except BaseException as exc:
        store.update_record(record_id, status="failed", error=str(exc) if isinstance(exc, TlcoreError) else
                            f"{type(exc).__name__}: {exc}")
        raise

    def finished(run: RunResult) -> None:
        store.add_run(record_id, run, per_class=config.dataset.per_class or 0)
        if on_result:
            on_result(run)

    try:
        result = run_all(runner, finished, started, executor)
    except BaseException as exc:
        store.update_record(record_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    result.record_id = record_id
    statuses = {r.status for r in result.runs}
    status = "cancelled" if "cancelled" in statuses else "failed" if statuses == {"failed"} else "completed"
    store.update_record(record_id, status=status, error="; ".join(f"{r.strategy}: {r.error}" for r in result.runs
                                                                  if r.error) or None,
                        summary={k: v for k, v in result.to_dict().items() if k not in ("runs",)})
    return result


def load_comparison(record_id: str, store: Optional[Store] = None) -> Optional[ComparisonResult]:
    """A stored comparison rebuilt from its record and runs (also one that was interrupted: the finished runs)."""
    store = store or default_store()
    record = store.record(record_id)
    if record is None or record["kind"] != "comparison":
        return None
    summary = record["summary"] or {}
    runs = [row["run"] for row in store.runs(record_id)]
    return ComparisonResult(config=summary.get("config", record["config"]), dataset=summary.get("dataset", {}),
                            runs=runs, environment=summary.get("environment", {}),
                            test_indices=summary.get("test_indices", []), test_labels=summary.get("test_labels", []),
                            wall_seconds=summary.get("wall_seconds", 0.0), record_id=record_id)


def run_all(runner: Runner, on_result: Optional[Callable[[RunResult], None]] = None,
            started: Optional[float] = None, executor=None) -> ComparisonResult:
    """Each strategy in turn here, or each as a task of `executor` (see executors.py; frozen features are extracted
    here once first, so no task recomputes them)."""
    from .environment import data_home
    from .executors import CellTask, LocalExecutor, make_executor

    started = time.perf_counter() if started is None else started
    config, data = runner.config, runner.data
    executor = executor or make_executor()
    finished: dict[str, RunResult] = {}

    def done(label: str, result: RunResult) -> None:
        finished[label] = result
        if on_result:
            on_result(result)

    if isinstance(executor, LocalExecutor):
        for spec in config.strategies:
            if runner.cancel.cancelled:
                break
            done(spec.name, runner.run(spec))
    else:
        if any(s.kind == "feature-extraction" or (s.kind == "fine-tune" and s.lp_ft) for s in config.strategies):
            template, info = bb.load_template(config.backbone)
            reporter = Reporter("features", runner.callbacks, runner.cancel)
            for i, split in enumerate(("train", "val", "test")):
                runner._features(template, info, split, reporter, (i / 3, (i + 1) / 3))
        tasks = [CellTask(config.to_dict(), spec.options(), config.dataset.per_class or 0, config.seed, "",
                          spec.name, str(data_home())) for spec in config.strategies]
        try:
            executor.run(tasks, None, lambda task, result: done(task.label, result), runner.callbacks,
                         runner.cancel)
        except RunCancelled:
            pass
    runs = [finished.get(spec.name) or RunResult(
        run_id=uuid.uuid4().hex[:12], strategy=spec.name, kind=spec.kind, status="cancelled",
        error="not started: the comparison was cancelled", backbone=config.backbone.name, options=spec.options(),
        seed=config.seed, image_size=config.image_size or 0) for spec in config.strategies]
    return ComparisonResult(config=config.to_dict(), dataset=data.dataset.summary(), runs=runs,
                            environment=library_versions(),
                            test_indices=data.splits["test"].indices.tolist(),
                            test_labels=data.splits["test"].labels.tolist(),
                            wall_seconds=round(time.perf_counter() - started, 3))
