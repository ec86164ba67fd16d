"""Runs logged to MLflow, against a real MLflow: a SQLite-backed tracking store, and in a slow test `mlflow server` on
127.0.0.1 over HTTP. A record becomes a parent run with a child run per strategy or sweep cell (params, metrics with
the per-epoch history, tags); each model is a pyfunc that predicts as `tlcore predict` does; an MLflow that cannot be
reached warns once, fails nothing, and the record says it was not logged."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.cli import main
from tlcore.core.results import ComparisonResult, RunResult
from tlcore.core.version import __version__
from tlcore.deploy.tracking import MlflowNotLogged, flatten, job_tracking_uri, log_to_mlflow, redact, tracking_uri
from tlcore.experiments.cells import SweepCell
from tlcore.experiments.sweep import SweepResult
from tlcore.records.store import default_store

ROOT = Path(__file__).resolve().parents[1]
FE = {"head_max_iter": 20}
FAST = {"epochs": 2, "batch_size": 8, "min_steps": 0, "patience": 2}


@pytest.fixture(autouse=True)
def mlflow_env(monkeypatch, tmp_path):
    """No telemetry; MLflow's default ./mlruns or ./mlartifacts, if any, land in the test's folder."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.delenv("TLCORE_MLFLOW_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def mlflow():
    """mlflow is optional (pip install mlflow; in requirements-dev.txt). Importing it takes seconds, so only the
    tests that use it (all marked slow) import it."""
    return pytest.importorskip("mlflow")


