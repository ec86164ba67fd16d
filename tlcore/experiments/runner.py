"""Runner: one strategy at a time on one cell's prepared data, measured alike (time by phase, peak memory,
accuracy with its interval, throughput). The orchestration around it (which cells, shared features, the record) is
in cells.py; this module trains and scores.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Optional

import numpy as np
import torch

from tlcore.core.environment import library_versions
from tlcore.core.version import __version__
from tlcore.core.errors import RunCancelled, RunFailed, TlcoreError
from tlcore.core.progress import CancelToken, ProgressCallback, Reporter
from tlcore.core.results import RunResult
from tlcore.engine import backbone as bb
from tlcore.engine.features import (ExtractOptions, FeatureCache, FeatureContext, Normalizer, default_cache,
                                    split_features, split_rows)
from tlcore.engine.metrics import PeakMemory, Stopwatch, score
from tlcore.engine.precision import run_precision
from tlcore.engine.prefix import split_frozen_prefix
from tlcore.engine.strategies import StrategySpec
from tlcore.engine.throughput import Throughput, timed_pass
from tlcore.engine.train import (HeadFit, ImageInputs, TensorInputs, fit_linear_head, predict, set_head,
                                 train_network)
from tlcore.experiments.config import ExperimentConfig, Size
from tlcore.experiments.prepare import CellData, Prepared
from tlcore.records.models import FORMAT, ModelConfig, save_model


OUT_OF_MEMORY = "out of memory"  # an attempt's error that run() retries at half the batch
OOM_MIN_BATCH = 4  # the smallest batch an out-of-memory retry goes down to


@dataclass
class HeadShare:
    """A linear head fitted once in a cell, what the fit cost and which strategy fitted it: a second strategy with the
    same head options reuses it and counts its seconds as shared."""

    fit: HeadFit
    seconds: float
    fitted_by: str


def head_key(spec: StrategySpec) -> tuple:
    """The options that make two strategies' linear heads on the same frozen features the same fit."""
    return tuple(spec.head_l2_grid), spec.head_max_iter


class _PrefixOutput(torch.nn.Module):
    """The frozen prefix as a module, so the feature cache can compute and store its output like features."""

    def __init__(self, prefix) -> None:
        super().__init__()
        self.prefix = prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefix.compute(x)


