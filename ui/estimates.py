"""What a run will take (time, memory, disk), shown on the forms before it is queued, and the refusal of a run this
machine cannot hold. The estimate scans the data (seconds), so it is kept an hour; what the machine has free is read
again each time."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from tlcore.engine.rates import machine_busy
from tlcore.experiments.config import ExperimentConfig, SweepConfig
from tlcore.experiments.estimate import Estimate, estimate_comparison, estimate_sweep, require_resources


@st.cache_data(show_spinner="Estimating the time on this machine...", max_entries=64, ttl=3600)
def _planned(kind: str, config: dict) -> Estimate:
    if kind == "sweep":
        return estimate_sweep(SweepConfig.from_dict(config), check_load=False)
    return estimate_comparison(ExperimentConfig.from_dict(config), check_load=False)


@st.cache_data(show_spinner=False, ttl=10)
def _busy() -> str:
    return machine_busy()


def current_estimate(kind: str, config: dict) -> Estimate:
    """The estimate for these choices against this machine now (busy or not, memory and disk free)."""
    planned = _planned(kind, config)
    return replace(planned, busy=_busy(), resources=planned.resources and planned.resources.now())


def require_fits(kind: str, config: dict) -> str:
    """The estimate's text, or a ConfigError when this machine cannot hold the run."""
    estimate = current_estimate(kind, config)
    require_resources(estimate)
    return estimate.text()
