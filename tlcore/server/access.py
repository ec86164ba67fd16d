"""Who may use a writable dashboard. Like Jupyter's server: one that listens beyond this machine asks for a token,
and prints the link that carries it. Localhost use and the read-only demo need none. Where an organisation has an
identity provider, Streamlit's own `st.login` (OIDC) is the better gate (see README)."""

from __future__ import annotations

import hmac
import os
import secrets
import socket
from typing import Optional

from tlcore.core.environment import data_home, read_only

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TOKEN_FILE = "server-token"


def token_required(address: Optional[str]) -> bool:
    """A writable server bound to anything but the loopback interface (unset binds every interface)."""
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


def token_matches(given: Optional[str]) -> bool:
    return bool(given) and hmac.compare_digest(str(given).strip(), server_token())


def access_link(address: Optional[str], port: int) -> str:
    host = socket.gethostname() if (address or "0.0.0.0") in ("0.0.0.0", "::", "") else address
    return f"http://{host}:{port}/?token={server_token()}"
