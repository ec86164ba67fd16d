"""Issue 27: memory flat in dataset size. Decoded images beyond the in-memory budget live on disk and are read back
a batch at a time (tlcore.data.decoded); frozen features are written in parts as they are computed
(tlcore.engine.features.FeatureCache); a run killed part way resumes from what was written, and nothing half written
is read back. The streamed path gives the very numbers of the in-memory one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.data.decoded import DecodedStore, LazyImages
from tlcore.engine import features as features_module
from tlcore.engine.features import FeatureCache
from tlcore.experiments import prepare as prepare_module
from tlcore.experiments.compare import compare
from tlcore.experiments.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]


def _fake_decode(indices: np.ndarray) -> np.ndarray:
    return np.stack([np.full((3, 4, 4), i % 251, dtype=np.uint8) for i in indices])


def test_a_row_is_read_back_only_once_it_was_written_whole(tmp_path):
    calls = []

    def failing(indices):
        calls.append(len(indices))
        if len(calls) == 2:
            raise OSError("killed while decoding")
        return _fake_decode(indices)

    from tlcore.data import decoded
    store = DecodedStore(tmp_path / "s", 1000, (3, 4, 4), failing)
    with pytest.raises(OSError):
        store.ensure(np.arange(decoded.DECODE_BATCH + 10))
    done = store.done()
    assert done[:decoded.DECODE_BATCH].all() and not done[decoded.DECODE_BATCH:].any()
    # pixels written without their mark (a kill between the two writes) are decoded again, not trusted
    os.pwrite(os.open(store.pixels_path, os.O_RDWR), b"\xff" * 48, 300 * 48)
    again = DecodedStore(tmp_path / "s", 1000, (3, 4, 4), _fake_decode)
    assert again.ensure(np.arange(290, 310)) == 20 - 0  # rows 290..309: none was complete (batch 1 ended at 256)
    assert torch.equal(again.read(np.array([300, 5])), torch.from_numpy(_fake_decode(np.array([300, 5]))))
    assert again.ensure(np.arange(0, 20)) == 0  # the first batch stays done: not decoded twice


def test_lazy_images_index_like_the_stacked_tensor(tmp_path):
    store = DecodedStore(tmp_path / "s", 50, (3, 4, 4), _fake_decode)
    indices = np.array([7, 3, 40, 11, 3])
    lazy, stacked = LazyImages(store, indices), torch.from_numpy(_fake_decode(indices))
    assert lazy.shape == stacked.shape and len(lazy) == 5
    for idx in (slice(1, 4), torch.tensor([4, 0]), np.array([True, False, True, False, True]), [2]):
        assert torch.equal(lazy[idx], stacked[idx])
    assert torch.equal(lazy[2], stacked[2])
    assert store.done().sum() == 4  # decoded once each, only the rows asked for


def test_feature_parts_survive_a_new_process_and_a_torn_part_is_a_miss(tmp_path):
    computed = []

    def compute(missing, done, total):
        computed.append((len(missing), done, total))
        return torch.as_tensor(missing, dtype=torch.float32).view(-1, 1).repeat(1, 3)

    cache = FeatureCache(tmp_path / "c")
    out = cache.get_or_compute("k", np.arange(10), compute, chunk_rows=4)
    assert computed == [(4, 0, 10), (4, 4, 10), (2, 8, 10)] and torch.equal(out[:, 0], torch.arange(10.0))
    parts = sorted((tmp_path / "c" / "k").glob("part-*.pt"))
    assert len(parts) == 3
    parts[-1].write_bytes(parts[-1].read_bytes()[:40])  # a torn part: its rows are computed again
    (tmp_path / "c" / "k" / ".tmp-part-x.pt").write_bytes(b"half")  # never a part
    fresh, computed[:] = FeatureCache(tmp_path / "c", memory_bytes=0), []
    out = fresh.get_or_compute("k", np.array([9, 0, 5, 12]), compute, chunk_rows=4)
    assert computed == [(2, 0, 2)]  # 9 (its part torn) and 12 (new); 0 and 5 read back from disk
    assert torch.equal(out[:, 0], torch.tensor([9.0, 0, 5, 12]))
    assert fresh._held == 0  # nothing kept in memory beyond its budget


@pytest.mark.slow
def test_streamed_images_give_the_numbers_of_in_memory_ones(tmp_path, tiny_weights, monkeypatch, one_thread):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=10)
    config = ExperimentConfig(dataset=DatasetSpec(str(folder), val_fraction=0.3),
                              backbone=BackboneSpec("test_efficientnet", str(tiny_weights)),
                              strategies=[make_strategy("feature-extraction"),
                                          make_strategy("fine-tune", epochs=2, batch_size=8),
                                          make_strategy("scratch", epochs=2, batch_size=8)],
                              image_size=32, seed=0)
    in_memory = compare(config, cache=FeatureCache(tmp_path / "a"))
    monkeypatch.setattr(prepare_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(features_module, "ROWS_IN_MEMORY_BYTES", 0)  # fine-tune's frozen-prefix rows on disk too
    prepared = prepare(config)
    assert prepared.streams("train", np.arange(3))
    streamed = compare(config, cache=FeatureCache(tmp_path / "b"))
    for a, b in zip(in_memory.runs, streamed.runs):
        assert a.status == b.status == "completed", (a.error, b.error)
        assert (a.strategy, a.accuracy, a.test_predictions) == (b.strategy, b.accuracy, b.test_predictions)
        timeless = [[{k: v for k, v in e.items() if k != "seconds"} for e in r.curve] for r in (a, b)]
        assert timeless[0] == timeless[1]
    assert list((Path(os.environ["TLCORE_HOME"]) / "cache" / "decoded").glob("*.done"))
    rows = Path(os.environ["TLCORE_HOME"]) / "cache" / "rows"  # the folder is one pool: its splits share a file
    assert sum(int(np.fromfile(done, dtype=np.uint8).sum()) for done in rows.glob("*.done")) == 30  # every image
    assert "max_logit_diff_full_vs_cached" in streamed.runs[1].extra  # fine-tune did train on its prefix's rows


CHILD = """
import sys, time
import tlcore.engine.features as features
real = features.extract_features
def slow(*args, **kwargs):
    out = real(*args, **kwargs)
    time.sleep(0.4)
    return out
