"""One training slot per machine (issue 15, item 5): runs that share a TLCORE_HOME compute one at a time; the second
waits and says for whom; a cancel ends the wait; the slot is re-entrant in a thread; a dead holder never blocks.
Real processes and a real flock, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tlcore import BackboneSpec, CancelToken, DatasetSpec, ExperimentConfig, compare, make_strategy
from tlcore.core.errors import RunCancelled
from tlcore.records import slot
from tlcore.records.slot import SLOT_NAME, holder, training_slot
from tlcore.records.store import Store
from tlcore.server.jobs import JobQueue

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # real processes contending for a real lock

HOLD = """
import sys, time
from pathlib import Path
from tlcore.records.slot import training_slot

release = Path(sys.argv[1])
with training_slot("held by the test"):
    print("held", flush=True)
    while not release.exists():
        time.sleep(0.05)
print("released", flush=True)
"""


def _env(home: Path) -> dict:
    return {**os.environ, "TLCORE_HOME": str(home), "PYTHONPATH": str(ROOT), "TLCORE_OFFLINE": "1"}


@pytest.fixture
def held(isolated_home, tmp_path):
    """A separate process holding the slot of this test's TLCORE_HOME until `release` exists."""
    release = tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(release)], env=_env(isolated_home), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    yield proc, release
    release.touch()
    proc.wait(timeout=30)


def _config(folder, weights, strategies=None) -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=strategies or [make_strategy("feature-extraction", head_max_iter=20)],
                            image_size=32, seed=0)


def _wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_second_cli_run_waits_and_says_for_whom(held, image_folder, tiny_weights, isolated_home, tmp_path):
    holder_proc, release = held
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        run = subprocess.Popen([sys.executable, "-m", "tlcore", "compare", "--dataset", str(image_folder),
                                "--backbone", "test_efficientnet", "--weights", str(tiny_weights), "--image-size",
                                "32", "--strategies", "feature-extraction", "--per-class", "0", "--no-progress"],
                               env=_env(isolated_home), cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        _wait_for(lambda: "waiting for" in err.read_text() or run.poll() is not None, what="the waiting message")
        said = err.read_text()
        assert "waiting for the run started at " in said and f"by pid {holder_proc.pid} (held by the test" in said
        assert said.rstrip().endswith("to finish...")
        time.sleep(1.0)
        assert run.poll() is None  # still waiting while the slot is held
        released_at = time.time()
        release.touch()
        out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, err.read_text()
    assert "feature-extraction" in out and time.time() >= released_at
    assert err.read_text().count("waiting for") == 1  # said once
    assert holder() is None  # both released: no live holder named


def test_cancel_while_waiting_returns_promptly(held, image_folder, tiny_weights):
    cancel, events = CancelToken(), []
    threading.Timer(0.5, cancel.cancel).start()
    started = time.perf_counter()
    result = compare(_config(image_folder, tiny_weights), callbacks=[events.append], cancel=cancel)
    took = time.perf_counter() - started
    assert result.status == "cancelled" and result.runs[0].status == "cancelled"
    waiting = [e for e in events if e.phase == "waiting"]
    assert len(waiting) == 1 and waiting[0].strategy == SLOT_NAME and "held by the test" in waiting[0].message
    assert not any(e.phase == "epoch" or e.strategy == "feature-extraction" for e in events)  # nothing computed
    # cancelled 0.5 s after the start, noticed within a poll (0.2 s); the rest is preparing the data and model
    assert took < 15, took
    # the bare slot too
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.perf_counter()
    with pytest.raises(RunCancelled):
        with training_slot("second", cancel):
            pass
    assert time.perf_counter() - started < 1.5


def test_dashboard_job_shows_waiting_and_cancels(held, image_folder, tiny_weights, tmp_path):
    queue = JobQueue(workers=1, store=Store(tmp_path / "jobs.db"))
    job = queue.submit(_config(image_folder, tiny_weights))
    _wait_for(lambda: SLOT_NAME in queue.get(job)["progress"], what="the waiting progress")
    snap = queue.get(job)
    event = snap["progress"][SLOT_NAME]
    assert snap["status"] == "running" and event["phase"] == "waiting"
    assert event["message"].startswith("waiting for the run started at ")
    assert queue.cancel(job)
    done = queue.wait(job, timeout=30)
    assert done["status"] == "cancelled"


def test_job_waits_then_runs_when_released(held, image_folder, tiny_weights, tmp_path):
    _, release = held
    queue = JobQueue(workers=1, store=Store(tmp_path / "jobs.db"))
    job = queue.submit(_config(image_folder, tiny_weights))
    _wait_for(lambda: SLOT_NAME in queue.get(job)["progress"], what="the waiting progress")
    release.touch()
    done = queue.wait(job, timeout=120)
    assert done["status"] == "completed" and SLOT_NAME not in done["progress"]  # the slot's bar is gone once taken


def test_reentrant_in_a_thread_exclusive_across_threads(image_folder, tiny_weights):
    with training_slot("outer") as waited:
        assert not waited and slot.held_here()
        with training_slot("inner") as inner_waited:  # a sweep inside a job
            assert not inner_waited
        result = compare(_config(image_folder, tiny_weights))  # takes the slot again, in the same thread
        assert result.status == "completed"
        assert slot.held_here() and holder().what.startswith("outer")
        # another thread of the same process waits like another process, and says so
        said, entered = [], threading.Event()

        def other():
            with training_slot("other thread", on_wait=said.append):
                entered.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert not entered.wait(1.0)
        assert said and f"by pid {os.getpid()} (outer" in said[0]
    thread.join(10)
    assert entered.is_set() and not slot.held_here()


def test_a_killed_holder_never_blocks(isolated_home, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "never")], env=_env(isolated_home), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert (isolated_home / slot.SIDECAR_NAME).exists()  # its sidecar is left behind...
    assert holder() is None  # ...naming a dead pid: ignored
    said = []
    started = time.perf_counter()
    with training_slot("next", on_wait=said.append) as waited:  # the OS released its flock
        assert not waited and holder().pid == os.getpid()
    assert time.perf_counter() - started < 1.0 and not said
