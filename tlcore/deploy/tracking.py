"""Comparisons and sweeps logged to MLflow, for teams that already track their experiments there. A finished record
becomes one parent run with a child run per strategy (comparison) or per cell (sweep):

    params    the config, flattened (dataset.source, backbone.name, strategies.fine-tune.epochs, ...); children the
              strategy's options, seed and image size, and for a sweep cell its size
    metrics   accuracy (with its 95% interval), macro-F1, train seconds and the seconds of each phase, inference
              images/s, parameters, peak memory; val accuracy, val loss and train loss per epoch as histories
    artifacts the record as JSON and CSV on the parent; on each child with a saved model, `model/` (an MLflow pyfunc,
              tlcore.deploy.pyfunc, that `mlflow models serve` serves) and its MODEL_CARD.md
    tags      tlcore.record_id, tlcore.dataset_fingerprint, tlcore.version (children also tlcore.run_id)

The front ends call `log_to_mlflow` after a run, never the experiments themselves: the run store stays the record and
MLflow a copy. MLflow that cannot be reached never fails the run: one warning, and the record's summary says
`mlflow: {"logged": false, "error": ...}` (else `{"logged": true, "run_id": ...}`). mlflow is optional
(`pip install mlflow`) and imported only here, when a URI is given."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tlcore.core.errors import AccessError, ConfigError, TlcoreError
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.core.version import __version__
from tlcore.deploy.export import export_model
from tlcore.experiments.config import size_label
from tlcore.experiments.sweep import SweepResult
from tlcore.records.store import Store, default_store

URI_ENV = "TLCORE_MLFLOW_URI"  # the default tracking URI of every front end; unset or empty: nothing is logged
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"  # MLflow's own variable names the experiment, as in mlflow itself
DEFAULT_EXPERIMENT = "tlcore"
MODELS = ("all", "largest", "none")  # which children carry their model: every one, a sweep's largest size, none
# An unreachable server answers within seconds instead of after MLflow's default 7 retries of up to 120 s each;
# a variable the user set is kept.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
# What the pyfunc imports (tlcore.deploy.pyfunc through tlcore): pinned to this environment's versions, so serving
# rebuilds the environment the model was checked in.
SERVING_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "scipy", "pillow",
                    "safetensors", "cachetools", "psutil", "tqdm")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value
ERROR_CHARS = 400
_KEY = re.compile(r"[^\w./\- ]")
_LOCK = threading.Lock()  # one logging at a time: the HTTP limits are process environment variables


class MlflowNotLogged(UserWarning):
    """The record was kept, but MLflow could not be reached (or mlflow is not installed)."""


@dataclass
class MlflowLog:
    """Whether and where a record went to MLflow; stored in the record's summary under `mlflow`."""

    logged: bool
    uri: str  # without credentials
    experiment_id: str = ""
    run_id: str = ""  # the parent run
    children: dict[str, str] = field(default_factory=dict)  # tlcore run id -> MLflow run id
    models: list[str] = field(default_factory=list)  # tlcore run ids whose model was logged
    model_errors: dict[str, str] = field(default_factory=dict)  # tlcore run id -> why its model was not logged
    error: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def tracking_uri(given: str | None = None) -> str:
    """The URI to log to: `given` ('' turns logging off), else TLCORE_MLFLOW_URI, else '' (nothing is logged)."""
    return (os.environ.get(URI_ENV, "") if given is None else given).strip()


def job_tracking_uri(requested: str | None, visitors_remote: bool) -> str:
    """Where a dashboard job logs ('' nowhere). A visitor-typed URI reaches the network from the server (SSRF) or
    writes files wherever the server may write (file:, sqlite:), so it is taken only when the server is its
    operator's own: writable, on localhost, asking no token (tlcore.server.incidents.visitors_are_remote is False).
    Otherwise jobs log to TLCORE_MLFLOW_URI, which only the operator sets, or, if the visitor turns it off, nowhere."""
    configured = tracking_uri()
    if requested is None:
        return configured
    requested = requested.strip()
    if not visitors_remote or requested in ("", configured):
        return requested
    raise AccessError(f"This server logs to MLflow only where its operator set {URI_ENV}; a visitor cannot choose "
                      "another tracking URI.")


