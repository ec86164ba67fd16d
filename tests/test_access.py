"""What a visitor of a shared dashboard may do, enforced in tlcore whoever calls it: a read-only demo reads no server
path and computes nothing; a writable server reads folders and weights only under the data roots (through '..' and
symbolic links too); the job queue is capped; a server beyond localhost, or any with TLCORE_TOKEN set, asks for a
token and slows down wrong ones; loading a page or listing datasets and backbones opens no network connection.
Hostile input is real: real folders, real links, real files outside the roots, real (refused) sockets."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
import streamlit as st

from tlcore import build_config, compare
from tlcore.cli import main as cli
from tlcore.core import environment
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


def test_weights_file_outside_the_roots_is_refused(roots, tiny_weights, monkeypatch):
    with pytest.raises(AccessError, match="weights file"):
        load_template(BackboneSpec("test_efficientnet", str(tiny_weights)))
    monkeypatch.delenv("TLCORE_SERVING")  # the operator's own script loads it, and the process keeps the model
    load_template(BackboneSpec("test_efficientnet", str(tiny_weights)))
    monkeypatch.setenv("TLCORE_SERVING", "1")
    with pytest.raises(AccessError, match="weights file"):  # a visitor still may not use it
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
    monkeypatch.delenv("TLCORE_TOKEN", raising=False)
    assert not access.token_required("127.0.0.1") and not access.token_required("localhost")
    assert access.token_required("0.0.0.0") and access.token_required(None) and access.token_required("10.1.2.3")
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    assert not access.token_required("0.0.0.0")  # the read-only demo needs none


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
@pytest.mark.parametrize("setting", [("TLCORE_TOKEN", "team-secret"), ("TLCORE_REQUIRE_TOKEN", "1")],
                         ids=["TLCORE_TOKEN", "TLCORE_REQUIRE_TOKEN"])
def test_a_token_that_is_set_is_required_on_localhost_too(setting, read_only, monkeypatch):
    """Behind a reverse proxy or a tunnel the server listens on 127.0.0.1 and is reached from anywhere."""
    monkeypatch.delenv("TLCORE_TOKEN", raising=False)
    monkeypatch.setenv(*setting)
    if read_only:
        monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    assert access.token_required("127.0.0.1") and access.token_required("localhost")
    assert access.token_required("0.0.0.0")


class _Clock:
    """A clock that moves only when the throttle sleeps or the test says so."""

    def __init__(self) -> None:
        self.now, self.slept = 1000.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_wrong_tokens_are_slowed_down_up_to_a_cap_and_a_right_one_resets(monkeypatch):
    monkeypatch.setenv("TLCORE_TOKEN", "team-secret")
    clock = _Clock()
    throttle = access.WrongTokenThrottle(free=3, base=0.5, cap=10.0, clock=lambda: clock.now, sleep=clock.sleep)
    assert [throttle.check("guess", "10.0.0.9") for _ in range(10)] == [False] * 10
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]  # three free, then doubling, at most 10 s
    assert throttle.delay("10.0.0.7") == 0  # another client is not slowed
    assert throttle.check("team-secret", "10.0.0.9") and throttle.delay("10.0.0.9") == 0  # right: count cleared
    for _ in range(4):
        throttle.check("guess", "10.0.0.9")
    clock.now += 3600  # an hour without a wrong token: forgotten
    assert throttle.delay("10.0.0.9") == 0


@pytest.mark.slow
def test_the_gate_says_wrong_token_takes_it_off_the_link_and_opens_with_the_right_one(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TLCORE_TOKEN", "team-secret")
    clock = _Clock()
    monkeypatch.setattr(access, "THROTTLE", access.WrongTokenThrottle(clock=lambda: clock.now, sleep=clock.sleep))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["token"] = "wrong"
    at.run()
    assert at.title[0].value == "Access token needed" and "token" not in at.query_params
    assert "Wrong token" in at.error[0].value
    at.text_input(key="tlcore_token_input").set_value("also-wrong").run()
    assert "Wrong token" in at.error[0].value and at.title[0].value == "Access token needed"
    at.text_input(key="tlcore_token_input").set_value("team-secret").run()
    assert not at.error and at.title[0].value == "Feature extraction, fine-tuning or training from scratch?"
    assert not at.exception


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


# ------------------------------------------------------------------------------------------------------ network
APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = sorted(str(p.relative_to(APP.parent)) for p in (APP.parent / "pages").glob("[0-9]_*.py"))


@pytest.fixture
def no_network(monkeypatch):
    """Sockets that refuse to connect and record each attempt; TLCORE_OFFLINE unset (conftest sets it), so any
    connection tlcore tries is seen."""
    monkeypatch.delenv("TLCORE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(environment, "_hub_checks", {})
    st.cache_data.clear()  # the backbone catalog drawn by an earlier test must be computed again here
    attempts: list = []

    def refuse(address):
        attempts.append(address)
        raise OSError(f"the test refuses connections ({address})")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *args, **kwargs: refuse(address))
    return attempts


@pytest.mark.slow
def test_loading_every_page_opens_no_connection(no_network):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    titles = []
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert at.title and at.title[0].value != "Access token needed", page
        titles.append(at.title[0].value)
    assert len(set(titles)) == len(PAGES) >= 6  # each page drew its own title
    assert no_network == []


@pytest.mark.slow
def test_choosing_a_hub_backbone_looks_the_hub_up_once_and_says_offline(no_network):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP.parent / "pages" / "1_Compare.py"), default_timeout=120).run()
    assert no_network == [] and not at.warning
    at.selectbox(key="backbone").set_value("test_efficientnet").run()
    warned = " ".join(w.value for w in at.warning)
    assert "Hugging Face hub is unreachable (offline" in warned and "random weights or a local file" in warned
    assert no_network == [("huggingface.co", 443)]
    at.run()
    assert len(no_network) == 1  # the answer is kept a while: a rerun does not connect again


def test_a_hub_check_is_kept_a_short_while_only(no_network, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(environment.time, "monotonic", lambda: now[0])
    assert not environment.hub_reachable() and not environment.hub_reachable()
    assert len(no_network) == 1
    now[0] += environment.HUB_CHECK_TTL + 1  # a long-running server: the failure is not kept for ever
    assert not environment.hub_reachable()
    assert len(no_network) == 2


def test_listing_datasets_and_backbones_opens_no_connection(no_network, capsys):
    assert cli(["datasets"]) == 0
    assert cli(["backbones"]) == 0 and cli(["backbones", "--filter", "test_efficientnet*"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "tf_efficientnet_lite0" in out and "hub not checked" in out
    assert no_network == []
    assert cli(["backbones", "--filter", "test_efficientnet", "--check-hub"]) == 0  # asked for: looked up
    assert "hub unreachable: offline" in capsys.readouterr().out and no_network == [("huggingface.co", 443)]


@pytest.mark.slow
def test_default_compare_opens_no_connection(no_network, capsys):
    """The CLI's defaults: the packaged tf_efficientnet_lite0 weights and the bundled Fashion-MNIST, made small."""
    assert cli(["compare", "--per-class", "2", "--strategies", "feature-extraction", "--image-size", "32",
                "--no-progress"]) == 0
    assert "feature-extraction" in capsys.readouterr().out
    assert no_network == []


