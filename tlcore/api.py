"""The Python API: a few verbs for a notebook or another program, with the CLI's option names and defaults.

    import tlcore
    r = tlcore.compare(dataset="digits", per_class=10, strategies=["feature-extraction"])
    print(r.to_frame())
    same = tlcore.load(r.record_id)

One meaning for each verb:

- `compare`, `sweep`, `recommend` and `probe` measure, and store what they measured in the run store
  (`$TLCORE_HOME`), as the CLI and the dashboard do: the result's `.record_id` is the id that History, share links
  and `python -m tlcore history` show.
- `load(record_id)` reads any stored record back, whatever its kind, as the same result class the verb returned.
- A result's `.save(dir)` writes files into a folder (JSON, CSV and the HTML report) and returns their paths; it never
  touches the run store. `.to_frame()` is its table and `.report_html()` its self-contained report.
- `load_model(run_id)` gives a stored run's trained model and its preprocessing.

A keyword left out has the value the CLI and the dashboard use when nothing is changed
(`tlcore.experiments.defaults`): the benchmarked "default" preset on the bundled Fashion-MNIST subset with
`tf_efficientnet_lite0`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from tlcore.advice.probe import ProbeResult, layer_probe, probe_from_record, probe_table, save_probe
from tlcore.advice.health import HealthReport, apply_fixes, health_check, health_from_record
from tlcore.advice.candidates import DEFAULT_PER_CLASS, Ranking, confirmation, rank_candidates, ranking_from_record
from tlcore.advice.records import advise, recommendation_from_record
from tlcore.advice.rules import Recommendation
from tlcore.core.errors import ConfigError
from tlcore.core.progress import CancelToken, ProgressCallback
from tlcore.core.results import ComparisonResult, RunResult, _jsonable
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label, parse_dataset
from tlcore.deploy.load import load_model  # re-exported: `model, preprocessing = tlcore.load_model(run_id)`
from tlcore.deploy.tracking import log_to_mlflow, requested_uri
from tlcore.engine.backbone import BackboneSpec
from tlcore.engine.features import FeatureCache
from tlcore.experiments import compare as _compare
from tlcore.experiments import sweep as _sweep
from tlcore.experiments.backbones import BackbonesResult, Candidate, compare_backbones, load_backbones, parse_candidates
from tlcore.experiments.cells import SweepCell
from tlcore.experiments.config import Choices, ExperimentConfig, Size, SweepConfig, parse_size, saved_config
from tlcore.experiments.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_DATASET,
    DEFAULT_DEVICE,
    DEFAULT_PRESET,
    DEFAULT_SEED,
    DEFAULT_STRATEGIES,
    DEFAULT_WEIGHTS,
)
from tlcore.experiments.executors import Executor, make_executor
from tlcore.experiments.sweep import SweepResult
from tlcore.records.slot import training_slot
from tlcore.records.store import Store, default_store
from tlcore.views.report import outlook_frame, probe_report_html, recommendation_report_html, report_html

__all__ = ["Advice", "Comparison", "Probe", "Sweep", "compare", "health", "load", "load_model", "probe", "recommend",
           "revise", "sweep"]

# What `compare` and `sweep` take as **options, by the CLI's names: the choices that are not keywords of their own
# (the strategies' options and the split's).
OPTIONS = tuple(name for name in Choices.__dataclass_fields__ if name not in (
    "preset", "dataset", "per_class", "sizes", "repeats", "strategies", "backbone", "weights", "image_size", "seed",
    "device"))


# ------------------------------------------------------------------------------------------------------- results
class _Result:
    """Files in a folder, for every verb's result: each result class below has `to_dict()` (its data), `to_frame()`
    (its table) and `report_html()` (its report), and puts this class first among its bases so its `save` wins."""

    STEM = "result"

    def _write_data(self, out: Path, stem: str) -> list[Path]:
        """`<stem>.json` (everything) and `<stem>.csv` (the table of `.to_frame()`)."""
        paths = [out / f"{stem}.json", out / f"{stem}.csv"]
        paths[0].write_text(json.dumps(self.to_dict(), indent=1, default=_jsonable))  # type: ignore[attr-defined]
        self.to_frame().to_csv(paths[1], index=False)  # type: ignore[attr-defined]
        return paths

    def save(self, out_dir: str | Path, stem: str | None = None) -> list[Path]:
        """Write the result's files into `out_dir` (created if missing): the JSON and CSV files that the CLI's
        ``--out`` writes, then ``<stem>.html``, the report (it opens offline).

        Returns
        -------
        list of Path
            The files written, the JSON first and the report last. The run store is not touched: the verb stored the
            result already.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or self.STEM
        paths = self._write_data(out, stem)
        paths.append(out / f"{stem}.html")
        paths[-1].write_text(self.report_html())  # type: ignore[attr-defined]
        return paths


