"""Background jobs: one at a time, in order, separate results per job, cancellation of queued and running jobs."""

from __future__ import annotations

from dataclasses import replace

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.server.jobs import JobQueue
from tlcore.records.store import Store


def _config(folder, weights, **kw):
    return ExperimentConfig(dataset=DatasetSpec(str(folder)), backbone=BackboneSpec("test_efficientnet", str(weights)),
                            strategies=[make_strategy("feature-extraction", head_max_iter=20),
                                        make_strategy("scratch", epochs=1, batch_size=8, min_steps=0)],
                            image_size=32, **kw)


def test_two_jobs_run_one_at_a_time_and_keep_their_own_results(image_folder, tiny_weights, tmp_path):
    queue = JobQueue(workers=1, store=Store(tmp_path / "jobs.db"))
    first = queue.submit(_config(image_folder, tiny_weights, seed=1))
    second = queue.submit(_config(image_folder, tiny_weights, seed=2))
    active = queue.active()
    assert [j["id"] for j in active] == [first, second]
    assert sum(j["status"] == "running" for j in active) <= 1
    a, b = queue.wait(first), queue.wait(second)
    assert a["status"] == b["status"] == "completed"
    assert a["result"].config["seed"] == 1 and b["result"].config["seed"] == 2
    assert a["started"] <= a["finished"] <= b["started"]  # never two at once
    assert [r.strategy for r in a["runs"]] == ["feature-extraction", "scratch"]
    assert a["progress"]["scratch"]["phase"] == "done"


def test_cancel_queued_and_running_jobs(image_folder, tiny_weights, tmp_path):
    queue = JobQueue(workers=1, store=Store(tmp_path / "jobs.db"))
    slow = replace(_config(image_folder, tiny_weights),
                   strategies=[make_strategy("scratch", epochs=200, batch_size=4, min_steps=0)])
    running = queue.submit(slow)
    waiting = queue.submit(_config(image_folder, tiny_weights))
    assert queue.cancel(waiting)
    assert queue.get(waiting)["status"] == "cancelled"
    import time

    deadline = time.time() + 60
    while queue.get(running)["status"] != "running" or not queue.get(running)["progress"]:
        assert time.time() < deadline
        time.sleep(0.05)
    assert queue.cancel(running)
    done = queue.wait(running, timeout=60)
    assert done["status"] == "cancelled" and done["result"].runs[0].status == "cancelled"


def test_finished_jobs_survive_a_new_queue(image_folder, tiny_weights, tmp_path):
    store = Store(tmp_path / "jobs.db")
    queue = JobQueue(workers=1, store=store)
    job_id = queue.submit(_config(image_folder, tiny_weights))
    live = queue.wait(job_id)
    assert live["status"] == "completed"
    reloaded = JobQueue(workers=1, store=store).get(job_id)  # as after a server restart
    assert reloaded["status"] == "completed" and reloaded["kind"] == "comparison"
    assert [r.to_dict() for r in reloaded["result"].runs] == [r.to_dict() for r in live["result"].runs]
    assert reloaded["result"].config == live["result"].config


def test_two_sessions_submitting_at_once_both_complete_queued(image_folder, tiny_weights, tmp_path):
    import threading

    store = Store(tmp_path / "jobs.db")
    queue = JobQueue(workers=1, store=store)
    ids = []
    sessions = [threading.Thread(target=lambda s=seed: ids.append(queue.submit(_config(image_folder, tiny_weights,
                                                                                       seed=s)))) for seed in (3, 4)]
    for t in sessions:
        t.start()
    for t in sessions:
        t.join()
    done = [queue.wait(i) for i in ids]
    assert [d["status"] for d in done] == ["completed", "completed"]
    first, second = sorted(done, key=lambda d: d["started"])
    assert first["finished"] <= second["started"]  # queued, never two at once
    records = {r["id"]: r for r in store.records()}
    assert all(records[i]["status"] == "completed" and records[i]["runs_count"] == 2 for i in ids)
