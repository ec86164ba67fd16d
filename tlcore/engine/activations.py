"""What each stage sees: for one image, the channels of every stage's output that respond most, as maps.

A stage's output is the one the anatomy taps (`StageTaps`: what the next stage receives; the last stage's is
`forward_features`). A channel's strength is the spatial mean of its positive part (what a ReLU-like activation
passes on): in the stem the strongest are often colour and brightness detectors that light up whole regions. A map
is the positive part scaled by the channel's own maximum, so maps of different stages are comparable in shape, not in
size. A transformer's patch tokens are laid out on the patch grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from tlcore.core.errors import ConfigError
from tlcore.engine.anatomy import StageTaps, group_label

TOP_CHANNELS = 3


@dataclass(frozen=True)
class ChannelMap:
    channel: int
    strength: float  # spatial mean of the positive part
    values: np.ndarray  # H x W in [0, 1], the positive part over the channel's maximum


@dataclass(frozen=True)
class StageActivations:
    stage: int
    label: str
    shape: tuple[int, ...]  # the stage output per image: channels, height, width
    channels: tuple[ChannelMap, ...]


def _as_grid(model: torch.nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """A stage output as channels x H x W for one image, or None when it has no spatial layout."""
    if x.ndim == 4:
        return x[0].float()
    if x.ndim == 3:  # tokens: drop the prefix (class/register) tokens, lay the patches on their grid
        tokens = x[0, int(getattr(model, "num_prefix_tokens", 0) or 0):].float()
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        h, w = (int(grid[0]), int(grid[1])) if grid else (math.isqrt(len(tokens)),) * 2
        if h * w != len(tokens):
            return None
        return tokens.T.reshape(-1, h, w)
    return None


def strongest_channels(grid: torch.Tensor, top: int = TOP_CHANNELS) -> tuple[ChannelMap, ...]:
    positive = grid.clamp(min=0)
    strength = positive.mean((1, 2))
    order = torch.argsort(strength, descending=True, stable=True)[:top]
    out = []
    for c in order.tolist():
        peak = float(positive[c].max())
        values = (positive[c] / peak if peak > 0 else positive[c]).numpy().astype(np.float32)
        out.append(ChannelMap(int(c), float(strength[c]), values))
    return tuple(out)


def stage_activations(model: torch.nn.Module, image: torch.Tensor, top: int = TOP_CHANNELS) -> list[StageActivations]:
    """`image`: one normalised image, 1 x 3 x H x W, as the model sees it. The model runs in eval mode (its own mode
    is restored); nothing is trained or changed."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ConfigError(f"stage_activations takes one image as 1 x 3 x H x W (got {tuple(image.shape)}).")
    taps = StageTaps(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), taps:
            feats = model.forward_features(image)
        outputs = taps.outputs() + [feats]
    finally:
        model.train(was_training)
    out = []
    for stage, (group, units, x) in enumerate(zip(taps.groups, taps.units, outputs)):
        grid = _as_grid(model, x)
        channels = strongest_channels(grid, top) if grid is not None else ()
        out.append(StageActivations(stage, group_label(group, units), tuple(int(s) for s in x.shape[1:]), channels))
    return out
