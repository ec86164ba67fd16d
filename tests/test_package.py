"""tlcore as a user installs it: the wheel built from this checkout, installed into a new virtual environment outside
the checkout, then the `tlcore` command, the Python API on the packaged data, and the dashboard answering over HTTP."""

from __future__ import annotations

import json
import os
import site
import socket
import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_FILES = ["app.py", ".streamlit/config.toml", *(p.relative_to(ROOT).as_posix() for folder in ("pages", "ui")
                                                        for p in sorted((ROOT / folder).glob("*.py")))]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="venv layout and signals of POSIX")]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    python: Path
    command: Path  # the console script
    outside: Path  # a working folder outside the checkout
    home: Path  # TLCORE_HOME

    def env(self) -> dict:
        """Nothing of the checkout on the path, offline, and a data directory of its own."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TLCORE_SERVING", "TLCORE_DATA_ROOTS")}
        return env | {"TLCORE_HOME": str(self.home), "TLCORE_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([str(a) for a in args], cwd=self.outside, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """Build the wheel offline (hatchling, no build isolation) and install it with --no-deps into a fresh venv.

    The venv reaches this interpreter's site-packages (torch, streamlit, ...) through a path entry instead of
    `--system-site-packages`: that option would also run their .pth files, and the editable install of this checkout
    (`-e .` in requirements.txt) is one of them, which would put the checkout on the path and hide what the wheel
    lacks."""
    base = tmp_path_factory.mktemp("package")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(base / "dist")], capture_output=True, text=True, timeout=120,
                           check=False)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    (wheel,) = (base / "dist").glob("tlcore-*.whl")

    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    shared = [p for p in [*site.getsitepackages(), *user] if Path(p).is_dir()]
    (Path(purelib) / "_shared_site_packages.pth").write_text("\n".join(shared) + "\n")
    outside = base / "work"
    outside.mkdir()
    found = Installed(wheel, env_dir, python, env_dir / "bin" / "tlcore", outside, base / "home")
    found.run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", "-q", wheel)
    return found


def test_the_wheel_carries_the_package_its_data_and_the_dashboard(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert {f"tlcore_dashboard/{f}" for f in DASHBOARD_FILES} <= names
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tlcore").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert data and data <= names, "every non-Python file under tlcore/ (the bundled dataset, its notice)"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = zipfile.ZipFile(installed.wheel).read(metadata_name).decode()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata


def test_the_command_and_the_api_run_from_the_installed_package(installed):
    help_text = installed.run(installed.command, "--help").stdout
    assert all(command in help_text for command in ("compare", "sweep", "recommend", "dashboard"))
    listing = installed.run(installed.python, "-m", "tlcore", "datasets").stdout
    assert listing.splitlines()[0].split()[:2] == ["fashion-mnist", "ready"]

    script = """
import importlib.util, json, sys, tlcore
from tlcore.records.store import default_store
config = tlcore.build_config("quick", dataset="fashion-mnist:Sandal|Sneaker", per_class=5,
                             strategies=["feature-extraction"], image_size=64)
result = tlcore.compare(config)
run = result.runs[0]
print(json.dumps({"tlcore": tlcore.__file__, "ui": importlib.util.find_spec("ui") is not None, "path": sys.path,
                  "status": run.status, "error": run.error, "strategy": run.strategy, "accuracy": run.accuracy,
                  "test_images": run.test_images, "weights": run.weights.get("source"),
                  "stored": default_store().record(result.record_id)["kind"]}))
"""
    out = json.loads(installed.run(installed.python, "-c", script, timeout=300).stdout.strip().splitlines()[-1])
    assert Path(out["tlcore"]).is_relative_to(installed.venv), out["tlcore"]
    assert not out["ui"] and all((installed.outside / p).resolve() != ROOT for p in out["path"]), out["path"]
    assert (out["status"], out["error"], out["strategy"]) == ("completed", None, "feature-extraction")
    # The bundled test images of the two classes; 5 training images a class score well above chance (0.5)
    assert out["test_images"] == 200 and out["accuracy"] >= 0.7, out
    assert out["weights"] == "packaged" and out["stored"] == "comparison"
    assert (installed.home / "tlcore.db").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode(errors="replace")


def test_the_dashboard_answers_on_127_0_0_1(installed):
    port = _free_port()
    log = installed.outside / "dashboard.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(installed.command), "dashboard", "--server.port", str(port),
                                   "--server.headless", "true"], cwd=installed.outside, env=installed.env(),
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no answer within 60 s:\n" + log.read_text()[-3000:]
            try:
                health = _get(f"http://127.0.0.1:{port}/_stcore/health")
                break
            except OSError:
                time.sleep(0.3)
        assert health == (200, "ok")
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "<html" in page.lower()
        while "URL: " not in log.read_text() and time.monotonic() < deadline:  # printed once the server listens
            time.sleep(0.2)
        printed = log.read_text()
        # The dashboard's .streamlit/config.toml applied (server.address), though the server started elsewhere:
        assert f"URL: http://127.0.0.1:{port}" in printed and "Network URL" not in printed, printed
    finally:
        server.terminate()  # the command became Streamlit itself, so this stops the server
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/_stcore/health")
