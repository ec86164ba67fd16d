"""tlcore: measure whether to use a pretrained network as a frozen feature extractor, fine-tune it, or train from
scratch, on your own images. No streamlit here: the dashboard (app.py, pages/, ui/) is a thin layer over this package.

    import tlcore
    r = tlcore.compare(dataset="digits", per_class=10)       # the CLI's options and defaults; stored in the run store
    print(r.to_frame())
    r.save("results/")                                       # JSON, CSV and the HTML report
    same = tlcore.load(r.record_id)                          # any stored record, whatever its kind
    s = tlcore.sweep(preset="quick", sizes="5,25,100", repeats=3)
    print(s.to_frame(), [c.statement for c in s.crossovers()])
    print(tlcore.recommend(dataset="fashion-mnist", per_class=20).choice.label)
    ranking = tlcore.rank(dataset="digits")                  # backbones x image sizes, without training
    both = tlcore.confirm(ranking, top=2)                    # the top 2 compared for real, side by side
    model, preprocessing = tlcore.load_model(r.runs[0].run_id)

The verbs (compare, sweep, recommend, probe, rank, confirm, load, load_model) are in tlcore/api.py, each with its
parameters and an example; the defaults they share with the CLI and the dashboard are in tlcore/experiments/defaults.py.

Where things live: core (errors, settings, progress, result records), data, engine (backbones, weights, features,
training), records (the run store), experiments (configs, prepare, cells, compare, sweep, executors), advice
(transferability, recommendation), views (text, charts, reports), server (job queue), cli.
"""

from tlcore.core.version import __version__
from tlcore.advice.records import advise
from tlcore.core.errors import ConfigError, DataError, RunCancelled, RunFailed, TlcoreError, WeightsUnavailable
from tlcore.core.progress import CancelToken, ProgressEvent
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.engine.backbone import BackboneSpec
from tlcore.engine.strategies import StrategySpec, default_strategies, make_strategy
from tlcore.experiments.compare import load_comparison
from tlcore.experiments.config import ALL, ExperimentConfig, SweepConfig, build_config, build_sweep_config
from tlcore.experiments.sweep import SweepResult, load_sweep, run_sweep
from tlcore.api import (Advice, Comparison, Probe, Sweep, compare, confirm, health, load, load_model, probe, rank,
                        recommend, revise, sweep)

__all__ = ["ALL", "Advice", "BackboneSpec", "CancelToken", "Comparison", "ComparisonResult", "ConfigError", "DataError",
           "DatasetSpec", "ExperimentConfig", "Probe", "ProgressEvent", "RunCancelled", "RunFailed", "RunResult",
           "StrategySpec", "Sweep", "SweepConfig", "SweepResult", "TlcoreError", "WeightsUnavailable", "__version__",
           "advise", "build_config", "build_sweep_config", "compare", "default_strategies", "load", "load_comparison",
           "load_dataset", "load_model", "load_sweep", "make_strategy", "probe", "rank", "confirm", "recommend",
           "health", "revise", "run_sweep", "sweep"]
