"""The runtime environment: where tlcore keeps its files, whether a hub is reachable, which device to use, and the
library versions recorded with every result."""

from __future__ import annotations

import functools
import os
import platform
import socket
import threading
import time
from pathlib import Path

import numpy
import sklearn
import timm
import torch
import torchvision

from tlcore.core.errors import AccessError, ConfigError, ReadOnlyError
from tlcore.core.version import __version__


def data_home() -> Path:
    """TLCORE_HOME, or ~/.tlcore: caches, downloaded datasets, uploads and the run store."""
    return Path(os.environ.get("TLCORE_HOME", Path.home() / ".tlcore")).expanduser()


def read_only() -> bool:
    """TLCORE_READ_ONLY=1: a demo that can be browsed and exported but not changed (no runs, uploads or deletes)."""
    return os.environ.get("TLCORE_READ_ONLY", "").strip().lower() in ("1", "true", "yes", "on")


def require_writable(action: str) -> None:
    """Read-only means: browse stored records, open links, export. Nothing on the server is read or computed."""
    if read_only():
        raise ReadOnlyError(f"This tlcore instance is read-only (TLCORE_READ_ONLY=1), so it cannot {action}. "
                            "Open the links and export reports here, or run tlcore without TLCORE_READ_ONLY.")


def serving_visitors() -> bool:
    """True in the dashboard's server process (app.py sets TLCORE_SERVING=1): paths then come from visitors and must
    lie under the data roots. The CLI and scripts never set it: they are the user's own shell."""
    return os.environ.get("TLCORE_SERVING", "") == "1"


APP_DIR = Path(__file__).resolve().parents[2]  # the checkout: app.py, pages/, tlcore/


def _app_data_folder() -> list[Path]:
    """A `data/` folder beside app.py, when there is one (never the checkout itself: it holds code and the store)."""
    folder = APP_DIR / "data"
    return [folder] if (APP_DIR / "app.py").is_file() and folder.is_dir() else []


def data_roots() -> list[Path]:
    """Where a visitor may point the dashboard: TLCORE_DATA_ROOTS (separated by the OS path separator), or by
    default $TLCORE_HOME/datasets (uploads land there) and a `data/` folder beside app.py when it exists. Not the
    folder the server was started in: from a checkout that is the code itself."""
    configured = [r for r in os.environ.get("TLCORE_DATA_ROOTS", "").split(os.pathsep) if r.strip()]
    roots = [Path(r).expanduser() for r in configured] or [data_home() / "datasets", *_app_data_folder()]
    return [r.resolve() for r in roots]


def within_data_roots(path: Path) -> bool:
    """Under a data root, or under the uploads tlcore extracted itself (readable whatever TLCORE_DATA_ROOTS says)."""
    resolved = Path(path).expanduser().resolve()  # follows symbolic links and '..'
    uploads = (data_home() / "datasets" / "uploads").resolve()
    return any(resolved == root or resolved.is_relative_to(root) for root in [*data_roots(), uploads])


def require_within_data_roots(path: Path | str, what: str) -> Path:
    """When serving visitors, refuse a path (folder or file) that resolves outside the data roots, through '..' or
    symbolic links included. Returns the path unchanged; the CLI is never limited."""
    if serving_visitors() and not within_data_roots(Path(path)):
        roots = ", ".join(str(r) for r in data_roots())
        raise AccessError(f"The {what} '{path}' is outside the folders this server may read ({roots}). Put the data "
                          "under one of them, upload a .zip, or ask the administrator to add a folder to "
                          "TLCORE_DATA_ROOTS.")
    return Path(path)


def cache_dir() -> Path:
    path = data_home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


HUB_CHECK_TTL = 60.0  # seconds a hub check is trusted: a server that was offline notices the network coming back
HUB_CHECK_TIMEOUT = 2.0
_hub_checks: dict[str, tuple[float, bool]] = {}
_hub_lock = threading.Lock()


def offline_by_setting() -> bool:
    """HF_HUB_OFFLINE=1 or TLCORE_OFFLINE=1: never look the hub up."""
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TLCORE_OFFLINE") == "1"


def hub_reachable(host: str = "huggingface.co", timeout: float = HUB_CHECK_TIMEOUT) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of after a minute of retries. It opens a
    connection: call it only when weights or data are about to be downloaded, never to draw a page. The answer is
    kept for HUB_CHECK_TTL seconds, a failure included."""
    if offline_by_setting():
        return False
    now = time.monotonic()
    with _hub_lock:
        cached = _hub_checks.get(host)
    if cached is not None and now - cached[0] < HUB_CHECK_TTL:
        return cached[1]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            reachable = True
    except OSError:
        reachable = False
    with _hub_lock:
        _hub_checks[host] = (time.monotonic(), reachable)
    return reachable


def available_memory_bytes() -> int | None:
    """Memory a new run can still take: the kernel's MemAvailable, or less under a cgroup's limit (a container's)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available or 2**62, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def free_disk_bytes(path: Path) -> int | None:
    """Free space where `path` is (its nearest existing parent), for this user."""
    import shutil

    for candidate in [path, *path.parents]:
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


# the cuBLAS workspace setting that makes its results repeatable (CUDA docs, "Results reproducibility")
CUBLAS_WORKSPACE = ":4096:8"


def configure_cuda() -> None:
    """Settings every CUDA computation gets (tlcore.engine.precision says why): fp32 without TF32, cuDNN's
    deterministic algorithms and no autotuning (`cudnn.benchmark` picks kernels by timing, which differ between
    runs)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks TLCORE_DEVICE when it is set (the test suite pins the CPU with it), else CUDA, then Apple MPS,
    then CPU; 'cuda:N' names one GPU. A CUDA device comes configured (`configure_cuda`)."""
    if device == "auto" and os.environ.get("TLCORE_DEVICE", "auto").strip() not in ("", "auto"):
        device = os.environ["TLCORE_DEVICE"].strip()
    dev = _resolve_device(device)
    if dev.type == "cuda":
        configure_cuda()
    return dev


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"Unknown device '{device}'; use auto, cpu, cuda or mps.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' was asked for but no CUDA GPU is visible; use --device auto or cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{device}' was asked for but this machine has {torch.cuda.device_count()} CUDA "
                          f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but Apple MPS is not available; use --device auto or cpu.")
    return dev


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:


    return {"tlcore": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "platform": platform.platform(),
            "torch_threads": str(torch.get_num_threads())}
