"""What a visitor may make the server build. A read-only demo serves what is stored or cheap and bounded: the
backbones whose weights ship with tlcore or that a stored record used, image sizes up to the backbone's pretrained
size and heads of up to 1,000 classes. Values that arrive in a link get the same bounds on any server (a link is not
a form: anyone can write one); a value out of bounds is named in a warning and the default is used instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import timm

from tlcore.engine.backbone import DEFAULT_BACKBONE
from tlcore.engine.strategies import KINDS
from tlcore.engine.weights import PACKAGED_WEIGHTS

MAX_CLASSES = 1000
MIN_IMAGE_SIZE = 16
FALLBACK_IMAGE_SIZE = 224


def served_backbones(stored: Iterable[str] = ()) -> list[str]:
    """The backbones a read-only demo and a link may ask for: those with packaged (offline) weights, then those
    that stored records on this server used (`stored`), so a record's link to its own backbone opens."""
    return list(dict.fromkeys([*PACKAGED_WEIGHTS, *sorted(b for b in stored if b)]))


def max_image_size(backbone: str) -> int:
    """The backbone's pretrained input size, read from timm's config without building the model."""
    cfg = timm.models.get_pretrained_cfg(backbone)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else FALLBACK_IMAGE_SIZE


@dataclass(frozen=True)
class AnatomyChoices:
    backbone: str = DEFAULT_BACKBONE
    image_size: int = 48
    classes: int = 10
    strategy: str = "feature-extraction"
    stages: int = 2


def _int(value: str) -> int:
    number = float(str(value).strip())
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def anatomy_link(query: dict[str, str], stored_backbones: Iterable[str] = (),
                 defaults: AnatomyChoices = AnatomyChoices()) -> tuple[dict, list[str]]:
    """The choices a link (`?backbone=...&image_size=...&classes=...&strategy=...&stages=...`) may set, each within
    the bounds, and a warning for every value that was not. Returns ({field: value}, warnings)."""
    served = served_backbones(stored_backbones)
    chosen: dict = {}
    warnings: list[str] = []

    def refuse(param: str, why: str) -> None:
        value = str(query[param])
        shown = value if len(value) <= 40 else value[:40] + "..."
        warnings.append(f"The link's {param}={shown!r} is not served here ({why}); using the default, "
                        f"{getattr(defaults, param)}.")

    backbone = query.get("backbone")
    if backbone:
        if backbone in served:
            chosen["backbone"] = backbone
        else:
            refuse("backbone", "a link may open a backbone with packaged weights or one a stored record used: "
                   + ", ".join(served))
    top = max_image_size(chosen.get("backbone", defaults.backbone))
    bounds = {"image_size": (MIN_IMAGE_SIZE, top, f"{MIN_IMAGE_SIZE} to {top} px, the backbone's pretrained size"),
              "classes": (2, MAX_CLASSES, f"2 to {MAX_CLASSES:,} classes"),
              "stages": (1, 64, "1 to 64 stages")}
    for param, (low, high, words) in bounds.items():
        if not query.get(param):
            continue
        try:
            value = _int(query[param])
        except (ValueError, OverflowError):
            refuse(param, f"not a whole number; {words}")
            continue
        if low <= value <= high:
            chosen[param] = value
        else:
            refuse(param, words)
    strategy = query.get("strategy")
    if strategy:
        if strategy in KINDS:
            chosen["strategy"] = strategy
        else:
            refuse("strategy", "one of " + ", ".join(KINDS))
    return chosen, warnings