def test_default_data_roots_are_the_datasets_folder_and_data_beside_the_app(tmp_path, monkeypatch):
    monkeypatch.delenv("TLCORE_DATA_ROOTS", raising=False)
    checkout = Path(__file__).resolve().parents[1]
    home = environment.data_home().resolve()
    assert environment.APP_DIR.resolve() == checkout
    roots = environment.data_roots()
    assert home / "datasets" in roots
    assert checkout not in roots and Path.cwd().resolve() not in roots
    assert not environment.within_data_roots(checkout / "tlcore")  # the code is no dataset
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("")
    monkeypatch.setattr(environment, "APP_DIR", app)
    assert environment.data_roots() == [home / "datasets"]  # no data/ folder: none added
    (app / "data").mkdir()
    assert environment.data_roots() == [home / "datasets", (app / "data").resolve()]
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path / "elsewhere"))
    assert environment.data_roots() == [(tmp_path / "elsewhere").resolve()]


def test_uploads_stay_readable_whatever_the_data_roots(tmp_path, monkeypatch, isolated_home):
    from tlcore.core.environment import require_within_data_roots, within_data_roots

    monkeypatch.setenv("TLCORE_SERVING", "1")
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path / "photos"))
    upload = isolated_home / "datasets" / "uploads" / "abc123" / "pets"
    upload.mkdir(parents=True)
    assert require_within_data_roots(upload, "folder") == upload
    assert not within_data_roots(isolated_home / "datasets" / "other")  # the rest of the data directory is not
    assert not within_data_roots(upload / ".." / ".." / ".." / "..")


def test_remote_visitors_get_messages_without_server_paths(monkeypatch, isolated_home):
    import sys

    from tlcore.server.incidents import APP_ROOT, redact_paths, visitors_are_remote

    monkeypatch.delenv("TLCORE_TOKEN", raising=False)
    monkeypatch.delenv("TLCORE_REQUIRE_TOKEN", raising=False)
    assert not visitors_are_remote("127.0.0.1")  # the operator on localhost keeps every detail
    assert visitors_are_remote("0.0.0.0")
    monkeypatch.setenv("TLCORE_TOKEN", "t")
    assert visitors_are_remote("127.0.0.1")  # behind a proxy
    monkeypatch.delenv("TLCORE_TOKEN")
    monkeypatch.setenv("TLCORE_READ_ONLY", "1")
    assert visitors_are_remote("127.0.0.1")
    message = (f"Dataset '{isolated_home}/datasets/uploads/a9ee/pets' failed in {APP_ROOT}/tlcore/data/load.py "
               f"with {sys.prefix}/lib/python3.11/site-packages/PIL/Image.py")
    shown = redact_paths(message)
    assert str(isolated_home) not in shown and str(APP_ROOT) not in shown and sys.prefix not in shown
    assert "'<data directory>/datasets/uploads/a9ee/pets'" in shown and "<tlcore>/tlcore/data/load.py" in shown
