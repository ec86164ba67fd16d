"""One set of defaults: the Python API, the CLI and the dashboard's pages submit the same comparison and the same sweep
when the user changes nothing (tlcore/experiments/defaults.py), and that is the benchmarked default preset."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import tlcore
from tlcore.cli import build_parser, config_from_args, sweep_config_from_args
from tlcore.core.errors import TlcoreError
from tlcore.core.results import ComparisonResult
from tlcore.experiments import compare as experiments_compare
from tlcore.experiments import sweep as experiments_sweep
from tlcore.experiments.config import ALL, build_config, build_sweep_config
from tlcore.experiments.defaults import DEFAULT_PRESET
from tlcore.experiments.sweep import SweepResult
from tlcore.server.jobs import JobQueue

ROOT = Path(__file__).resolve().parents[1]


class Submitted(TlcoreError):
    """Raised by the intercepted job queue: the page shows it as an error, and nothing runs."""


def _api_configs(monkeypatch) -> tuple:
    """What `tlcore.compare()` and `tlcore.sweep()` hand to the engine, without running it."""
    seen = []

    def fake_compare(config, **_):
        seen.append(config)
        return ComparisonResult(config=config.to_dict(), dataset={}, runs=[])

    def fake_sweep(config, **_):
        seen.append(config)
        return SweepResult(config=config.to_dict(), dataset={}, cells=[])

    monkeypatch.setattr(experiments_compare, "compare", fake_compare)
    monkeypatch.setattr(experiments_sweep, "run_sweep", fake_sweep)
    tlcore.compare()
    tlcore.sweep()
    return seen[0], seen[1]


def _page_submission(monkeypatch, page: str, run_key: str):
    """Open the page untouched, click its Run button, and return the config it submitted to the job queue."""
    submitted = []

    def submit(self, config, **where):  # label, session, ...: how it is run, not what
        submitted.append(config)
        raise Submitted("intercepted by the test")

    monkeypatch.setattr(JobQueue, "submit", submit)
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    at.button(key=run_key).click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == ["intercepted by the test"], [e.value for e in at.error]
    assert len(submitted) == 1
    return submitted[0]


def test_the_api_and_the_cli_build_the_same_default_comparison_and_sweep(monkeypatch):
    api_compare, api_sweep = _api_configs(monkeypatch)
    cli_compare = config_from_args(build_parser().parse_args(["compare"]))
    cli_sweep = sweep_config_from_args(build_parser().parse_args(["sweep"]))
    assert api_compare == cli_compare == build_config()
    assert api_sweep == cli_sweep == build_sweep_config()
    # what the defaults are: the benchmarked preset, 100 images a class, scratch from 50 a class only in a sweep
    assert DEFAULT_PRESET == "default" and build_config() == build_config("default")
    assert cli_compare.dataset.source == "fashion-mnist" and cli_compare.dataset.per_class == 100
    assert cli_compare.backbone == tlcore.BackboneSpec("tf_efficientnet_lite0", "pretrained")
    assert [s.kind for s in cli_compare.strategies] == ["feature-extraction", "fine-tune", "scratch"]
    assert cli_sweep.sizes == (5, 10, 25, 50, 100) and cli_sweep.repeats == 2 and cli_sweep.long_only == ("scratch",)
    assert cli_sweep.max_repeats == 8 and cli_sweep.cells_total == 24


def test_the_engines_entry_points_without_a_config_run_the_same_defaults(monkeypatch):
    """`tlcore.experiments.compare.compare()` and `run_sweep()` (what the API calls) fill in the same defaults."""
    planned = []
    monkeypatch.setattr(experiments_compare, "run_cells", lambda config, *args, **kwargs: planned.append(config))
    monkeypatch.setattr(experiments_sweep, "run_cells", lambda config, *args, **kwargs: planned.append(config))
    experiments_compare.compare()
    experiments_sweep.run_sweep()
    assert planned[0].experiment == build_config() and planned[0].sizes == (100,)
    assert planned[1] == build_sweep_config()


@pytest.mark.slow
def test_the_compare_page_untouched_submits_the_default_comparison(monkeypatch):
    page = _page_submission(monkeypatch, "1_Compare.py", "run")
    cli = config_from_args(build_parser().parse_args(["compare"]))
    assert page == cli
    assert page.to_dict() == tlcore.ExperimentConfig.from_dict(cli.to_dict()).to_dict()


def test_the_sweep_page_untouched_submits_the_default_sweep(monkeypatch):  # under a second after other page tests
    page = _page_submission(monkeypatch, "2_Sweep.py", "sw_run")
    cli = sweep_config_from_args(build_parser().parse_args(["sweep"]))
    assert page == cli
    assert page.strategies_at(ALL) == cli.strategies_at(ALL) and page.long_only == ("scratch",)


def test_a_preset_chosen_anywhere_gives_the_same_config(monkeypatch):
    """The same preset and options by the CLI's names: the same config from the CLI and from the API."""
    seen = []
    monkeypatch.setattr(experiments_compare, "compare", lambda config, **_: seen.append(config) or
                        ComparisonResult(config=config.to_dict(), dataset={}, runs=[]))
    monkeypatch.setattr(experiments_sweep, "run_sweep", lambda config, **_: seen.append(config) or
                        SweepResult(config=config.to_dict(), dataset={}, cells=[]))
    tlcore.compare(preset="quick", dataset="digits:3|5|8", per_class="all", strategies="fine-tune,scratch",
                   epochs=2, scratch_epochs=3, ft_stages="all", lp_ft=False, augment=True, seed=4)
    cli = config_from_args(build_parser().parse_args(
        ["compare", "--preset", "quick", "--dataset", "digits:3|5|8", "--per-class", "all", "--strategies",
         "fine-tune,scratch", "--epochs", "2", "--scratch-epochs", "3", "--ft-stages", "all", "--no-lp-ft",
         "--augment", "--seed", "4"]))
    assert seen[0] == cli and cli.dataset.classes == ("3", "5", "8") and cli.dataset.per_class is ALL
    tlcore.sweep(preset="quick", sizes="5,all", repeats=3, strategies=["feature-extraction"])
    cli = sweep_config_from_args(build_parser().parse_args(
        ["sweep", "--preset", "quick", "--sizes", "5,all", "--repeats", "3", "--strategies", "feature-extraction"]))
    assert seen[1] == cli and cli.sizes == (5, ALL) and cli.repeats == 3
