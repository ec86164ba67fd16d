"""tlcore: measure whether to use a pretrained network as a frozen feature extractor, fine-tune it, or train from
scratch, on your own images. No streamlit here: the dashboard in pages/ is a thin layer over this package.

    import tlcore
    result = tlcore.compare(tlcore.ExperimentConfig(dataset=tlcore.DatasetSpec("fashion-mnist", per_class=100)))
    print(result.to_frame())
    sweep = tlcore.run_sweep(tlcore.SweepConfig(sizes=[5, 25, 100], repeats=3))
    print(sweep.summary(), [c.statement for c in sweep.crossovers()])
    print(tlcore.advise("fashion-mnist", per_class=20).choice.label)
"""

__version__ = "0.1.0"

from .backbone import BackboneSpec  # noqa: E402
from .data import DatasetSpec, load_dataset  # noqa: E402
from .errors import (ConfigError, DataError, RunCancelled, RunFailed, TlcoreError,  # noqa: E402
                     WeightsUnavailable)
from .experiment import ExperimentConfig, compare  # noqa: E402
from .progress import CancelToken, ProgressEvent  # noqa: E402
from .results import ComparisonResult, RunResult  # noqa: E402
from .strategies import StrategySpec, default_strategies, make_strategy  # noqa: E402
from .sweep import SweepConfig, SweepResult, run_sweep  # noqa: E402
from .recommend import advise  # noqa: E402

__all__ = ["BackboneSpec", "CancelToken", "ComparisonResult", "ConfigError", "DataError", "DatasetSpec",
           "ExperimentConfig", "ProgressEvent", "RunCancelled", "RunFailed", "RunResult", "StrategySpec",
           "TlcoreError", "WeightsUnavailable", "compare", "default_strategies", "load_dataset", "make_strategy",
           "SweepConfig", "SweepResult", "run_sweep", "advise"]