features.extract_features = slow
from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.experiments.compare import compare
config = ExperimentConfig(dataset=DatasetSpec(sys.argv[1], val_fraction=0.25),
                          backbone=BackboneSpec("test_efficientnet", sys.argv[2]),
                          strategies=[make_strategy("feature-extraction")], image_size=32, seed=0)
cache = features.FeatureCache()
run = compare(config, cache=cache).runs[0]
print("ROWS", cache.stats.rows_computed, run.accuracy, flush=True)
"""


@pytest.mark.slow
def test_a_run_killed_during_extraction_resumes_from_the_parts_written(tmp_path, tiny_weights, isolated_home):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=12)
    env = {**os.environ, "TLCORE_FEATURE_CHUNK": "4", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", CHILD, str(folder), str(tiny_weights)]
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    features = isolated_home / "cache" / "features"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(features.glob("*/part-*.pt"))) < 2:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    kept = list(features.glob("*/part-*.pt"))
    kept_rows = sum(len(torch.load(p, weights_only=True)["indices"]) for p in kept)
    assert 2 <= len(kept) and 0 < kept_rows < 36, kept_rows
    resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows, accuracy = resumed.stdout.split("ROWS ")[1].split()[:2]
    env_fresh = {**env, "TLCORE_HOME": str(tmp_path / "fresh_home")}
    fresh = subprocess.run(args, env=env_fresh, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    fresh_rows, fresh_accuracy = fresh.stdout.split("ROWS ")[1].split()[:2]
    assert int(rows) == int(fresh_rows) - kept_rows  # only what the kill lost was computed again
    assert accuracy == fresh_accuracy  # and the resumed features are the same numbers
