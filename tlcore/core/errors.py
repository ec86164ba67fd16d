"""Errors a user can act on. Each message names the file or value at fault and says what to do."""

from __future__ import annotations


class TlcoreError(Exception):
    """Base class: the CLI and the dashboard show these as plain messages, never as tracebacks."""


class DataError(TlcoreError, ValueError):
    """The dataset cannot be used as given (missing folder, too few classes or images, nothing readable)."""


class WeightsUnavailable(TlcoreError):
    """Pretrained weights were asked for but none of the sources could provide them."""


class ConfigError(TlcoreError, ValueError):
    """A configuration value is out of range or inconsistent."""


class RunCancelled(TlcoreError):
    """The user cancelled the run; whatever finished before is kept."""


class RunFailed(TlcoreError):
    """Training could not go on (for example the loss became NaN); the reason is recorded with the run."""


class ReadOnlyError(TlcoreError):
    """This instance serves a read-only demo (TLCORE_READ_ONLY=1): browsing, links and exports only."""


class AccessError(TlcoreError):
    """A visitor of the dashboard asked for something this server does not allow: a path outside the data roots,
    a full job queue, a missing access token."""
