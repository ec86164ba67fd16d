"""What a visitor of a shared dashboard may do, enforced in tlcore whoever calls it: a read-only demo reads no server
path and computes nothing; a writable server reads folders and weights only under the data roots (through '..' and
symbolic links too); the job queue is capped; a server beyond localhost asks for a token. Hostile input is real:
real folders, real links, real files outside the roots."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from tlcore import build_config, compare
from tlcore.core.errors import AccessError, ReadOnlyError
from tlcore.data.card import dataset_card
from tlcore.data.load import load_dataset
from tlcore.engine.backbone import BackboneSpec, load_template
from tlcore.experiments.prepare import prepare
from tlcore.records.store import Store
from tlcore.server import access
from tlcore.server.jobs import JobQueue
from tlcore.views.text import dataset_display

FAST = {"epochs": 1, "batch_size": 8, "min_steps": 0}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """A server whose only data root is tmp/root, serving visitors; tmp/outside holds data it must never read."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(root))
    monkeypatch.setenv("TLCORE_SERVING", "1")
    return root, outside


def _config(folder, weights, **kw):
    return build_config("quick", dataset=str(folder), backbone="test_efficientnet", weights=str(weights),
                        per_class="all", image_size=32, strategies=["feature-extraction", "scratch"],
                        strategy_options={"scratch": FAST}, **kw)


# ------------------------------------------------------------------------------------------------------ read-only
def test_read_only_reads_no_folder_and_computes_nothing(image_folder, tiny_weights, monkeypatch):
    config = _config(image_folder, tiny_weights)
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    for attempt in (lambda: load_dataset(str(image_folder)), lambda: dataset_card(str(image_folder)),
                    lambda: prepare(config), lambda: compare(config, store=None)):
        with pytest.raises(ReadOnlyError, match="read-only"):
            attempt()
    etc = "/etc"
    with pytest.raises(ReadOnlyError):
        dataset_card(etc)  # the operating system's configuration folder: not listed, not read
    with pytest.raises(ReadOnlyError):
        prepare(build_config("quick", dataset="digits"))  # built-in data: still nothing is computed
    assert load_dataset("digits").num_classes == 10  # browsing a stored run's built-in test images stays possible


# ------------------------------------------------------------------------------------------------------ data roots
def test_a_folder_outside_the_roots_is_refused_naming_the_roots(roots, image_folder):
    root, _ = roots
    for hostile in (str(image_folder), "/etc", "/no/such/folder", str(root / ".." / "outside")):
        with pytest.raises(AccessError) as err:
            load_dataset(hostile)
        assert str(root) in str(err.value) and "TLCORE_DATA_ROOTS" in str(err.value)
        assert "does not exist" not in str(err.value)  # no probing of what exists outside


def test_a_link_out_of_the_roots_is_refused_and_linked_files_are_skipped(roots, image_folder):
    root, outside = roots
    shutil.copytree(image_folder, outside / "data")
    (root / "escape").symlink_to(outside / "data", target_is_directory=True)
    with pytest.raises(AccessError):
        load_dataset(str(root / "escape"))
    inside = root / "photos"
    shutil.copytree(image_folder, inside)
    secret = outside / "secret.png"
    shutil.copy(next((image_folder / "class_0").iterdir()), secret)
    (inside / "class_1" / "leak.png").symlink_to(secret)
    ds = load_dataset(str(inside))
    assert any("leak.png" in p.path and "outside the data roots" in p.reason for p in ds.problems)
    assert not any(str(path).endswith("leak.png") for pool in ds.pools.values() for path in getattr(pool, "paths", []))


def test_weights_file_outside_the_roots_is_refused(roots, tiny_weights):
    with pytest.raises(AccessError, match="weights file"):
        load_template(BackboneSpec("test_efficientnet", str(tiny_weights)))


def test_the_cli_is_not_limited(image_folder, tiny_weights, monkeypatch):
    monkeypatch.setenv("TLCORE_DATA_ROOTS", "/nonexistent-root")
    monkeypatch.delenv("TLCORE_SERVING", raising=False)  # a script or the CLI: the user's own shell
    assert load_dataset(str(image_folder)).num_classes == 3


def test_the_queue_refuses_a_path_at_submission(roots, image_folder, tiny_weights, tmp_path):
    queue = JobQueue(store=Store(tmp_path / "q.db"))
    with pytest.raises(AccessError, match="outside the folders"):
        queue.submit(_config(image_folder, tiny_weights))
    assert Store(tmp_path / "q.db").records() == []  # nothing stored for a refused job


# ------------------------------------------------------------------------------------------------------ job queue
def test_job_queue_is_capped_per_session_and_per_server(image_folder, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TLCORE_MAX_JOBS", "4")
    queue = JobQueue(store=Store(tmp_path / "q.db"))
    slow = build_config("quick", dataset=str(image_folder), backbone="test_efficientnet",
                        weights=str(tiny_weights), per_class="all", image_size=32, strategies=["scratch"],
                        strategy_options={"scratch": {"epochs": 300, "batch_size": 4, "min_steps": 0}})
    mine = [queue.submit(slow, session="tab-a") for _ in range(3)]
    with pytest.raises(AccessError, match="at most 3"):
        queue.submit(slow, session="tab-a")
    queue.submit(slow, session="tab-b")
    with pytest.raises(AccessError, match="queue is full"):
        queue.submit(slow, session="tab-c")
    assert len(queue.active()) == 4
    for job_id in [j["id"] for j in queue.active()]:
        queue.cancel(job_id)
    assert mine


# ------------------------------------------------------------------------------------------------------ token
def test_token_is_required_beyond_localhost_only_on_a_writable_server(monkeypatch):
    assert not access.token_required("127.0.0.1") and not access.token_required("localhost")
    assert access.token_required("0.0.0.0") and access.token_required(None) and access.token_required("10.1.2.3")
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    assert not access.token_required("0.0.0.0")  # the read-only demo needs none


def test_generated_token_is_private_stable_and_checked(isolated_home, monkeypatch):
    monkeypatch.delenv("TLCORE_TOKEN", raising=False)
    token = access.server_token()
    path = isolated_home / access.TOKEN_FILE
    assert len(token) >= 24 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert access.server_token() == token  # kept across restarts
    other = token[:-1] + ("y" if token.endswith("x") else "x")  # one character off (a token may end in x)
    assert access.token_matches(token) and not access.token_matches(other) and not access.token_matches("")
    assert f"?token={token}" in access.access_link("0.0.0.0", 8501)
    monkeypatch.setenv("TLCORE_TOKEN", "team-secret")
    assert access.token_matches("team-secret") and not access.token_matches(token)


# ------------------------------------------------------------------------------------------------------ display
def test_shared_pages_name_datasets_without_server_paths(roots, tmp_path):
    root, outside = roots
    assert dataset_display(str(root / "photos" / "flowers")) == "photos/flowers"
    assert dataset_display(str(outside / "mine")) == "mine"
    assert dataset_display(str(root / "photos") + "[a,b]") == "photos[a,b]"
    assert dataset_display("fashion-mnist") == "fashion-mnist"