class Comparison(_Result, ComparisonResult):
    """A comparison: one row per strategy in `.to_frame()`, each run in `.runs` (its `run_id` for `load_model`)."""

    STEM = "comparison"

    def _write_data(self, out: Path, stem: str) -> list[Path]:
        return list(ComparisonResult.save(self, out, stem))  # comparison.json, comparison.csv

    def report_html(self) -> str:
        return report_html(self)


class Sweep(_Result, SweepResult):
    """A sweep: `.to_frame()` is the summary (per strategy and size: mean accuracy, 95% interval, time),
    `.cells_frame()` one row per cell, `.crossovers()` where the strategies cross."""

    STEM = "sweep"

    def to_frame(self) -> pd.DataFrame:
        return self.summary()

    def _write_data(self, out: Path, stem: str) -> list[Path]:
        return SweepResult.save(self, out, stem)  # sweep.json, sweep_cells.csv, sweep_summary.csv

    def report_html(self) -> str:
        return report_html(self)


class Advice(_Result, Recommendation):
    """A recommendation: `.choice.label` is the strategy recommended, `.reasons` why, `.to_frame()` what to expect of
    each strategy."""

    STEM = "recommendation"

    def to_frame(self) -> pd.DataFrame:
        return outlook_frame(self)

    def report_html(self) -> str:
        return recommendation_report_html(self)


class Probe(_Result, ProbeResult):
    """A layer-wise probe: `.to_frame()` has one row per stage (val and test accuracy of a linear head on it, for the
    pretrained and the random weights), `.statement()` says where the features stop transferring."""

    STEM = "probe"

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(probe_table(self))

    def report_html(self) -> str:
        return probe_report_html(self)


R = TypeVar("R")


def _as(cls: type[R], result: Any) -> R:
    """The same data as the verb's result class (one of the classes above)."""
    return cls(**{f.name: getattr(result, f.name) for f in fields(result)})