def require_mlflow() -> None:
    """Refuse a run that asks for MLflow when mlflow is not installed, before it trains."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("Logging to MLflow needs the mlflow package: pip install mlflow (or the tlcore[mlflow] "
                          "extra), or leave out --mlflow / TLCORE_MLFLOW_URI.")


def requested_uri(given: str | None = None) -> str:
    """`tracking_uri(given)`, checked before a run starts: asking for MLflow without mlflow installed is a
    ConfigError then, not a warning after an hour of training."""
    uri = tracking_uri(given)
    if uri:
        require_mlflow()
    return uri


def redact(uri: str) -> str:
    """The URI without a user name or password, as records, messages and logs show it."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


# -- what goes to MLflow ---------------------------------------------------------------------------------------
def _key(name: str) -> str:
    return _KEY.sub("_", str(name))[:250]


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_CHARS]


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A config as MLflow params: nested keys joined by dots, a list of dicts keyed by each one's name (strategies),
    other values as JSON text."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}.{v.get('name') or v.get('kind') or i}"))
        return out
    return {_key(prefix): _text(value)} if prefix else {}


SCALARS = ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "train_seconds", "throughput_ips",
           "trainable_params", "total_params", "peak_memory_mb", "epochs_run", "best_epoch", "best_val_accuracy",
           "test_images")
HISTORIES = ("val_accuracy", "val_loss", "train_loss")  # per epoch of the run's curve


def run_metrics(run: RunResult, timestamp: int) -> list:
    """A run's measurements as MLflow metrics: scalars at step 0, the curve at step = epoch."""
    from mlflow.entities import Metric

    values = {name: getattr(run, name) for name in SCALARS}
    values["shared_seconds"] = run.shared_seconds()
    values.update({f"time_{phase}": seconds for phase, seconds in run.timings.items()})
    values.update({f"class_accuracy/{c}": a for c, a in (run.per_class_accuracy or {}).items()})
    metrics = [Metric(_key(k), float(v), timestamp, 0) for k, v in values.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for point in run.curve:
        for name in HISTORIES:
            if point.get(name) is not None:
                metrics.append(Metric(name, float(point[name]), timestamp, int(point.get("epoch", 0))))
    return metrics


@dataclass
class _Child:
    """One child run to log: a strategy of a comparison, or a cell of a sweep."""

    name: str
    run: RunResult
    params: dict[str, str]
    with_model: bool


def _children(result: ComparisonResult | SweepResult, models: str) -> list[_Child]:
    if isinstance(result, ComparisonResult):
        return [_Child(r.strategy, r, {}, models != "none") for r in result.runs]
    largest = max((c.size or float("inf") for c in result.cells), default=None)
    return [_Child(c.label, c.run, {"size": size_label(c.size), "seed": str(c.seed),
                                    "images_per_class": str(c.images_per_class),
                                    "resumed": str(c.resumed), "cell_key": c.key},
                   models == "all" or (models == "largest" and (c.size or float("inf")) == largest))
            for c in result.cells]


def _child_params(child: _Child) -> dict[str, str]:
    run = child.run
    params = {"strategy": run.strategy, "kind": run.kind, "backbone": run.backbone, "seed": str(run.seed),
              "image_size": str(run.image_size), "device": run.device, "precision": run.precision,
              "weights.source": str(run.weights.get("source", "")), "dataset.source": str(run.dataset.get("source"))}
    params.update(flatten(run.options, "options"))
    return params | child.params


def _status(status: str) -> str:
    return {"completed": "FINISHED", "cancelled": "KILLED", "interrupted": "KILLED"}.get(status, "FAILED")


def _millis(iso: str, fallback: float) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(fallback * 1000)


def serving_requirements() -> list[str]:
    import mlflow

    pins = []
    for name in SERVING_PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins + [f"mlflow=={mlflow.__version__}"]


def _code_copy(folder: Path) -> Path:
    """tlcore's code without its bundled data, shipped with each model so that serving needs no tlcore install."""
    target = folder / "tlcore"
    if not target.exists():
        shutil.copytree(Path(__file__).resolve().parents[1], target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "assets"))
    return target


