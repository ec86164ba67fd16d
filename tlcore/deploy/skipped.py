"""Files left out, summarised by reason: '4 not readable by Pillow (e.g. cat/empty.jpg), 1 over 50 megapixels
(cat/huge.png)'. Reasons that embed details (an exception's text, a file's name, its size) are grouped by a short kind,
so a folder with a thousand broken files reads as a few kinds with a count and an example each. Used for datasets
(compare, sweep, recommend) and for predictions (the CLI and the dashboard)."""

from __future__ import annotations

import re
from typing import Iterable, Union

# (words in a reason, its kind), in the order they are tried: the first match wins
KINDS = (
    ("outside any class folder", "outside any class folder"),
    ("not among the training classes", "class folder not among the training classes"),
    ("link to a file outside the data roots", "a link leading outside the data roots"),
    ("empty class folder", "empty class folder"),
    ("every file in it was left out", "class folder left without images"),
    ("not an image file", "not an image file"),
    ("decompression-bomb limit", "over Pillow's decompression-bomb limit"),
    ("not an image pillow can read", "not readable by Pillow"),
    ("looks like a zip bomb", "a zip bomb"),
)
_OVER = re.compile(r"the limit is ([\d,.]+) megapixels")
_DECODE = ("corrupt", "could not be decoded", "cannot be read")
_NAME = re.compile(r"^'[^']*'\s+(?:is\s+)?")

Skipped = Union[tuple[str, str], dict]


def reason_kind(reason: str) -> str:
    """The short kind of a reason: 'not readable by Pillow', 'truncated', 'corrupt', 'over 50 megapixels', ...; an
    unknown reason without its details (the file's name, anything in parentheses or after ';')."""
    text = reason.lower()
    over = _OVER.search(text)
    if over:
        return f"over {over[1]} megapixels"
    for words, kind in KINDS:
        if words in text:
            return kind
    if any(words in text for words in _DECODE):
        detail = text.split("(", 1)[1] if "(" in text else ""
        return "truncated" if "truncated" in detail else ("not readable" if "cannot be read" in text else "corrupt")
    return _NAME.sub("", reason).split(" (")[0].split(";")[0].strip().rstrip(".") or "other"


def _pairs(skipped: Iterable[Skipped]) -> list[tuple[str, str]]:
    return [(s["path"], s["reason"]) if isinstance(s, dict) else (s[0], s[1]) for s in skipped]


def by_kind(skipped: Iterable[Skipped]) -> list[tuple[str, list[str]]]:
    """(kind, paths) for each kind of reason, the most frequent first (ties: the first seen first)."""
    groups: dict[str, list[str]] = {}
    for path, reason in _pairs(skipped):
        groups.setdefault(reason_kind(reason), []).append(path)
    return sorted(groups.items(), key=lambda item: -len(item[1]))  # sorted() is stable: first seen first among ties


def summarize_skipped(skipped: Iterable[Skipped], limit: int = 6) -> str:
    """'4 not readable by Pillow (e.g. cat/empty.jpg), 1 over 50 megapixels (cat/huge.png)': a count and one example
    for each kind of reason, at most `limit` kinds (then how many more files); '' when nothing was skipped."""
    groups = by_kind(skipped)
    parts = [f"{len(paths)} {kind} ({'e.g. ' if len(paths) > 1 else ''}{paths[0]})" for kind, paths in groups[:limit]]
    rest = sum(len(paths) for _, paths in groups[limit:])
    if rest:
        parts.append(f"{rest} for {len(groups) - limit} other reason(s)")
    return ", ".join(parts)


def named_in_summary(skipped: Iterable[Skipped], limit: int = 6) -> int:
    """How many files `summarize_skipped` names: one a kind shown."""
    return min(len(by_kind(skipped)), limit)
