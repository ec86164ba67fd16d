"""Import every module the dashboard uses, once per server process, before any page runs.

Streamlit runs each browser session's script in a thread of its own. On a fresh server, several sessions importing
tlcore at the same moment collide in Python's per-module import locks: one gets `_frozen_importlib._DeadlockError`,
another sees a module half-imported (`cannot import name ... from tlcore.advice...`). app.py and every page
import this module before anything else (a deep link on a fresh server runs its page file before app.py): Python runs
its body in one thread while every other session waits on this module's lock, which each takes before holding any
other, so nothing can deadlock and every page finds its modules whole.
"""

from __future__ import annotations

import importlib
import pkgutil

import tlcore
import ui

NOT_IMPORTED = {"tlcore.__main__", "ui.preload"}  # the CLI's entry point runs on import; this module is running
# imported by MLflow when it loads a logged model (and needs mlflow, an optional package): not by the dashboard
NOT_IMPORTED |= {"tlcore.deploy.pyfunc"}
LAZY_IMPORTS = ("streamlit.runtime.pages_manager", "streamlit.errors", "urllib.parse")  # imported inside functions


def _import_tree(package) -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
             if info.name not in NOT_IMPORTED]
    for name in names:
        importlib.import_module(name)
    return names


IMPORTED = _import_tree(tlcore) + _import_tree(ui) + [importlib.import_module(n).__name__ for n in LAZY_IMPORTS]
