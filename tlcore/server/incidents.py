"""What a visitor sees when something fails. On a server that other people reach (a read-only demo, one that listens
beyond localhost, or one behind a token or a proxy) a traceback would show them server paths and library versions:
they get a short message with an incident id instead, the server's log gets the traceback under the same id, and the
messages they do see have server paths replaced. On localhost the visitor is the operator and keeps every detail."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Optional

from tlcore.core.environment import data_home, read_only
from tlcore.server.access import LOOPBACK, token_required

LOG = logging.getLogger("tlcore.dashboard")
APP_ROOT = Path(__file__).resolve().parents[2]  # the folder holding app.py and tlcore/


def visitors_are_remote(address: Optional[str]) -> bool:
    """True unless the server is writable, bound to loopback and asks for no token: then only its operator uses it."""
    return read_only() or (address or "0.0.0.0").strip() not in LOOPBACK or token_required(address)


def record_incident(exc: BaseException) -> str:
    """Log the traceback on the server under a new incident id, and return the id."""
    incident = uuid.uuid4().hex[:8]
    LOG.error("incident %s: %s", incident, type(exc).__name__, exc_info=(type(exc), exc, exc.__traceback__))
    return incident


def incident_message(incident: str) -> str:
    return (f"Something went wrong on this page (incident {incident}). Reload the page to try again; if it happens "
            "again, give the incident id to whoever runs this server: its log has the details.")


def _server_paths() -> list[tuple[str, str]]:
    """(path, what a visitor reads instead), longest first so the most specific wins."""
    named = {str(data_home()): "<data directory>", str(APP_ROOT): "<tlcore>", sys.prefix: "<python>",
             os.path.expanduser("~"): "<home>"}
    for path in list(named):
        resolved = str(Path(path).resolve())
        named.setdefault(resolved, named[path])
    return sorted(((p, n) for p, n in named.items() if len(p) > 1), key=lambda pn: -len(pn[0]))


def redact_paths(text: str) -> str:
    """The message with this server's data directory, install folder, Python prefix and home folder replaced."""
    for path, name in _server_paths():
        text = text.replace(path, name)
    return text
