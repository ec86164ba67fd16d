"""Export a saved run for use elsewhere: safetensors (the whole network), TorchScript, or ONNX through torch's own
exporter (onnx and onnxscript are optional: `pip install -r requirements-export.txt`). Each export writes the model,
its config (model.json: classes, preprocessing) and a model card."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from tlcore.core.errors import ConfigError
from tlcore.deploy.card import model_card
from tlcore.deploy.load import load_model
from tlcore.records.models import CONFIG, find_model
from tlcore.records.store import Store, default_store

FORMATS = ("safetensors", "torchscript", "onnx")
ONNX_PACKAGES = ("onnx", "onnxscript")
# ONNX keeps the weights inside model.onnx up to protobuf's 2 GiB; larger models put them in model.onnx.data beside it
ONNX_ONE_FILE_BYTES = 2**31 - 2**27


def _example(model: torch.nn.Module) -> torch.Tensor:
    size = model.tlcore_config.image_size
    return torch.zeros(2, 3, size, size).contiguous(memory_format=torch.channels_last)


def missing_packages(fmt: str) -> list[str]:
    """The optional packages a format needs that are not installed here (only ONNX needs any)."""
    return [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None] if fmt == "onnx" else []


def _onnx(model: torch.nn.Module, path: Path) -> None:
    missing = missing_packages("onnx")
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}: pip install -r requirements-export.txt (onnx, "
                          "onnxscript and onnxruntime to check it), or export --format torchscript or safetensors.")
    torch.onnx.export(model, (_example(model),), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}}, dynamo=True,
                      external_data=_weight_bytes(model) > ONNX_ONE_FILE_BYTES)


def _weight_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def export_model(run_id: str, fmt: str, out: str | Path, store: Store | None = None) -> list[Path]:
    """Write `model.<ext>`, `model.json` and `MODEL_CARD.md` into `out`; returns the files written."""
    stored = (store or default_store()).run(run_id)
    run, dataset = (stored["run"], stored["dataset"]) if stored else (None, None)
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}'; choose from {', '.join(FORMATS)}.")
    model, _ = load_model(run_id)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        path = out / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    elif fmt == "torchscript":
        path = out / "model.pt"
        with torch.inference_mode():
            torch.jit.trace(model, _example(model)).save(str(path))
    else:
        path = out / "model.onnx"
        _onnx(model, path)
    shutil.copy(find_model(run_id) / CONFIG, out / CONFIG)
    files = [path] + [p for p in [path.with_name(path.name + ".data")] if p.exists()] + [out / CONFIG]
    if run is not None:
        (out / "MODEL_CARD.md").write_text(model_card(model.tlcore_config, run, dataset))
        files.append(out / "MODEL_CARD.md")
    (out / "export.json").write_text(json.dumps({"format": fmt, "run_id": run_id, "input": "image: N x 3 x H x W "
                                                 "float, normalised with model.json's preprocessing mean/std",
                                                 "output": "logits: N x classes, in model.json's class order"}))
    return files + [out / "export.json"]


def export_archive(run_id: str, fmt: str, store: Store | None = None) -> bytes:
    """The files `export_model` writes, as a .zip (the dashboard's download): written into a temporary folder that
    is removed afterwards."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="tlcore-export-") as folder:
        files = export_model(run_id, fmt, folder, store)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.name)
    return buffer.getvalue()