def _model_folder(run: RunResult, store: Store, work: Path) -> Path:
    """The run's network saved as a pyfunc in a local folder, its card inside the export. Raises TlcoreError when
    the run has no saved model."""
    import mlflow.pyfunc

    from tlcore.deploy import pyfunc

    export, saved = work / run.run_id / "export", work / run.run_id / "model"
    export_model(run.run_id, "safetensors", export, store=store)
    mlflow.pyfunc.save_model(str(saved), python_model=pyfunc.__file__, artifacts={pyfunc.ARTIFACT: str(export)},
                             code_paths=[str(_code_copy(work / "code"))], pip_requirements=serving_requirements(),
                             metadata={"tlcore_run_id": run.run_id, "tlcore_version": __version__})
    return saved


def _experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by another process: take that one
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextlib.contextmanager
def _http_limits() -> Iterator[None]:
    added = {k: v for k, v in HTTP_LIMITS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _fingerprint(result: ComparisonResult | SweepResult) -> str:
    runs = result.runs if isinstance(result, ComparisonResult) else [c.run for c in result.cells]
    return str(result.dataset.get("fingerprint") or next((r.dataset.get("fingerprint") for r in runs
                                                          if r.dataset.get("fingerprint")), ""))


def _log(client, result: ComparisonResult | SweepResult, outcome: MlflowLog, experiment: str, models: str,
         store: Store, work: Path) -> None:
    from mlflow.entities import Metric, Param

    kind = "comparison" if isinstance(result, ComparisonResult) else "sweep"
    now = time.time()
    tags = {"tlcore.record_id": result.record_id, "tlcore.kind": kind, "tlcore.version": __version__,
            "tlcore.dataset_fingerprint": _fingerprint(result), "tlcore.status": result.status,
            "mlflow.source.name": "tlcore", "mlflow.source.type": "LOCAL"}
    outcome.experiment_id = _experiment(client, experiment)
    dataset = str(result.dataset.get("name") or "").split("/")[-1]
    parent = client.create_run(outcome.experiment_id, start_time=int((now - result.wall_seconds) * 1000), tags=tags,
                               run_name=f"{kind} {result.record_id} · {dataset}")
    outcome.run_id = parent.info.run_id
    params = flatten(result.config) | {f"data.{k}": _text(v) for k, v in result.dataset.items()
                                       if isinstance(v, (str, int, float)) and k != "fingerprint"}
    stamp = int(now * 1000)
    client.log_batch(outcome.run_id, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric("wall_seconds", float(result.wall_seconds), stamp, 0)])
    for path in result.save(work / "record", stem=kind):  # the record as JSON and CSV
        client.log_artifact(outcome.run_id, str(path))
    try:
        for child in _children(result, models):
            _log_child(client, child, outcome, tags, store, work, now)
    except Exception:
        with contextlib.suppress(Exception):  # best effort: the server may be the reason
            client.set_terminated(outcome.run_id, "FAILED")
        raise
    client.set_terminated(outcome.run_id, _status(result.status))


def _log_child(client, child: _Child, outcome: MlflowLog, tags: dict, store: Store, work: Path, now: float) -> None:
    from mlflow.entities import Param

    run, stamp = child.run, int(now * 1000)
    start = _millis(run.started_at, now)
    mlflow_run = client.create_run(outcome.experiment_id, start_time=start, run_name=child.name, tags={
        **tags, "mlflow.parentRunId": outcome.run_id, "tlcore.run_id": run.run_id, "tlcore.strategy": run.strategy,
        "tlcore.status": run.status,
        "tlcore.dataset_fingerprint": str(run.dataset.get("fingerprint") or tags["tlcore.dataset_fingerprint"])})
    child_id = mlflow_run.info.run_id
    outcome.children[run.run_id] = child_id
    client.log_batch(child_id, params=[Param(k, v) for k, v in _child_params(child).items()],
                     metrics=run_metrics(run, stamp))
    if run.error:
        client.set_tag(child_id, "tlcore.error", run.error[:5000])
    if child.with_model and run.status == "completed":
        try:
            folder = _model_folder(run, store, work)
        except Exception as exc:  # noqa: BLE001  no saved model (removed by the models quota, say): the rest is logged
            outcome.model_errors[run.run_id] = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
            client.set_tag(child_id, "tlcore.model", f"not logged: {outcome.model_errors[run.run_id]}")
        else:
            client.log_artifacts(child_id, str(folder), "model")
            card = work / run.run_id / "export" / "MODEL_CARD.md"
            if card.exists():
                client.log_artifact(child_id, str(card))
            outcome.models.append(run.run_id)
    client.set_terminated(child_id, _status(run.status),
                          end_time=start + int(1000 * float(run.timings.get("total") or 0.0)))