class Runner:
    """Runs strategies on one cell's data (a size and a seed); `keep_models` keeps each trained network."""

    def __init__(self, prepared: Prepared, data: CellData, seed: int,
                 callbacks: Optional[list[ProgressCallback]] = None, cancel: Optional[CancelToken] = None,
                 cache: Optional[FeatureCache] = None, extract: Optional[ExtractOptions] = None,
                 keep_models: bool = False, skip_frozen_prefix: bool = True,
                 head_fits: Optional[dict] = None, head_users: Optional[dict[tuple, list[str]]] = None) -> None:
        self.prepared = prepared
        size: Size = data.dataset.spec.per_class
        self.config: ExperimentConfig = replace(prepared.config, seed=seed,
                                                dataset=replace(prepared.config.dataset, per_class=size))
        self.skip_frozen_prefix = skip_frozen_prefix
        self.data = data
        self.device = prepared.device
        self.callbacks = callbacks or []
        self.cancel = cancel or CancelToken()
        self.cache = cache or default_cache()
        self.extract = extract or ExtractOptions()
        # The frozen pretrained features of this cell's splits, as split_features computes and caches them.
        self.feature_context = FeatureContext(model=prepared.reference, backbone_name=self.config.backbone.name,
                                              weights_sha=prepared.weights_id, dataset=data.dataset,
                                              splits=data.splits, cfg=data.cfg, transform_key=data.transform_key,
                                              device=self.device, cache=self.cache, options=self.extract)
        self.norm = Normalizer(data.cfg, self.device, channels_last=True)
        self.keep_models = keep_models
        self.models: dict[str, torch.nn.Module] = {}  # trained models by strategy name, when keep_models
        # Linear heads fitted on this cell's frozen features, by head options: feature extraction's head is
        # fine-tune's LP-FT start (the same L-BFGS fit on the same features), so the second strategy reuses it.
        self.head_fits: dict[tuple, HeadShare] = head_fits if head_fits is not None else {}
        self.head_users = head_users or {}  # head options -> the strategies of this cell that use that head

    # -- shared pieces ------------------------------------------------------------------------------------------
    def features(self, split: str, reporter: Reporter, span: tuple[float, float]) -> torch.Tensor:
        """Frozen features of this cell's images of `split`, through the feature cache."""
        return split_features(self.feature_context, split, reporter, span)

    def _linear_probe(self, reporter: Reporter, spec: StrategySpec, watch: Stopwatch, span: tuple[float, float],
                      result: RunResult):
        """The cell's frozen features and the linear head on them (reused when this cell already fitted one with the
        same options: then its fit's seconds are this run's `shared_head_fit`); returns (features, fit, reused), the
        training features standardised by the fit."""
        lo, hi = span
        mid = lo + (hi - lo) * 0.8
        with watch.phase("features"):
            feats = {s: self.features(s, reporter, (lo + (mid - lo) * i / 3, lo + (mid - lo) * (i + 1) / 3))
                     for i, s in enumerate(("train", "val", "test"))}
        labels = {s: self.data.splits[s].labels for s in feats}
        key = head_key(spec)
        with watch.phase("head" if spec.kind == "feature-extraction" else "lp_warmup"):
            share = self.head_fits.get(key)
            if share is None:
                started = time.perf_counter()
                # the training features are not used after the fit: standardised in place, not copied
                fit = fit_linear_head(feats["train"], labels["train"], feats["val"], labels["val"],
                                      self.data.dataset.num_classes, spec.head_l2_grid, spec.head_max_iter, reporter,
                                      (mid, hi), overwrite_train=True)
                share = self.head_fits[key] = HeadShare(fit, time.perf_counter() - started, spec.name)
        seconds = round(share.seconds, 4)
        reused = share.fitted_by != spec.name
        others = [share.fitted_by] if reused else [n for n in self.head_users.get(key, []) if n != spec.name]
        if others:
            result.shared["head_fit"] = {"seconds": seconds, "with": others}
        if reused:  # measured in the run that fitted it: counted here too, as this run alone would spend it
            result.timings["shared_head_fit"] = seconds
        return feats, share.fit, reused

    def _skip_frozen_prefix(self, model: torch.nn.Module, val_in: ImageInputs, reporter: Reporter, at: float):
        """The frozen bottom's output for every split, computed once (see prefix.py) and kept in the feature cache
        under the cut, so the cells of a sweep and later runs share it; None when the model cannot be split."""
        model.to(self.device).to(memory_format=torch.channels_last)
        prefix = split_frozen_prefix(model, val_in.batch(slice(0, 8)))
        if prefix is None:
            return None, None
        name = f"{self.config.backbone.name}|frozen-prefix:{','.join(prefix.replaced)}"
        context = replace(self.feature_context, model=model, backbone_name=name, options=ExtractOptions(),
                          embedding=lambda _model: _PrefixOutput(prefix), phase="frozen_prefix")
        acts = {}
        try:
            for split, images in self.data.splits.items():
                values = split_rows(context, split, reporter, (at, at))  # on disk beyond ROWS_IN_MEMORY_BYTES
                acts[split] = TensorInputs(values, images.labels, self.device)
        except BaseException:  # a cancel or a failure here leaves the model whole
            prefix.restore()
            raise
        return acts, prefix

    def _timed_sample(self, model: torch.nn.Module, reporter: Optional[Reporter] = None):
        """The deployed model's logits on the first test images and its Throughput, by the protocol every figure uses
        (tlcore.engine.throughput, as `tlcore predict` does): every strategy's deployed model is timed alike."""
        inputs = ImageInputs(self.data.splits["test"], self.norm)
        return timed_pass(model, inputs.batch, len(inputs), reporter.cancel.check if reporter else None)

    @staticmethod
    def _record_throughput(result: RunResult, measured: Throughput) -> None:
        result.throughput_ips = measured.images_per_second
        result.extra["throughput"] = measured.to_dict()  # threads, load, and whether the machine was busy

    def _test_pass(self, model: torch.nn.Module, prefix, test_acts: Optional[TensorInputs], result: RunResult,
                   reporter: Reporter):
        """Test logits, then throughput on the sample (into `result`). With a frozen prefix the logits come from its
        cached test activations, and the intact model's sample logits are checked against them."""
        test = self.data.splits["test"]
        if prefix is None:
            logits, _ = predict(model, ImageInputs(test, self.norm), reporter=reporter)
            self._record_throughput(result, self._timed_sample(model)[1])
            return logits
        logits, _ = predict(model, test_acts, reporter=reporter)
        prefix.restore()
        full_logits, measured = self._timed_sample(model)
        self._record_throughput(result, measured)
        result.extra["max_logit_diff_full_vs_cached"] = float((full_logits - logits[:len(full_logits)]).abs().max())
        return logits

    # -- the trained model ---------------------------------------------------------------------------------------
    def keep(self, run: RunResult, record_id: str) -> None:
        """Save a completed run's trained network next to its record (tlcore.records.models), then let it go."""
        model = self.models.pop(run.strategy, None)
        if model is None or run.status != "completed" or not record_id:
            return
        spec = self.config.strategy(run.strategy)
        groups = len(bb.stage_groups(model))
        frozen = groups - bb.resolve_stages(spec.stages, groups) if spec.kind == "fine-tune" else 0
        cfg = json.loads(json.dumps(self.data.cfg))  # plain JSON: lists, numbers, strings
        config = ModelConfig(format=FORMAT, tlcore_version=__version__, record_id=record_id, run_id=run.run_id,
                             strategy=run.strategy, kind=run.kind, timm_name=self.config.backbone.name,
                             num_classes=self.data.dataset.num_classes, classes=list(self.data.dataset.classes),
                             image_size=run.image_size, preprocessing=cfg, backbone_weights=dict(run.weights),
                             frozen_groups=frozen)
        save_model(model, config)
        run.extra["model_sha256"] = config.sha256

    # -- one strategy -------------------------------------------------------------------------------------------
    def run(self, spec: StrategySpec) -> RunResult:
        """One strategy on this cell. A trained strategy that runs out of memory (torch.OutOfMemoryError: a GPU's, at
        the large automatic size) is run again from the start at half the batch, down to OOM_MIN_BATCH; the result's
        options carry the batch that ran and `extra["out_of_memory"]` the batches that did not."""
        failed_batches = []
        while True:
            result = self._attempt(spec)
            if result.error != OUT_OF_MEMORY or spec.batch_size // 2 < OOM_MIN_BATCH:
                break
            failed_batches.append(spec.batch_size)
            spec = replace(spec, batch_size=spec.batch_size // 2)
        if failed_batches:
            result.extra["out_of_memory"] = {"batch_sizes": failed_batches, "ran_at": spec.batch_size}
        if result.error == OUT_OF_MEMORY:
            tried = ", ".join(str(b) for b in [*failed_batches, spec.batch_size])
            result.error = (f"Out of memory at batch sizes {tried}: use a smaller --image-size or a smaller "
                            "model.")
        return result

    def _attempt(self, spec: StrategySpec) -> RunResult:
        last = {"features", "head", "evaluate"} if spec.kind == "feature-extraction" else {"epoch", "evaluate"}
        reporter = Reporter(spec.name, self.callbacks, self.cancel, eta_phases=last)
        result = RunResult(run_id=uuid.uuid4().hex[:12], strategy=spec.name, kind=spec.kind, status="completed",
                           backbone=self.config.backbone.name, options=spec.options(), seed=self.config.seed,
                           image_size=self.data.cfg["input_size"][-1], device=self.device.type,
                           precision=run_precision(self.device),
                           started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           dataset=asdict(self.config.dataset)
                           | {"fingerprint": self.data.dataset.source_fingerprint()},
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
        except torch.OutOfMemoryError:
            result.status, result.error = "failed", OUT_OF_MEMORY
        except Exception as exc:  # an unexpected error fails this strategy only; the others still run
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.extra["images_per_class"] = float(np.mean(list(self.data.dataset.counts("train").values())))
        reused = result.timings.get("shared_head_fit", 0.0)  # measured in another run, needed by this one
        result.timings = {**result.timings, **{k: round(v, 4) for k, v in watch.seconds.items()},
                          "total": round(time.perf_counter() - start + reused, 4)}
        result.train_seconds = round(result.timings["total"] - watch.seconds.get("evaluate", 0.0), 4)
        result.peak_memory_mb = round(memory.peak_mb, 1)  # host RAM on every device
        if memory.device_peak_mb is not None:
            result.extra["device_peak_memory_mb"] = round(memory.device_peak_mb, 1)
        if result.error == OUT_OF_MEMORY and spec.kind != "feature-extraction" and spec.batch_size // 2 >= \
                OOM_MIN_BATCH:
            self.models.pop(spec.name, None)
            if self.device.type == "cuda":  # the failed attempt's tensors are gone with its frames: hand them back
                torch.cuda.empty_cache()
            return result  # run() tries again at half the batch; no "done" event for an attempt
        if result.error == OUT_OF_MEMORY and spec.kind == "feature-extraction":
            result.error = "Out of memory during feature extraction: use a smaller --image-size or a smaller model."
        reporter.cancel = CancelToken()  # the final event must get out even after a cancel
        reporter("done", 1.0, message=result.status)
        return result

    def _run(self, spec: StrategySpec, result: RunResult, reporter: Reporter, watch: Stopwatch) -> None:
        reporter("prepare", 0.0)
        torch.manual_seed(self.config.seed)
        model, info = bb.for_run(self.config.backbone, self.data.dataset.num_classes, pretrained=spec.pretrained,
                                 seed=self.config.seed)
        result.weights = info.to_dict()
        if self.keep_models:
            self.models[spec.name] = model
        result.total_params = bb.count_parameters(model)[1]
        if spec.kind == "feature-extraction":
            test_logits = self._feature_extraction(model, spec, result, reporter, watch)
        else:
            test_logits = self._train(model, spec, result, reporter, watch)
        self._score(result, test_logits)

    def _feature_extraction(self, model: torch.nn.Module, spec: StrategySpec, result: RunResult, reporter: Reporter,
                            watch: Stopwatch) -> torch.Tensor:
        """The head on cached frozen features; the deployed model (backbone + head) is timed and checked against it."""
        bb.freeze_for_strategy(model, spec.kind)
        result.trainable_params = bb.count_parameters(model)[0]
        result.phases = [{"phase": "head", "trainable_params": result.trainable_params}]
        feats, fit, _ = self._linear_probe(reporter, spec, watch, (0.0, 0.95), result)
        set_head(model, fit)
        result.curve = fit.curve
        result.epochs_run, result.best_epoch = len(fit.curve), len(fit.curve)
        result.best_val_accuracy = fit.val_accuracy
        result.extra = {"head_l2": fit.l2, "head_grid": fit.grid}
        with watch.phase("evaluate"):
            test_logits = feats["test"] @ fit.weight.T + fit.bias
            deployed = model.to(self.device).to(memory_format=torch.channels_last)
            full_logits, measured = self._timed_sample(deployed, reporter)
        self._record_throughput(result, measured)
        result.extra["max_logit_diff_full_vs_cached"] = float(
            (full_logits - test_logits[:len(full_logits)]).abs().max())
        return test_logits

    def _trainable(self, model: torch.nn.Module, spec: StrategySpec, result: RunResult, reporter: Reporter,
                   watch: Stopwatch) -> tuple[bool, tuple[float, float]]:
        """Freeze what the strategy keeps frozen (fine-tune: all but the top stages; LP-FT fits the head first).
        Returns whether some stages stay frozen, and the progress span left for training."""
        groups, k = bb.freeze_for_strategy(model, spec.kind, spec.stages)
        result.trainable_stages = [g.label for g in groups[len(groups) - k:]]
        span = (0.0, 0.95)
        if spec.kind == "fine-tune" and spec.lp_ft:
            head_params = sum(p.numel() for p in model.get_classifier().parameters())
            _, fit, reused = self._linear_probe(reporter, spec, watch, (0.0, 0.15), result)
            set_head(model, fit)
            result.phases.append({"phase": "lp-warmup (head only)", "trainable_params": head_params})
            result.extra = {"lp_head_l2": fit.l2, "lp_val_accuracy": fit.val_accuracy,
                            "lp_head_reused": reused}  # True: feature extraction's head, fitted once for both
            span = (0.15, 0.95)
        result.trainable_params = bb.count_parameters(model)[0]
        result.phases.append({"phase": spec.kind, "trainable_params": result.trainable_params})
        return k < len(groups), span

    def _train(self, model: torch.nn.Module, spec: StrategySpec, result: RunResult, reporter: Reporter,
               watch: Stopwatch) -> torch.Tensor:
        """Fine-tune or scratch: train the network (on the frozen bottom's cached output where it splits off), then
        predict."""
        partly_frozen, span = self._trainable(model, spec, result, reporter, watch)
        splits = self.data.splits
        train_in = ImageInputs(splits["train"], self.norm, spec.augment)
        val_in = ImageInputs(splits["val"], self.norm)
        prefix, acts = None, None
        if self.skip_frozen_prefix and partly_frozen and not spec.augment:
            with watch.phase("frozen_prefix"):
                acts, prefix = self._skip_frozen_prefix(model, val_in, reporter, span[0])  # cancellable
            if prefix is not None:
                train_in, val_in = acts["train"], acts["val"]
        result.extra["frozen_prefix_cached"] = prefix is not None
        try:
            with watch.phase("epochs"):
                # LP-FT: the fitted head on the pretrained backbone is epoch 0 and a candidate checkpoint
                fit = train_network(model, spec, train_in, val_in, reporter, self.config.seed, span,
                                    evaluate_start=spec.kind == "fine-tune" and spec.lp_ft)
            result.curve = fit.curve
            result.epochs_run, result.best_epoch = fit.epochs_run, fit.best_epoch
            result.extra["planned_epochs"] = fit.planned_epochs
            result.extra["steps_per_epoch"] = fit.steps_per_epoch
            result.extra["val_precision"] = fit.val_precision
            result.stopped_early, result.best_val_accuracy = fit.stopped_early, fit.best_val_accuracy
            reporter("evaluate", 0.96)
            with watch.phase("evaluate"):
                test_logits = self._test_pass(model, prefix, acts and acts["test"], result, reporter)
        finally:
            if prefix is not None:
                prefix.restore()
        return test_logits

    def _score(self, result: RunResult, test_logits: torch.Tensor) -> None:
        y_true = self.data.splits["test"].labels.numpy()
        y_pred = test_logits.argmax(1).numpy()
        s = score(y_true, y_pred, self.data.dataset.classes)
        result.accuracy, result.accuracy_low, result.accuracy_high = s.accuracy, s.accuracy_low, s.accuracy_high
        result.macro_f1, result.per_class_accuracy, result.confusion = s.macro_f1, s.per_class_accuracy, s.confusion
        result.test_images, result.test_predictions = s.test_images, y_pred.tolist()
        result.throughput_ips = round(result.throughput_ips, 1) if result.throughput_ips else None