# --------------------------------------------------------------------------------------------------------- verbs
def _choices(config: Any, kind: type, chosen: dict, options: dict) -> Choices | ExperimentConfig | SweepConfig:
    """The config the caller gave (a config, its dict, or a saved JSON as `--config` reads), or the choices."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the options are "
                          f"{', '.join(OPTIONS)} (the CLI's, with - spelled _).")
    choices = Choices(**chosen, **options)
    if config is None:
        return choices
    given = sorted(k for k in (*chosen, *options) if _changed(choices, k))
    if given:
        raise ConfigError(f"Give a config or options ({', '.join(given)}), not both: a config is run as it is. Use "
                          "dataclasses.replace(config, ...) for a variant.")
    if isinstance(config, kind):
        return config
    if isinstance(config, (str, Path)):
        config = saved_config(config)
    if isinstance(config, dict):
        return kind.from_dict(config)
    raise ConfigError(f"config must be a {kind.__name__}, its dict, or the path of a saved JSON (got "
                      f"{type(config).__name__}).")


def _changed(choices: Choices, name: str) -> bool:
    default = Choices()
    if name == "strategies":
        return choices.strategy_names() != default.strategy_names()
    return getattr(choices, name) != getattr(default, name)


def _executor(executor: str | Executor | None) -> Executor | None:
    return make_executor(executor) if isinstance(executor, str) else executor


def compare(config: ExperimentConfig | dict | str | Path | None = None, *, preset: str = DEFAULT_PRESET,
            dataset: str | DatasetSpec = DEFAULT_DATASET, per_class: Size | str = "preset",
            strategies: Sequence[str] | str = DEFAULT_STRATEGIES, backbone: str = DEFAULT_BACKBONE,
            weights: str = DEFAULT_WEIGHTS, image_size: int | None = None, seed: int = DEFAULT_SEED,
            device: str = DEFAULT_DEVICE, executor: str | Executor | None = None,
            callbacks: list[ProgressCallback] | None = None, cancel: CancelToken | None = None,
            cache: FeatureCache | None = None, store: Store | None = None, label: str = "", resume: bool = False,
            on_result: Callable[[RunResult], None] | None = None, record_id: str | None = None,
            mlflow: str | None = None, **options: Any) -> Comparison:
    """Run strategies side by side on the same split and test set, and store the comparison.

    The same comparison as ``python -m tlcore compare`` with the same options: a preset, then your choices on top.

    Parameters
    ----------
    config : ExperimentConfig, dict, str or Path, optional
        A config to run as it is: an `ExperimentConfig`, its `to_dict()`, or the path of a saved ``comparison.json``
        (what ``--config`` reads). Leave it out to build one from the keywords below (not both).
    preset : {'default', 'quick', 'thorough'}, default 'default'
        The images a class and the strategies' schedules the other choices start from.
    dataset : str or DatasetSpec, default 'fashion-mnist'
        A built-in name (``python -m tlcore datasets``), a folder of class sub-folders, or a sub-task as
        ``'fashion-mnist:Sandal|Sneaker'``.
    per_class : int, 'all' or 'preset', default 'preset'
        Training images a class (a nested, seeded subset); 'preset' keeps the preset's (100 in 'default').
    strategies : list of str or str, default all three
        From 'feature-extraction', 'fine-tune', 'scratch' (a list, or one comma-separated string).
    backbone : str, default 'tf_efficientnet_lite0'
        Any timm model name.
    weights : str, default 'pretrained'
        'pretrained' (packaged offline weights, then the timm hub), 'none', or a path to a state_dict.
    image_size : int, optional
        Input size in pixels; None picks it from the data.
    seed : int, default 0
        Seed of the subset, the initialisation and the batch order.
    device : {'auto', 'cpu', 'cuda', 'mps'}, default 'auto'
    executor : {'local', 'ray'} or Executor, optional
        Where the runs execute; None: ``TLCORE_EXECUTOR``, else in this process.
    callbacks : list of callable, optional
        Each called with every `ProgressEvent` (phase, epoch, batch, loss, val accuracy, ETA).
    cancel : CancelToken, optional
        ``cancel.cancel()`` from another thread stops after the current batch; what finished is kept.
    cache, store, label, resume, on_result, record_id
        The feature cache and run store to use (default: under ``$TLCORE_HOME``), the record's label, whether to
        take strategies already computed under the same content key from the store, a callable called with each
        finished `RunResult`, and the id of a record created beforehand.
    mlflow : str, optional
        An MLflow tracking URI to log the record to as well (one parent run, a child run per strategy, the models
        as pyfunc artifacts); None: ``TLCORE_MLFLOW_URI``, '' : off. An MLflow that cannot be reached gives one
        warning and never fails the run; the record says whether it was logged.
    **options
        The CLI's strategy and split options, spelled with ``_``: ``epochs``, ``scratch_epochs``, ``lr``,
        ``scratch_lr``, ``batch_size``, ``patience``, ``min_delta``, ``ft_stages``, ``lp_ft``,
        ``backbone_lr_ratio``, ``bn_policy``, ``augment``, ``val_fraction``, ``test_fraction``, ``split_seed``.
        None (the default of each) keeps the preset's value.

    Returns
    -------
    Comparison
        ``.runs`` (one `RunResult` per strategy), ``.record_id`` (in the run store), ``.to_frame()``,
        ``.report_html()`` and ``.save(dir)``.

    Examples
    --------
    >>> r = tlcore.compare(dataset="digits", per_class=10, strategies=["feature-extraction"])
    >>> r.to_frame()[["strategy", "accuracy", "train_seconds"]]
    >>> tlcore.load(r.record_id).runs[0].accuracy == r.runs[0].accuracy
    True
    """
    chosen = {"preset": preset, "dataset": dataset, "per_class": per_class, "strategies": strategies,
              "backbone": backbone, "weights": weights, "image_size": image_size, "seed": seed, "device": device}
    made = _choices(config, ExperimentConfig, chosen, options)
    config = made.config() if isinstance(made, Choices) else made
    uri = requested_uri(mlflow)  # before training: a missing mlflow package is a ConfigError now, not after
    result = _compare.compare(config, callbacks=callbacks, cancel=cancel, cache=cache, on_result=on_result,
                              store=store, label=label, record_id=record_id, executor=_executor(executor),
                              resume=resume)
    if uri:
        log_to_mlflow(result, uri, store=store)
    return _as(Comparison, result)


def sweep(config: SweepConfig | dict | str | Path | None = None, *, preset: str = DEFAULT_PRESET,
          dataset: str | DatasetSpec = DEFAULT_DATASET, sizes: str | Sequence | None = None,
          repeats: int | None = None, strategies: Sequence[str] | str = DEFAULT_STRATEGIES,
          backbone: str = DEFAULT_BACKBONE, weights: str = DEFAULT_WEIGHTS, image_size: int | None = None,
          seed: int = DEFAULT_SEED, device: str = DEFAULT_DEVICE, fresh: bool = False,
          executor: str | Executor | None = None, callbacks: list[ProgressCallback] | None = None,
          cancel: CancelToken | None = None, cache: FeatureCache | None = None, store: Store | None = None,
          label: str = "", on_cell: Callable[[SweepCell], None] | None = None, record_id: str | None = None,
          mlflow: str | None = None, **options: Any) -> Sweep:
    """Accuracy, time and cost against images per class: every strategy at several sizes, repeated with several
    seeds, each cell stored as it finishes.

    The same sweep as ``python -m tlcore sweep`` with the same options. Cells already stored under the same content key
    are taken from the store (an interrupted sweep resumes) unless ``fresh``.

    Parameters
    ----------
    config : SweepConfig, dict, str or Path, optional
        A sweep config to run as it is (a `SweepConfig`, its `to_dict()`, or a saved ``sweep.json``). Leave it out to
        build one from the keywords (not both).
    preset : {'default', 'quick', 'thorough'}, default 'default'
        The sweep preset: sizes, repeats and schedules ('default': 5,10,25,50,100 a class, 2 repeats, scratch from 50
        a class only, adaptive repeats of the cheap strategies).
    dataset, strategies, backbone, weights, image_size, seed, device, executor, **options
        As for `compare`; ``seed`` is the first seed (the repeats use seed, seed + 1, ...).
    sizes : str or list, optional
        Images per class, e.g. ``"5,10,25,all"`` or ``[5, 10, 25, None]``; None: the preset's.
    repeats : int, optional
        Seeds per cell; None: the preset's. The 'default' preset then adds seeds to feature extraction and fine-tune,
        up to 8, where their 95% interval is wider than +-5 points (adaptive repeats; 'quick' has none).
    fresh : bool, default False
        Recompute every cell, even those already stored.
    callbacks, cancel, cache, store, label, record_id, mlflow
        As for `compare` (MLflow: a child run per cell).
    on_cell : callable, optional
        Called with each finished `SweepCell`.

    Returns
    -------
    Sweep
        ``.cells``, ``.summary()``, ``.crossovers()``, ``.record_id``, ``.to_frame()`` (the summary),
        ``.report_html()`` and ``.save(dir)``.

    Examples
    --------
    >>> s = tlcore.sweep(dataset="digits", preset="quick", sizes="5,10", strategies=["feature-extraction"])
    >>> s.to_frame()[["strategy", "size", "repeats", "accuracy", "accuracy_low", "accuracy_high"]]
    >>> [c.statement for c in s.crossovers()]
    """
    chosen = {"preset": preset, "dataset": dataset, "sizes": sizes, "repeats": repeats, "strategies": strategies,
              "backbone": backbone, "weights": weights, "image_size": image_size, "seed": seed, "device": device}
    made = _choices(config, SweepConfig, chosen, options)
    config = made.sweep_config() if isinstance(made, Choices) else made
    uri = requested_uri(mlflow)
    result = _sweep.run_sweep(config, callbacks=callbacks, cancel=cancel, cache=cache, store=store, on_cell=on_cell,
                              resume=not fresh, label=label, record_id=record_id, executor=_executor(executor))
    if uri:
        log_to_mlflow(result, uri, store=store)
    return _as(Sweep, result)


def recommend(dataset: str | DatasetSpec = DEFAULT_DATASET, *, per_class: Size | str = None,
              backbone: str = DEFAULT_BACKBONE, weights: str = DEFAULT_WEIGHTS, image_size: int | None = None,
              seed: int = DEFAULT_SEED, use_evidence: bool = True, store: Store | None = None,
              device: str = DEFAULT_DEVICE) -> Advice:
    """Measure the data with one frozen forward pass and recommend feature extraction, fine-tuning (how deep) or
    scratch, with reasons; store the recommendation.

    The same as ``python -m tlcore recommend``. Runs and sweeps already stored on the same data outweigh the
    prediction.

    Parameters
    ----------
    dataset : str or DatasetSpec, default 'fashion-mnist'
        As for `compare`.
    per_class : int or 'all', optional
        Training images a class to consider; None: all of them.
    backbone, weights, image_size, seed
        As for `compare` (weights must be pretrained: the signals measure pretrained features).
    use_evidence : bool, default True
        Let stored measurements on this data outweigh the rules (the CLI's ``--no-evidence`` is False).
    store : Store, optional
        The run store to read evidence from and store the recommendation in.
    device : str, default 'auto'
        Where to measure, as for `compare`: the image size and the time estimates are this device's, and the
        confirmation (`confirmation_config`) runs there.

    Returns
    -------
    Advice
        ``.choice.label`` (the strategy recommended), ``.runner_up``, ``.confidence``, ``.reasons``, ``.outlooks``,
        ``.signals``, ``.record_id``, ``.to_frame()`` (what to expect of each strategy), ``.report_html()`` and
        ``.save(dir)``.

    Examples
    --------
    >>> rec = tlcore.recommend(dataset="digits", per_class=10)
    >>> print(rec.choice.label, rec.confidence)
    >>> rec.to_frame()
    """
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    size = None if per_class is None else parse_size(per_class)
    rec = advise(spec, BackboneSpec(backbone, weights), per_class=size, seed=seed, image_size=image_size,
                 use_evidence=use_evidence, store=store, device=device)
    return _as(Advice, rec)


def probe(dataset: str | DatasetSpec = DEFAULT_DATASET, *, per_class: Size | str = "preset",
          backbone: str = DEFAULT_BACKBONE, weights: str = DEFAULT_WEIGHTS, image_size: int | None = None,
          seed: int = DEFAULT_SEED, random_weights: bool = True, progress: Callable[[str], None] | None = None,
          cache: FeatureCache | None = None, store: Store | None = None) -> Probe:
    """The layer-wise probe: a linear head on the pooled output of every stage of the backbone, pretrained and with
    random weights, to see where the pretrained features stop transferring; stored as a record.

    The same as ``python -m tlcore anatomy --dataset ...``.

    Parameters
    ----------
    dataset, per_class, backbone, weights, image_size, seed
        As for `compare` (the preset's images a class: 100).
    random_weights : bool, default True
        Also probe the same architecture with random weights (the CLI's ``--no-random`` is False).
    progress : callable, optional
        Called with a line of text as each stage is measured.
    cache, store : optional
        The feature cache and the run store (default: under ``$TLCORE_HOME``).

    Returns
    -------
    Probe
        ``.curves`` (per weights: one point per stage), ``.statement()``, ``.record_id``, ``.to_frame()`` (one row
        per stage), ``.report_html()`` and ``.save(dir)``.

    Examples
    --------
    >>> p = tlcore.probe(dataset="digits", per_class=10)
    >>> p.to_frame()[["stage", "block", "pretrained val", "random val"]]
    >>> p.statement()
    """
    config = Choices(dataset=dataset, per_class=per_class, backbone=backbone, weights=weights, image_size=image_size,
                     seed=seed).probe_config()
    with training_slot("tlcore.probe (layer-wise probe)"):
        result = layer_probe(config, random_weights=random_weights, cache=cache, progress=progress)
    save_probe(result, config, random_weights, store)
    return _as(Probe, result)


def rank(dataset: str | DatasetSpec = DEFAULT_DATASET, *, candidates: str | list[Candidate] | None = None,
         per_class: Size | str = DEFAULT_PER_CLASS, seed: int = DEFAULT_SEED,
         progress: Callable[[str], None] | None = None, store: Store | None = None) -> Ranking:
    """Rank candidate backbones, each at an image size, on the data without training; store the ranking.

    The same as ``python -m tlcore backbones --dataset``: one frozen pass a candidate (cached, so a comparison of it
    afterwards reuses the features), the feature-extraction head's val accuracy (what a comparison's feature
    extraction reports), k-NN accuracy, LogME and H-score, parameters, multiply-adds, img/s and peak memory.

    Parameters
    ----------
    dataset : str or DatasetSpec, default 'fashion-mnist'
        As for `compare`.
    candidates : str or list of Candidate, optional
        'name@size,name@size' (a weights file: 'name@size@path'); None: every backbone with weights installed here,
        from the automatic CPU size to its pretrained size.
    per_class : int or 'all', default 100
        Training images a class (the default comparison's, so it reuses the features).
    seed : int, default 0
    progress : callable, optional
        Called with a line of text as each candidate starts and ends.
    store : Store, optional

    Returns
    -------
    Ranking
        ``.candidates`` (best first; failed ones last with ``.reason``), ``.statement``, ``.front()``, ``.to_frame()``
        and ``.record_id``.

    Examples
    --------
    >>> ranking = tlcore.rank(dataset="digits", candidates="tf_efficientnet_lite0@48,tf_efficientnet_lite0@96")
    >>> print(ranking.statement)
    """
    chosen = parse_candidates(candidates) if isinstance(candidates, str) else candidates
    return rank_candidates(dataset, chosen, per_class=per_class, seed=seed, progress=progress, store=store)


def confirm(ranking: Ranking, top: int = 2, *, preset: str = DEFAULT_PRESET, strategies: list[str] | None = None,
            store: Store | None = None) -> BackbonesResult:
    """Run the real comparison for a ranking's `top` candidates: strategy x backbone side by side.

    The same as ``--confirm N``: the preset's strategies and schedules on the ranking's data, subset and seed, each
    candidate at its own size, each stored as its own comparison and all of them in one record.

    Parameters
    ----------
    ranking : Ranking
        From `rank` (or `load`).
    top : int, default 2
    preset : str, default 'default'
    strategies : list of str, optional
        Default: the preset's (feature extraction, fine-tune and scratch).
    store : Store, optional

    Returns
    -------
    BackbonesResult
        ``.to_frame()`` (a row a run), ``.front()``, ``.statement()``, ``.members`` (each candidate's comparison).

    Examples
    --------
    >>> both = tlcore.confirm(ranking, top=2, preset="quick")
    >>> print(both.statement())
    """
    return compare_backbones(confirmation(ranking, top, preset, strategies), store=store)


def health(dataset: str | DatasetSpec = DEFAULT_DATASET, *, per_class: Size | str = None,
           backbone: str = DEFAULT_BACKBONE, weights: str = DEFAULT_WEIGHTS, image_size: int | None = None,
           seed: int = DEFAULT_SEED, store: Store | None = None) -> HealthReport:
    """Check the data: likely label errors, the most atypical images, image issues and duplicates; store the report.

    The same as ``python -m tlcore health``: out-of-fold probabilities of the feature-extraction head on cached
    frozen features, cleanlab's label issues and outliers, cleanvision's image checks and duplicate groups.

    Parameters
    ----------
    dataset : str or DatasetSpec, default 'fashion-mnist'
        As for `compare` ('name@<revision id>' checks a revision).
    per_class : int or 'all', optional
        Training images a class (default: all); val and test are always checked whole.
    backbone, weights, image_size, seed
        As for `compare`.
    store : Store, optional

    Returns
    -------
    HealthReport
        ``.label_issues``, ``.outliers``, ``.image_issues``, ``.duplicates``, ``.counts()``, ``.text()``,
        ``.record_id``.

    Examples
    --------
    >>> report = tlcore.health(dataset="digits")
    >>> print(report.counts())
    """
    return health_check(dataset, backbone=backbone, weights=weights, per_class=per_class, image_size=image_size,
                        seed=seed, store=store)


def revise(dataset: str | DatasetSpec, *, exclude: Sequence[str] = (), relabel: dict[str, str] | None = None,
           note: str = "") -> str:
    """Store a revision of the data (images excluded or relabelled, the files untouched) and return its name.

    Parameters
    ----------
    dataset : str or DatasetSpec
        The original data (a built-in name or a folder; a name with '@<id>' adds to that revision's changes).
    exclude : list of str
        Images to leave out, named as a health report names them (``FlaggedImage.name``).
    relabel : dict, optional
        {image name: new class}.
    note : str, optional

    Returns
    -------
    str
        'name@<revision id>': pass it as ``dataset=`` to any verb, e.g. `compare`.

    Examples
    --------
    >>> report = tlcore.health(dataset="digits")
    >>> revised = tlcore.revise("digits", exclude=[f.name for f in report.label_issues if f.split == "train"])
    >>> after = tlcore.compare(dataset=revised, per_class="all", strategies=["feature-extraction"])
    """
    spec = parse_dataset(dataset) if isinstance(dataset, str) else dataset
    revision = apply_fixes(spec, exclude, (relabel or {}).items(), note)
    return dataset_label(replace(spec, revision=revision.id))


def load(record_id: str, store: Store | None = None) -> Comparison | Sweep | Advice | Probe | Ranking | \
        BackbonesResult | HealthReport:
    """A stored record, whatever its kind, as the result class its verb returns.

    Parameters
    ----------
    record_id : str
        The record's id: a result's ``.record_id``, the dashboard's History and share links, or
        ``python -m tlcore history list``.
    store : Store, optional
        The run store (default: under ``$TLCORE_HOME``).

    Returns
    -------
    Comparison, Sweep, Advice, Probe, Ranking, BackbonesResult or HealthReport
        A comparison or sweep as stored so far (one still running or interrupted has the runs that finished).

    Raises
    ------
    ConfigError
        When no record has that id (one in the trash is not loaded: ``history restore`` brings it back).

    Examples
    --------
    >>> r = tlcore.compare(dataset="digits", per_class=10, strategies=["feature-extraction"])
    >>> tlcore.load(r.record_id).to_frame()
    """
    store = store or default_store()
    record = store.record(record_id)
    kind = record["kind"] if record else None
    if kind == "comparison":
        return _as(Comparison, _compare.load_comparison(record_id, store))
    if kind == "sweep":
        return _as(Sweep, _sweep.load_sweep(record_id, store))
    if kind == "probe":
        return _as(Probe, probe_from_record(record))
    if kind == "recommendation":
        return _as(Advice, recommendation_from_record(record))
    if kind == "ranking":
        return ranking_from_record(record)
    if kind == "backbones":
        return load_backbones(record_id, store)
    if kind == "health":
        return health_from_record(record)
    if record is None:
        raise ConfigError(f"No stored record '{record_id}' in {store.path}; `python -m tlcore history list` lists "
                          "the ids.")
    raise ConfigError(f"Record {record_id} is a {kind}, which tlcore.load cannot read.")