def log_to_mlflow(result: ComparisonResult | SweepResult, uri: str, experiment: str | None = None,
                  models: str | None = None, store: Store | None = None) -> MlflowLog:
    """Log a finished comparison or sweep to the MLflow tracking server or store at `uri` (http(s)://, sqlite:///,
    file:, databricks, ...) under `experiment` (default: MLFLOW_EXPERIMENT_NAME, else 'tlcore'). `models`: 'all'
    (a comparison's default), 'largest' (a sweep's default: the cells of its largest size) or 'none'. Never raises
    for MLflow's sake: failing, it warns once (MlflowNotLogged) and returns `logged=False` with the reason. Either
    way the outcome is stored in the record's summary under `mlflow`."""
    if models is None:
        models = "all" if isinstance(result, ComparisonResult) else "largest"
    if models not in MODELS:
        raise ConfigError(f"models={models!r}; choose from {', '.join(MODELS)}.")
    if not uri.strip():  # MLflow would fall back to its own default store (./mlruns, ./mlflow.db)
        raise ConfigError("No MLflow tracking URI given; pass one, or leave MLflow out.")
    uri = uri.strip()
    store = store or default_store()
    outcome, began = MlflowLog(logged=False, uri=redact(uri)), time.perf_counter()
    try:
        from mlflow.tracking import MlflowClient

        with _LOCK, _http_limits(), tempfile.TemporaryDirectory(prefix="tlcore-mlflow-") as work:
            _log(MlflowClient(tracking_uri=uri), result, outcome, experiment or os.environ.get(EXPERIMENT_ENV) or
                 DEFAULT_EXPERIMENT, models, store, Path(work))
        outcome.logged = True
    except Exception as exc:  # noqa: BLE001  MLflow down, refusing, misconfigured, or absent: the run stands
        reason = " ".join(str(exc).replace(uri, outcome.uri).split()) or type(exc).__name__
        outcome.error = f"{type(exc).__name__}: {reason}"[:ERROR_CHARS]
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "mlflow":
            outcome.error = "the mlflow package is not installed (pip install mlflow)"
        warnings.warn(f"Record {result.record_id} was not logged to MLflow at {outcome.uri}: {outcome.error}. It is "
                      "kept in tlcore's store; log it again with tlcore.deploy.tracking.log_to_mlflow.",
                      MlflowNotLogged, stacklevel=2)
    outcome.seconds = round(time.perf_counter() - began, 3)
    _note(store, result.record_id, outcome)
    return outcome


def _note(store: Store, record_id: str, outcome: MlflowLog) -> None:
    """Say in the record's summary whether it went to MLflow (a record not in this store is left alone)."""
    if not record_id:
        return
    try:
        record = store.record(record_id)
        if record is not None:
            store.update_record(record_id, summary={**(record["summary"] or {}), "mlflow": outcome.to_dict()})
    except TlcoreError as exc:
        warnings.warn(f"Record {record_id}: could not note the MLflow outcome in the store ({exc}).", MlflowNotLogged,
                      stacklevel=3)


def stored_log(record: dict) -> dict | None:
    """What a stored record says about MLflow, or None if it was never sent there."""
    return ((record or {}).get("summary") or {}).get("mlflow")