def client_at(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


@pytest.fixture(scope="session")
def sqlite_uri(mlflow, tmp_path_factory) -> str:
    """One SQLite tracking store for the session (its schema migrations take seconds: once); each test its own
    experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    client_at(uri).search_experiments()  # creates and migrates the database
    return uri


@pytest.fixture
def experiment(sqlite_uri, tmp_path) -> str:
    """A fresh experiment whose artifacts live in this test's folder."""
    name = f"tlcore-test-{uuid.uuid4().hex[:8]}"
    client_at(sqlite_uri).create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    return name


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_run(strategy: str, kind: str, accuracy: float, epochs: int = 3, seed: int = 0) -> RunResult:
    """A finished run as the runner records one (no model saved for it)."""
    return RunResult(run_id=uuid.uuid4().hex[:12], strategy=strategy, kind=kind, status="completed",
                     backbone="test_resnet", options={"kind": kind, "name": strategy, "epochs": epochs}, seed=seed,
                     image_size=32, accuracy=accuracy, accuracy_low=accuracy - 0.1, accuracy_high=accuracy + 0.05,
                     macro_f1=accuracy - 0.02, per_class_accuracy={"cat": accuracy, "dog": accuracy - 0.04},
                     timings={"train": 1.5, "evaluate": 0.25, "total": 1.75}, train_seconds=1.5,
                     throughput_ips=420.0, trainable_params=1000, total_params=5000, epochs_run=epochs,
                     best_epoch=epochs - 1, best_val_accuracy=0.8, started_at="2025-01-01T00:00:00+00:00",
                     curve=[{"epoch": e, "val_accuracy": 0.5 + 0.1 * e, "train_loss": 1.0 / e, "val_loss": 2.0 / e}
                            for e in range(1, epochs + 1)],
                     dataset={"source": "pets", "fingerprint": "fp0123456789"})


def stored_comparison(runs: list[RunResult]) -> ComparisonResult:
    """A comparison record in the store, with its runs, as compare() leaves one."""
    store = default_store()
    config = ExperimentConfig().to_dict()
    record_id = store.create_record("comparison", config, status="completed")
    for run in runs:
        store.add_run(record_id, run)
    result = ComparisonResult(config=config, dataset={"name": "pets", "fingerprint": "fp0123456789", "classes":
                              ["cat", "dog"]}, runs=runs, record_id=record_id, wall_seconds=4.5)
    store.update_record(record_id, summary={"dataset": result.dataset})
    return result


@contextlib.contextmanager
def tracking_at(uri: str):
    """MLflow's fluent API (mlflow.search_runs, runs:/ URIs) pointed at `uri`, then back."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def runs_of(uri: str, experiment: str, record_id: str):
    """(client, every run of the record, the parent, the children) as mlflow.search_runs finds them."""
    import mlflow

    client = client_at(uri)
    with tracking_at(uri):
        frame = mlflow.search_runs(experiment_names=[experiment],
                                   filter_string=f"tags.`tlcore.record_id` = '{record_id}'")
    parent = frame[frame["tags.mlflow.parentRunId"].isna()]
    children = frame[frame["tags.mlflow.parentRunId"].notna()]
    return client, frame, parent, children


# -- the record as runs ----------------------------------------------------------------------------------------
@pytest.mark.slow  # importing mlflow and migrating a SQLite store take seconds
def test_a_comparison_is_a_parent_run_with_a_child_per_strategy(sqlite_uri, experiment):
    result = stored_comparison([fake_run("feature-extraction", "feature-extraction", 0.8),
                                fake_run("fine-tune", "fine-tune", 0.9)])
    outcome = log_to_mlflow(result, sqlite_uri, experiment=experiment)
    assert outcome.logged and len(outcome.children) == 2, outcome
    client, frame, parent, children = runs_of(sqlite_uri, experiment, result.record_id)
    assert len(parent) == 1 and len(children) == 2
    assert parent["run_id"].iloc[0] == outcome.run_id
    assert set(children["tags.mlflow.parentRunId"]) == {outcome.run_id}
    # tags: the record, the data, the tlcore version
    assert set(frame["tags.tlcore.version"]) == {__version__}
    assert set(frame["tags.tlcore.dataset_fingerprint"]) == {"fp0123456789"}
    # params: the whole config, flattened, on the parent; the strategy's options on each child
    expected = flatten(result.config)
    logged = client.get_run(outcome.run_id).data.params
    assert {k: logged[k] for k in expected} == expected and "backbone.name" in logged
    assert any(k.startswith("strategies.fine-tune.") for k in logged)
    assert client.get_run(outcome.run_id).data.metrics["wall_seconds"] == 4.5
    for run in result.runs:
        child = client.get_run(outcome.children[run.run_id])
        assert child.data.tags["tlcore.run_id"] == run.run_id and child.info.status == "FINISHED"
        assert child.data.params["strategy"] == run.strategy and child.data.params["options.epochs"] == "3"
        metrics = child.data.metrics
        assert metrics["accuracy"] == pytest.approx(run.accuracy) and metrics["macro_f1"] == pytest.approx(
            run.macro_f1)
        assert metrics["throughput_ips"] == 420.0 and metrics["train_seconds"] == 1.5
        assert metrics["time_evaluate"] == 0.25 and metrics["class_accuracy/dog"] == pytest.approx(run.accuracy - .04)
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [(m.step, round(m.value, 6)) for m in sorted(history, key=lambda m: m.step)] == [
            (1, 0.6), (2, 0.7), (3, 0.8)]
        # no saved model for these runs: said on the run and in the outcome, the rest is logged
        assert "No saved model" in child.data.tags["tlcore.model"] and run.run_id in outcome.model_errors
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"comparison.json", "comparison.csv"} <= artifacts
    stored = default_store().record(result.record_id)["summary"]["mlflow"]
    assert stored["logged"] and stored["run_id"] == outcome.run_id and stored["uri"] == sqlite_uri


@pytest.mark.slow
def test_a_sweep_is_a_parent_run_with_a_child_per_cell(sqlite_uri, experiment):
    cells = [SweepCell(s, s, size, seed, float(size), uuid.uuid4().hex[:24],
                       fake_run(s, s, 0.5 + size / 100, seed=seed))
             for s in ("feature-extraction", "scratch") for size in (5, 10) for seed in (0, 1)]
    store = default_store()
    record_id = store.create_record("sweep", {"sizes": [5, 10]}, status="completed")
    result = SweepResult(config={"sizes": [5, 10], "repeats": 2}, dataset={"name": "pets"}, cells=cells,
                         record_id=record_id)
    outcome = log_to_mlflow(result, sqlite_uri, experiment=experiment)
    assert outcome.logged and len(outcome.children) == 8
    # by default only the largest size's cells carry models (none saved here: each says so)
    assert {c.run.run_id for c in cells if c.size == 10} == set(outcome.model_errors)
    client, _, parent, children = runs_of(sqlite_uri, experiment, record_id)
    assert len(parent) == 1 and len(children) == 8
    assert sorted(zip(children["params.size"], children["params.seed"])) == sorted(
        (str(c.size), str(c.seed)) for c in cells)
    assert set(children["tags.mlflow.runName"]) == {c.label for c in cells}
    assert {a.path for a in client.list_artifacts(outcome.run_id)} >= {"sweep.json", "sweep_cells.csv"}


@pytest.mark.slow
def test_unreachable_mlflow_warns_once_and_the_record_says_not_logged(mlflow):
    result = stored_comparison([fake_run("fine-tune", "fine-tune", 0.9)])
    uri = f"http://user:secret@127.0.0.1:{closed_port()}"
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = log_to_mlflow(result, uri)
    took = time.perf_counter() - started
    assert [w.category for w in caught] == [MlflowNotLogged], [str(w.message) for w in caught]
    assert not outcome.logged and outcome.error and took < 15
    assert "secret" not in str(caught[0].message) and "secret" not in outcome.error
    stored = default_store().record(result.record_id)
    assert stored["status"] == "completed" and stored["summary"]["mlflow"]["logged"] is False
    assert stored["summary"]["mlflow"]["uri"] == redact(uri) == uri.replace("user:secret@", "")
    assert stored["summary"]["dataset"]["name"] == "pets"  # the rest of the summary is kept


def test_who_may_choose_the_tracking_uri(monkeypatch):
    monkeypatch.setenv("TLCORE_MLFLOW_URI", "http://mlflow.internal:5000")
    assert tracking_uri() == "http://mlflow.internal:5000" and tracking_uri("") == ""
    # the operator's own localhost dashboard: any URI, or none
    assert job_tracking_uri("sqlite:///x.db", visitors_remote=False) == "sqlite:///x.db"
    # a shared server: the operator's URI, or none; never a visitor's (SSRF, file: writes)
    assert job_tracking_uri(None, visitors_remote=True) == "http://mlflow.internal:5000"
    assert job_tracking_uri("", visitors_remote=True) == ""
    for uri in ("http://169.254.169.254/", "file:///etc", "sqlite:////tmp/x.db"):
        with pytest.raises(Exception, match="operator set TLCORE_MLFLOW_URI"):
            job_tracking_uri(uri, visitors_remote=True)


def test_compare_and_sweep_take_mlflow(capsys):
    for command in ("compare", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--mlflow URI" in capsys.readouterr().out


# -- models: a pyfunc that predicts as `tlcore predict` ----------------------------------------------------------
def _config(folder, weights, strategies) -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=strategies, image_size=32, seed=0)


def _test_files(result) -> list[str]:
    from tlcore.data.load import load_dataset

    pool = load_dataset(result.config["dataset"]["source"]).pools["test"]
    return [str(pool.paths[i]) for i in result.test_indices]


def _same_predictions(pyfunc_model, run_id: str, files: list[str]) -> None:
    from tlcore.deploy.predict import predict

    expected = predict(run_id, files).frame(top_k=3)
    got = pyfunc_model.predict(files)
    assert list(got["image"]) == list(expected["image"]) == files
    assert list(got["class_1"]) == list(expected["class_1"])
    assert np.allclose(got["probability_1"], expected["probability_1"], atol=1e-6)  # the same network and batches
    assert np.allclose(got[["probability_1", "probability_2", "probability_3"]].sum(1), 1, atol=1e-4)


@pytest.mark.slow
def test_logged_models_load_and_predict_like_tlcore_predict(mlflow, image_folder, tiny_weights, sqlite_uri,
                                                            experiment):
    import shutil

    from PIL import Image

    from tlcore import compare
    from tlcore.records.models import models_dir

    # feature extraction (rebuilt as frozen backbone + head) and fine-tuning (a whole timm network, as scratch is)
    result = compare(_config(image_folder, tiny_weights, [make_strategy("feature-extraction", **FE),
                                                          make_strategy("fine-tune", stages=1, **FAST)]))
    assert [r.status for r in result.runs] == ["completed"] * 2
    outcome = log_to_mlflow(result, sqlite_uri, experiment=experiment)
    assert outcome.logged and sorted(outcome.models) == sorted(r.run_id for r in result.runs), outcome
    client = client_at(sqlite_uri)
    files = _test_files(result)
    for run in result.runs:
        child = outcome.children[run.run_id]
        artifacts = {a.path for a in client.list_artifacts(child)}
        assert {"model", "MODEL_CARD.md"} <= artifacts
        card = client.download_artifacts(child, "MODEL_CARD.md")
        assert run.run_id in Path(card).read_text()
        history = client.get_metric_history(child, "val_accuracy")
        assert len(history) == len([p for p in run.curve if p.get("val_accuracy") is not None])
        with tracking_at(sqlite_uri):
            model = mlflow.pyfunc.load_model(f"runs:/{child}/model")
        _same_predictions(model, run.run_id, files)
        # decoded images and base64 give the same answers as their files
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        assert list(model.predict(arrays)["class_1"]) == list(model.predict(files)["class_1"])
        encoded = pd.DataFrame({"image": [base64.b64encode(Path(f).read_bytes()).decode() for f in files]})
        assert list(model.predict(encoded)["class_1"]) == list(model.predict(files)["class_1"])
    # self-contained: the logged model needs neither the run store's model files nor the backbone's weights file
    shutil.rmtree(models_dir())
    fe = result.runs[0]
    with tracking_at(sqlite_uri):
        again = mlflow.pyfunc.load_model(f"runs:/{outcome.children[fe.run_id]}/model")
    assert list(again.predict(files)["class_1"]) == [result.dataset["classes"][p] for p in fe.test_predictions]


@pytest.mark.slow
def test_cli_logs_with_mlflow_or_the_environment_variable(image_folder, tiny_weights, sqlite_uri, experiment,
                                                          monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    args = ["compare", "--dataset", str(image_folder), "--backbone", "test_efficientnet", "--weights",
            str(tiny_weights), "--per-class", "0", "--image-size", "32", "--strategies", "feature-extraction",
            "--preset", "quick", "--no-progress"]
    assert main(args + ["--mlflow", sqlite_uri]) == 0
    printed = capsys.readouterr()
    assert "logged to MLflow at" in printed.out and "1 models" in printed.out, printed
    record = default_store().records(kind="comparison")[0]
    assert record["summary"]["mlflow"]["logged"]
    _, _, parent, children = runs_of(sqlite_uri, experiment, record["id"])
    assert len(parent) == 1 and len(children) == 1 and children["metrics.accuracy"].notna().all()
    # TLCORE_MLFLOW_URI when --mlflow is not given; unreachable: exit code 0, one warning line, record not logged
    # (the same comparison again, not retrained: this is about the command's logging)
    from tlcore.experiments.compare import load_comparison

    monkeypatch.setattr("tlcore.cli.compare", lambda *a, **k: load_comparison(record["id"]))
    monkeypatch.setenv("TLCORE_MLFLOW_URI", f"http://127.0.0.1:{closed_port()}")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("warning: Record") == 1 and "not logged to MLflow" in err
    assert default_store().record(record["id"])["summary"]["mlflow"]["logged"] is False


@pytest.mark.slow
def test_the_python_api_logs_with_its_mlflow_keyword(image_folder, tiny_weights, sqlite_uri, experiment, monkeypatch):
    import tlcore

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    r = tlcore.compare(dataset=str(image_folder), backbone="test_efficientnet", weights=str(tiny_weights),
                       per_class="all", image_size=32, strategies=["feature-extraction"], preset="quick",
                       mlflow=sqlite_uri)
    assert default_store().record(r.record_id)["summary"]["mlflow"]["logged"]
    _, _, parent, children = runs_of(sqlite_uri, experiment, r.record_id)
    assert len(parent) == 1 and len(children) == 1
    assert children["metrics.accuracy"].iloc[0] == pytest.approx(r.runs[0].accuracy)


@pytest.mark.slow
def test_the_job_queue_logs_a_finished_job(image_folder, tiny_weights, sqlite_uri, experiment, monkeypatch,
                                           tmp_path):
    from tlcore.records.store import Store
    from tlcore.server.jobs import JobQueue

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    queue = JobQueue(workers=1, store=Store(tmp_path / "jobs.db"))
    job_id = queue.submit(_config(image_folder, tiny_weights, [make_strategy("feature-extraction", **FE)]),
                          mlflow_uri=sqlite_uri)
    snap = queue.wait(job_id, timeout=120)
    assert snap["status"] == "completed" and snap["mlflow"]["logged"], snap["mlflow"]
    assert queue.store.record(job_id)["summary"]["mlflow"]["run_id"] == snap["mlflow"]["run_id"]
    _, _, parent, children = runs_of(sqlite_uri, experiment, job_id)
    assert len(parent) == 1 and len(children) == 1


# -- a real tracking server ------------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(command: list[str], cwd, log_path, env: dict | None = None, timeout: float = 180):
    """Run an `mlflow ... --port P` command on 127.0.0.1 until it answers /health; yields its URL; stops it and every
    process it started (its own process group) at the end."""
    port = closed_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", *command, "--host", "127.0.0.1", "--port", str(port)],
                                cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, Path(log_path).read_text()[-3000:]
            assert time.time() < deadline, f"mlflow {command[0]} did not answer in {timeout} s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@pytest.fixture
def mlflow_server(mlflow, tmp_path):
    """`mlflow server` on 127.0.0.1 with a SQLite backend and its own artifact store."""
    with serving(["server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination",
                  str(tmp_path / "served"), "--workers", "1"], tmp_path, tmp_path / "server.log") as url:
        yield url


@pytest.mark.slow
def test_logging_to_an_mlflow_server_over_http(mlflow, image_folder, tiny_weights, mlflow_server):
    from tlcore import compare

    result = compare(_config(image_folder, tiny_weights, [make_strategy("feature-extraction", **FE)]))
    outcome = log_to_mlflow(result, mlflow_server)
    assert outcome.logged and outcome.models == [result.runs[0].run_id], outcome
    _, _, parent, children = runs_of(mlflow_server, "tlcore", result.record_id)
    assert len(parent) == 1 and len(children) == 1
    child = children.iloc[0]
    assert child["metrics.accuracy"] == pytest.approx(result.runs[0].accuracy)
    assert child["tags.tlcore.run_id"] == result.runs[0].run_id
    assert child["tags.tlcore.dataset_fingerprint"] == result.runs[0].dataset["fingerprint"]
    with tracking_at(mlflow_server):  # runs:/ URIs resolve through the tracking server's artifact proxy
        model = mlflow.pyfunc.load_model(f"runs:/{outcome.children[result.runs[0].run_id]}/model")
    _same_predictions(model, result.runs[0].run_id, _test_files(result))


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_tlcore_predict(mlflow, image_folder, tiny_weights, sqlite_uri, experiment,
                                                         tmp_path):
    import json

    from tlcore import compare
    from tlcore.deploy.predict import predict

    result = compare(_config(image_folder, tiny_weights, [make_strategy("feature-extraction", **FE)]))
    run = result.runs[0]
    outcome = log_to_mlflow(result, sqlite_uri, experiment=experiment)
    files = _test_files(result)
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [
        [base64.b64encode(Path(f).read_bytes()).decode()] for f in files]}}).encode()
    with serving(["models", "serve", "-m", f"runs:/{outcome.children[run.run_id]}/model", "--env-manager", "local"],
                 tmp_path, tmp_path / "serve.log", env={"MLFLOW_TRACKING_URI": sqlite_uri}) as url:
        request = urllib.request.Request(f"{url}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            served = pd.DataFrame(json.loads(answer.read())["predictions"])
    expected = predict(run.run_id, files).frame(top_k=3)
    assert list(served["class_1"]) == list(expected["class_1"])
    assert np.allclose(served["probability_1"], expected["probability_1"], atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is optional")
def test_the_compare_page_takes_a_typed_uri_only_on_the_operators_own_dashboard(monkeypatch):
    """Localhost: the URI typed (TLCORE_MLFLOW_URI as its default). A shared server: the operator's URI or none,
    and no field to type one into (SSRF, file: writes)."""
    from streamlit.testing.v1 import AppTest

    import ui.tracking
    from tlcore.server.jobs import JobQueue

    submitted = []
    monkeypatch.setattr(JobQueue, "submit", lambda self, config, **how: submitted.append(how) or "0123456789ab")
    monkeypatch.setenv("TLCORE_MLFLOW_URI", "http://mlflow.internal:5000")
    page = str(ROOT / "pages" / "1_Compare.py")

    monkeypatch.setattr(ui.tracking, "_remote", lambda: False)
    at = AppTest.from_file(page, default_timeout=120).run()
    assert at.text_input(key="mlflow_uri").value == "http://mlflow.internal:5000"
    at.text_input(key="mlflow_uri").set_value("sqlite:///mine.db")
    at.button(key="run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert submitted[-1]["mlflow_uri"] == "sqlite:///mine.db"

    monkeypatch.setattr(ui.tracking, "_remote", lambda: True)
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not [w for w in at.text_input if w.key == "mlflow_uri"]
    assert any("its operator set in TLCORE_MLFLOW_URI" in c.value for c in at.caption)
    at.button(key="run").click().run()
    assert submitted[-1]["mlflow_uri"] == "http://mlflow.internal:5000"
    at.checkbox(key="mlflow_on").uncheck()
    at.button(key="run").click().run()
    assert submitted[-1]["mlflow_uri"] == ""
