"""Trained models kept next to their record, so the winner of a comparison can be used without training it again
(as fastai's `learn.export()` or Keras' `model.save()`):

    $TLCORE_HOME/models/<record id>/<run id>/
        model.safetensors   the weights: the whole network, or for feature extraction only the new head
        model.json          timm model name, classes, image size, timm's preprocessing, tlcore version, ids, sha256

A feature-extraction run does not store a second copy of the frozen backbone: model.json names its weights' source
and sha256, and loading checks them. Deleting a record moves its models to $TLCORE_HOME/trash/models/<record id>
until the record is restored or purged; all models together, the trash included, are kept under
TLCORE_MODELS_QUOTA (default 5G), the trash going first, then the oldest records' models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from tlcore.core.environment import data_home
from tlcore.core.errors import TlcoreError
from tlcore.core.version import __version__

FORMAT = 1  # bump when the files change shape; loading refuses other formats with the version that wrote them
DEFAULT_QUOTA = 5 * 2**30
QUOTA_ENV = "TLCORE_MODELS_QUOTA"
WEIGHTS, CONFIG = "model.safetensors", "model.json"


class ModelUnavailable(TlcoreError):
    """No model can be loaded for a run: unknown id, never saved, removed, or saved by an incompatible version."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild a trained model and feed it images exactly as in training."""

    format: int
    tlcore_version: str
    record_id: str
    run_id: str
    strategy: str
    kind: str  # feature-extraction: the file holds the head only
    timm_name: str
    num_classes: int
    classes: list[str]
    image_size: int
    preprocessing: dict  # timm's data config: input_size, mean, std, interpolation, crop_pct, crop_mode
    backbone_weights: dict  # source, name, sha256 of the weights the backbone started from (and, for FE, still has)
    frozen_groups: int = 0  # bottom timm stage groups kept frozen (FrozenBatchNorm2d) in training
    sha256: str = ""  # of model.safetensors
    saved_at: float = field(default_factory=time.time)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def models_dir() -> Path:
    return data_home() / "models"


def trash_dir() -> Path:
    return data_home() / "trash" / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def head_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The classifier's tensors under their names in the whole model."""
    head = model.get_classifier()
    prefix = next(name for name, module in model.named_modules() if module is head)
    return {f"{prefix}.{k}": v for k, v in head.state_dict().items()}


def save_model(model: torch.nn.Module, config: ModelConfig) -> Path:
    """Write the run's weights and config; returns the folder. Keeps all models under the quota."""
    folder = models_dir() / config.record_id / config.run_id
    folder.mkdir(parents=True, exist_ok=True)
    state = head_state(model) if config.kind == "feature-extraction" else model.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(tensors, str(folder / WEIGHTS))
    config.sha256 = _sha256(folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(asdict(config), indent=1))
    enforce_quota(keep=folder)
    return folder


def find_model(run_id: str) -> Path:
    """The folder of a run's model, or a ModelUnavailable saying why there is none."""
    if not run_id or not run_id.isalnum():
        raise ModelUnavailable(f"'{run_id}' is not a run id (12 letters and digits, as listed in results).")
    matches = sorted(models_dir().glob(f"*/{run_id}/{CONFIG}"))
    if not matches:
        raise ModelUnavailable(f"No saved model for run '{run_id}'. Runs stored before tlcore saved models (0.2), "
                               "failed or cancelled runs, and models removed to keep under the models quota have "
                               "none: run the comparison again to get one.")
    return matches[0].parent


def read_config(folder: Path) -> ModelConfig:
    data = json.loads((folder / CONFIG).read_text())
    if data.get("format") != FORMAT:
        raise ModelUnavailable(f"The model in {folder.name} was saved by tlcore {data.get('tlcore_version', '?')} "
                               f"(model format {data.get('format')}); this is tlcore {__version__}, which reads "
                               f"format {FORMAT}. Load it with tlcore {data.get('tlcore_version', '?')}, or train it "
                               "again here.")
    config = ModelConfig.from_dict(data)
    if _sha256(folder / WEIGHTS) != config.sha256:
        raise ModelUnavailable(f"The weights of run {config.run_id} do not match their recorded sha256: the file was "
                               "changed or damaged. Train the run again.")
    return config


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS))


def _move(record_id: str, source: Path, target: Path) -> None:
    if not (record_id and record_id.isalnum() and (source / record_id).is_dir()):
        return
    target.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target / record_id, ignore_errors=True)
    os.replace(source / record_id, target / record_id)


def trash_models(record_id: str) -> None:
    """A deleted record's models leave the loadable ones (find_model never looks in the trash)."""
    _move(record_id, models_dir(), trash_dir())


def restore_models(record_id: str) -> None:
    _move(record_id, trash_dir(), models_dir())


def delete_models(record_id: str) -> None:
    """For good: the record's models wherever they are, loadable or in the trash."""
    if record_id and record_id.isalnum():
        for folder in (models_dir(), trash_dir()):
            shutil.rmtree(folder / record_id, ignore_errors=True)


def quota() -> int:
    text = os.environ.get(QUOTA_ENV, "").strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return DEFAULT_QUOTA
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
    except ValueError:
        raise TlcoreError(f"{QUOTA_ENV}={os.environ[QUOTA_ENV]!r} is not a size; use e.g. 5G or 500M.") from None


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def enforce_quota(keep: Optional[Path] = None) -> list[Path]:
    """Remove models until all, the trash included, fit in the quota: the trash's first, then the oldest records'
    (never `keep`). Returns what was removed."""

    def oldest_first(root: Path) -> list[Path]:
        return sorted((p.parent for p in root.glob(f"*/*/{CONFIG}")), key=lambda p: (p / CONFIG).stat().st_mtime)

    runs = oldest_first(trash_dir()) + oldest_first(models_dir())
    total, limit, removed = sum(_size(p) for p in runs), quota(), []
    for folder in runs:
        if total <= limit:
            break
        if keep is not None and folder.resolve() == keep.resolve():
            continue
        total -= _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
