"""Who may use the dashboard. Like Jupyter's server: it asks for a token and prints the link that carries it when
TLCORE_TOKEN or TLCORE_REQUIRE_TOKEN=1 is set (a server on 127.0.0.1 behind a reverse proxy or a tunnel is reached
from elsewhere: the bind address cannot tell), and by default when a writable server listens beyond this machine.
Wrong tokens are slowed down. Where an organisation has an identity provider, Streamlit's own `st.login` (OIDC) is
the better gate (see docs/security.md)."""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from tlcore.core.environment import data_home, read_only

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TOKEN_FILE = "server-token"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def token_required(address: str | None) -> bool:
    """Always when TLCORE_TOKEN or TLCORE_REQUIRE_TOKEN=1 is set (the read-only demo included: it was asked for).
    Otherwise a writable server bound to anything but the loopback interface (unset binds every interface); the
    read-only demo needs none."""
    if os.environ.get("TLCORE_TOKEN") or _truthy("TLCORE_REQUIRE_TOKEN"):
        return True
    return not read_only() and (address or "0.0.0.0").strip() not in LOOPBACK


def server_token() -> str:
    """TLCORE_TOKEN, else a random token kept in $TLCORE_HOME/server-token (readable by its owner only), so the link
    stays valid across restarts until the file is deleted."""
    if os.environ.get("TLCORE_TOKEN"):
        return os.environ["TLCORE_TOKEN"]
    path = data_home() / TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def token_matches(given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(str(given).strip(), server_token())


def access_link(address: str | None, port: int) -> str:
    host = socket.gethostname() if (address or "0.0.0.0") in ("0.0.0.0", "::", "") else address
    return f"http://{host}:{port}/?token={server_token()}"


class WrongTokenThrottle:
    """Slows down guessing, server-wide per client address: after `free` wrong tokens each further check of that client
    waits `base` seconds, doubling with every wrong token, at most `cap`. A right token clears the client's count;
    so does `forget` seconds without a wrong one. Behind a reverse proxy every visitor has the proxy's address, so
    the count is then the whole server's. `clock` and `sleep` are injectable for tests."""

    def __init__(self, free: int = 3, base: float = 0.5, cap: float = 10.0, forget: float = 900.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.free, self.base, self.cap, self.forget = free, base, cap, forget
        self.clock, self.sleep = clock, sleep
        self._wrong: dict[str, tuple[int, float]] = {}  # client -> (wrong tokens, time of the last one)
        self._lock = threading.Lock()

    def delay(self, client: str) -> float:
        """Seconds the next check of `client` waits."""
        with self._lock:
            count, last = self._wrong.get(client, (0, 0.0))
        if count < self.free or self.clock() - last > self.forget:
            return 0.0
        return min(self.cap, self.base * 2 ** (count - self.free))

    def check(self, given: str | None, client: str = "unknown") -> bool:
        """Wait this client's delay, then compare `given` with the server's token and count the outcome."""
        wait = self.delay(client)
        if wait:
            self.sleep(wait)
        right = token_matches(given)
        with self._lock:
            now = self.clock()
            self._wrong = {c: v for c, v in self._wrong.items() if now - v[1] <= self.forget}  # bounded memory
            if right:
                self._wrong.pop(client, None)
            else:
                self._wrong[client] = (self._wrong.get(client, (0, 0.0))[0] + 1, now)
        return right


THROTTLE = WrongTokenThrottle()


def check_token(given: str | None, client: str | None = None) -> bool:
    """The gate's check: `token_matches`, slowed down after repeated wrong tokens from the same client."""
    return THROTTLE.check(given, client or "unknown")
