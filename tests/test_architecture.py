"""The layout is a contract: the import-linter layers in pyproject.toml hold, no module imports one that imports it
back (function-level imports included), tlcore never imports streamlit, and pages/ holds only the pages app.py
registers."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    """`lint-imports` with the contracts in pyproject.toml (what a developer runs by hand)."""
    command = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(command) if command.exists() else "lint-imports"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_ruff_check_passes():
    """`ruff check` with the rules in pyproject.toml (pycodestyle and pyflakes, lines up to 120) over the whole
    repository: unused imports, undefined names and long lines fail the suite, not a later review."""
    pytest.importorskip("ruff")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every tlcore module `path` imports, at any depth of the file (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {n for n in names if n in modules}
    return out


def test_no_import_cycles_between_modules():
    files = {_module_name(p): p for p in (ROOT / "tlcore").rglob("*.py")}
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for target in graph[module]:
            if target in packages and target != "tlcore":
                continue  # a subpackage's empty __init__ re-exports nothing
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif len(path) < 40:
                visit(target, path + [target])

    for module in graph:
        if module != "tlcore":  # the public API at the top imports everything by design; nothing imports it back
            visit(module, [module])
    assert not cycles, cycles[:5]
    assert not any("tlcore" in graph[m] for m in graph if m != "tlcore"), "a module imports the package top"


def test_subpackage_inits_are_empty_so_imports_cannot_hide_cycles():
    for init in (ROOT / "tlcore").glob("*/__init__.py"):
        assert not _imports(init, {"tlcore." + p.stem for p in (ROOT / "tlcore").rglob("*.py")}), init


def test_tlcore_never_imports_streamlit():
    for path in (ROOT / "tlcore").rglob("*.py"):
        assert "streamlit" not in {n.split(".")[0] for n in _imports(path, {"streamlit"})}, path
        assert not re.search(r"^\s*(import|from)\s+streamlit", path.read_text(), re.M), path


def test_pages_folder_holds_only_the_registered_pages():
    literals = [n.value for n in ast.walk(ast.parse((ROOT / "app.py").read_text())) if isinstance(n, ast.Constant)]
    registered = sorted(Path(v).name for v in literals if isinstance(v, str) and v.startswith("pages/"))
    assert sorted(p.name for p in (ROOT / "pages").iterdir() if p.suffix == ".py") == registered
    assert not [p for p in (ROOT / "pages").iterdir() if p.is_dir() and p.name != "__pycache__"]


@pytest.mark.parametrize("page", sorted((ROOT / "pages").glob("*.py")), ids=lambda p: p.stem)
def test_every_page_goes_through_app_navigation(page):
    assert "through_app()" in page.read_text(), f"{page.name} must call ui.navigation.through_app() first"


def test_streamlits_private_pages_manager_flag_that_through_app_relies_on_still_exists():
    """ui.navigation.through_app() leaves Streamlit's legacy pages-directory mode by clearing the private class flag
    `PagesManager.uses_pages_directory` (there is no public API for it). If a Streamlit upgrade renames or removes
    it, this fails here, by name, before deep links on a fresh server silently lose the navigation
    (tests/test_browser.py::test_first_request_a_share_link_shows_exactly_the_pages checks the behaviour itself)."""
    from streamlit.runtime.pages_manager import PagesManager

    assert "uses_pages_directory" in vars(PagesManager), (
        "Streamlit changed PagesManager: update ui/navigation.through_app() and the pin in requirements.txt")
    assert PagesManager.uses_pages_directory in (True, False, None)
