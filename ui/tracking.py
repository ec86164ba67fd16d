"""The Compare page's "Log to MLflow" option and the outcome under the results. Who may choose the tracking URI is
decided in tlcore (tlcore.deploy.tracking.job_tracking_uri): a visitor's own URI only on the operator's own
localhost dashboard, else the URI the operator set in TLCORE_MLFLOW_URI."""

from __future__ import annotations

import importlib.util

import streamlit as st

from tlcore.deploy.tracking import URI_ENV, job_tracking_uri, tracking_uri
from tlcore.server.incidents import visitors_are_remote

RULE = ("A tracking URI typed here is used only when this dashboard runs on your own machine (localhost, no access "
        f"token). On a shared server, runs go to the MLflow its operator set in {URI_ENV}, or nowhere: a URI chosen "
        "by a visitor would make the server connect or write where the visitor says.")


def _remote() -> bool:
    return visitors_are_remote(st.get_option("server.address"))


def mlflow_option() -> str | None:
    """An expander with the tracking URI (local dashboard) or an on/off switch for the operator's MLflow (shared
    server). Returns what to pass to `submitted_uri`: the URI typed, '' for none."""
    configured = tracking_uri()
    with st.expander("Log to MLflow"):
        if importlib.util.find_spec("mlflow") is None:
            st.caption("MLflow logging needs the mlflow package (pip install mlflow)" +
                       (f"; {URI_ENV} is set, but runs are not logged until it is installed." if configured else "."))
            return ""
        if _remote():
            st.caption(RULE)
            if not configured:
                st.caption(f"This server's operator has not set {URI_ENV}: runs are not logged to MLflow.")
                return ""
            on = st.checkbox("Log this run to this server's MLflow (set by its operator)", value=True,
                             key="mlflow_on")
            return configured if on else ""
        typed = st.text_input("Log to MLflow (tracking URI)", value=configured, key="mlflow_uri",
                              placeholder="http://127.0.0.1:5000 or sqlite:///mlflow.db; empty: not logged",
                              help="A parent run for the comparison, a child run per strategy with its metrics, "
                              "per-epoch validation accuracy, model (MLflow pyfunc) and model card. If MLflow cannot "
                              f"be reached the run still finishes, and the record says it was not logged. Default: "
                              f"{URI_ENV}.")
        st.caption(RULE)
        return typed


def submitted_uri(typed: str | None) -> str:
    """The URI the job logs to; raises AccessError (a TlcoreError) for a visitor's own URI on a shared server."""
    return job_tracking_uri(typed, _remote())


def mlflow_note(snap: dict | None) -> None:
    """Under a finished job: where it was logged, or why not (on a shared server without the server's details)."""
    outcome = (snap or {}).get("mlflow")
    if not outcome:
        return
    if outcome.get("logged"):
        where = "" if _remote() else f" at {outcome.get('uri')}"
        st.caption(f"Logged to MLflow{where}: experiment {outcome.get('experiment_id')}, parent run "
                   f"{outcome.get('run_id')}, {len(outcome.get('models') or [])} model(s).")
    else:
        why = "see the server's log" if _remote() else outcome.get("error", "")
        st.warning(f"Not logged to MLflow ({why}). The results are kept here.")
