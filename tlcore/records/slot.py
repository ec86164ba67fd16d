"""One training slot per machine: comparisons and sweeps (dashboard jobs, CLI runs, scripts) that share a
`$TLCORE_HOME` run their computation one at a time, instead of fighting over the same cores (two torch processes on
a small machine slow each other several-fold: docs/benchmarks.md).

The slot is an exclusive `flock` on `$TLCORE_HOME/training-slot.lock`; the holder describes itself (pid, start time,
what runs) in `$TLCORE_HOME/training-slot.json`, so the next one can say whom it waits for. The operating system
releases a flock when its process dies, however it dies: a killed run never blocks the next one (a sidecar it left
behind names a dead pid and is ignored). Within one process the slot is re-entrant per thread (a sweep inside a job
does not wait for itself); another thread of the same process waits like another process. A waiter polls its
CancelToken, so a cancel while waiting returns at once.

A machine has one slot per device: the CPU's (every CPU or MPS run), and one per CUDA GPU (`cuda:N`; plain `cuda`
is `cuda:0`), so runs on different GPUs go at once while two runs never share one.

Where `fcntl` does not exist (Windows), runs are not serialised.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from tlcore.core.environment import data_home
from tlcore.core.progress import CancelToken

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME, SIDECAR_NAME = "training-slot.lock", "training-slot.json"
SLOT_NAME = "training slot"  # the progress events' strategy name while waiting
POLL_SECONDS = 0.2
_local = threading.local()  # per thread: how deep this thread is inside the slot it holds


@dataclass
class Holder:
    """Who holds the slot, from its sidecar."""

    pid: int
    started: float  # time.time() when it took the slot
    what: str
    host: str = ""
    token: str = ""

    @property
    def alive(self) -> bool:
        if self.host and self.host != socket.gethostname():
            return True  # another machine sharing the home: its pid means nothing here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        """'the run started at 14:02:11 by pid 4242 (comparison 3fa2c1d0e9ab, command line)'."""
        return (f"the run started at {time.strftime('%H:%M:%S', time.localtime(self.started))} by pid {self.pid}"
                + (f" ({self.what})" if self.what else ""))


def waiting_message(holder: Optional[Holder]) -> str:
    """What a waiting run says, once."""
    who = holder.describe() if holder else "another run on this machine"
    return f"waiting for {who} to finish..."


def slot_of(device: str = "") -> str:
    """Which slot a run on `device` takes: '' (the CPU's) or 'cuda0', 'cuda1', ..."""
    device = str(device or "").strip()
    if not device.startswith("cuda"):
        return ""
    index = device.partition(":")[2]
    return f"cuda{int(index) if index.isdigit() else 0}"


def _paths(home: Optional[Path], device: str = "") -> tuple[Path, Path]:
    root = Path(home) if home is not None else data_home()
    root.mkdir(parents=True, exist_ok=True)
    slot = slot_of(device)
    if not slot:
        return root / LOCK_NAME, root / SIDECAR_NAME
    stem = LOCK_NAME.removesuffix(".lock")
    return root / f"{stem}-{slot}.lock", root / f"{stem}-{slot}.json"


def holder(home: Optional[Path] = None, device: str = "") -> Optional[Holder]:
    """The live holder named by the sidecar of `device`'s slot, or None (free, just changing hands, or a dead
    holder's leftover)."""
    _, sidecar = _paths(home, device)
    try:
        h = Holder(**json.loads(sidecar.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return h if h.alive else None


def _origin() -> str:
    if "streamlit" in sys.modules:  # only looked up: tlcore never imports streamlit
        return "dashboard"
    main = Path(sys.argv[0]).as_posix() if sys.argv and sys.argv[0] else ""
    if main.endswith(("tlcore/__main__.py", "tlcore/cli.py")):
        return "command line"
    name = Path(main).name
    return name if name and name != "-c" else "python"


def held_here() -> bool:
    """Whether this thread holds the slot."""
    return getattr(_local, "depth", 0) > 0


@contextmanager
def training_slot(what: str = "", cancel: Optional[CancelToken] = None,
                  on_wait: Optional[Callable[[str], None]] = None, home: Optional[Path] = None,
                  poll: float = POLL_SECONDS, device: str = "") -> Iterator[bool]:
    """Hold the training slot of `device` (`slot_of`) for the duration of the block; yields whether it had to wait.

    While another run holds it, `on_wait` is called once with the message ('waiting for the run started at ... by pid
    ... (...) to finish...') and the cancel token is polled every `poll` seconds (a cancel raises RunCancelled).
    Re-entrant in the thread that holds it."""
    if held_here() or fcntl is None:
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            yield False
        finally:
            _local.depth -= 1
        return
    lock_path, sidecar = _paths(home, device)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = _acquire(fd, cancel, on_wait, home, poll, device)
        me = Holder(os.getpid(), time.time(), ", ".join(filter(None, [what, _origin()])), socket.gethostname(),
                    uuid.uuid4().hex)
        tmp = sidecar.with_name(f"{SIDECAR_NAME}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(asdict(me)))
        os.replace(tmp, sidecar)
        _local.depth = 1
        try:
            yield waited
        finally:
            _local.depth = 0
            try:
                if json.loads(sidecar.read_text()).get("token") == me.token:
                    sidecar.unlink()
            except (OSError, ValueError):
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, cancel: Optional[CancelToken], on_wait: Optional[Callable[[str], None]],
             home: Optional[Path], poll: float, device: str = "") -> bool:
    """Take the flock, polling; announce the holder once (given a moment to write its sidecar). Returns whether it
    waited."""
    waited_since, announced = None, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return waited_since is not None
        except BlockingIOError:
            pass
        now = time.monotonic()
        waited_since = waited_since if waited_since is not None else now
        if not announced:
            current = holder(home, device)
            if current is not None or now - waited_since > 1.0:  # a new holder writes its sidecar right away
                announced = True
                if on_wait:
                    on_wait(waiting_message(current))
        if cancel is not None:
            cancel.check()
        time.sleep(poll)
