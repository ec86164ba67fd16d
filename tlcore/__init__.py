"""tlcore: measure whether to use a pretrained network as a frozen feature extractor, fine-tune it, or train from
scratch, on your own images. No streamlit here: the dashboard (app.py, pages/, ui/) is a thin layer over this package.

    import tlcore
    config = tlcore.build_config("default", dataset="fashion-mnist")        # a preset, then your choices
    result = tlcore.compare(config)
    print(result.to_frame())
    sweep = tlcore.run_sweep(tlcore.build_sweep_config("quick", sizes="5,25,100", repeats=3))
    print(sweep.summary(), [c.statement for c in sweep.crossovers()])
    print(tlcore.advise("fashion-mnist", per_class=20).choice.label)

Where things live: core (errors, settings, progress, result records), data, engine (backbones, weights, features,
training), records (the run store), experiments (configs, prepare, cells, compare, sweep, executors), advice
(transferability, recommendation), views (text, charts, reports), server (job queue), cli.
"""

from tlcore.core.version import __version__
from tlcore.advice.recommend import advise
from tlcore.core.errors import ConfigError, DataError, RunCancelled, RunFailed, TlcoreError, WeightsUnavailable
from tlcore.core.progress import CancelToken, ProgressEvent
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import load_dataset
from tlcore.deploy.load import load_model
from tlcore.engine.backbone import BackboneSpec
from tlcore.engine.strategies import StrategySpec, default_strategies, make_strategy
from tlcore.experiments.compare import compare, load_comparison
from tlcore.experiments.config import ALL, ExperimentConfig, SweepConfig, build_config, build_sweep_config
from tlcore.experiments.sweep import SweepResult, load_sweep, run_sweep

__all__ = ["ALL", "BackboneSpec", "CancelToken", "ComparisonResult", "ConfigError", "DataError", "DatasetSpec",
           "ExperimentConfig", "ProgressEvent", "RunCancelled", "RunFailed", "RunResult", "StrategySpec",
           "SweepConfig", "SweepResult", "TlcoreError", "WeightsUnavailable", "__version__", "advise", "build_config",
           "build_sweep_config", "compare", "default_strategies", "load_comparison", "load_dataset", "load_model", "load_sweep",
           "make_strategy", "run_sweep"]
