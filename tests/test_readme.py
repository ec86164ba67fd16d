"""The README's Python examples run as written: every ```python block, in order and in one namespace (as a notebook
would run them), in a fresh TLCORE_HOME with TLCORE_OFFLINE=1 (tests/conftest.py), none skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in BLOCK.finditer(text)]


def test_blocks_are_found_exactly():
    text = "intro\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a + 1\n"]


@pytest.mark.slow
@pytest.mark.integration
def test_readme_python_examples_run(isolated_home, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block: the Python API section lost its example"
    monkeypatch.chdir(tmp_path)  # files an example writes land here
    namespace: dict = {"__name__": "__readme__"}
    for number, code in enumerate(blocks, 1):
        exec(compile(code, f"README.md python block {number}", "exec"), namespace)  # noqa: S102  the README's own code
    assert isolated_home.exists()  # the examples stored their results in the test's own home, not the user's
