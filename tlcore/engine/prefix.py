"""Skip the frozen bottom of a partially fine-tuned network.

When only the top stages train, BatchNorm below them is frozen and nothing random happens there, the frozen bottom
maps each image to the same activation every epoch. We compute that activation once and train the top on it, so an
epoch runs only the stages that learn (the runner keeps it in the feature cache, so a sweep's other cells reuse it).
Works for any timm model whose frozen prefix is a chain of modules (CNNs); every split is checked numerically
against the intact model, and models where it does not hold (e.g. a ViT's token concatenation) simply train on
images as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

STOCHASTIC = (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.AlphaDropout)


@dataclass
class FrozenPrefix:
    """The modules replaced by Identity; `compute` gives their output, `restore` puts them back."""

    model: torch.nn.Module
    replaced: dict[str, torch.nn.Module]

    @torch.no_grad()
    def compute(self, x: torch.Tensor) -> torch.Tensor:
        """Run the intact model up to the first trainable module and return that module's input."""
        self.restore()
        try:
            return _input_of_first_trainable(self.model, x)
        finally:
            self._swap_in_identity()

    def _swap_in_identity(self) -> None:
        for name in self.replaced:
            _set_module(self.model, name, torch.nn.Identity())

    def restore(self) -> None:
        for name, module in self.replaced.items():
            _set_module(self.model, name, module)


def _set_module(root: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    root.get_submodule(parent).add_module(leaf, module) if parent else root.add_module(leaf, module)


def _is_trainable(module: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _input_of_first_trainable(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    captured: dict[str, torch.Tensor] = {}

    class _Stop(Exception):
        pass

    def pre_hook(module, args):
        if _is_trainable(module) and "x" not in captured:
            captured["x"] = args[0]
            raise _Stop

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules()]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if "x" not in captured:
        raise RuntimeError("no trainable module was called")
    return captured["x"].detach()


def _call_order(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[str], Optional[str]]:
    """Modules whose forward finished before the first trainable module started, and that module's name."""
    finished: list[str] = []
    state = {"first": None}
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def pre(module, args):
        if state["first"] is None and _is_trainable(module):
            state["first"] = names[id(module)]

    def post(module, args, out):
        if state["first"] is None:
            finished.append(names[id(module)])

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return finished, state["first"]


def split_frozen_prefix(model: torch.nn.Module, sample: torch.Tensor, atol: float = 1e-4) -> Optional[FrozenPrefix]:
    """Replace the frozen prefix with Identity if the result is provably the same function; else None."""
    was_training = model.training
    model.eval()
    try:
        finished, first = _call_order(model, sample)
        if not first or not finished:
            return None
        first_and_parents = {first.rsplit(".", i)[0] for i in range(first.count(".") + 1)}
        candidates = [n for n in finished if n and n not in first_and_parents]
        # keep the outermost modules only
        chosen = [n for n in candidates if not any(n.startswith(o + ".") for o in candidates if o != n)]
        modules = {n: model.get_submodule(n) for n in chosen}
        for m in modules.values():
            if any(p.requires_grad for p in m.parameters()):
                return None
            if any(isinstance(s, STOCHASTIC) and s.p > 0 for s in m.modules()):
                return None
            if any(getattr(s, "drop_prob", 0) > 0 for s in m.modules()):
                return None
            if any(isinstance(s, torch.nn.modules.batchnorm._BatchNorm) for s in m.modules()):
                return None  # a live BatchNorm would change in train mode; frozen ones are FrozenBatchNorm2d
        prefix = FrozenPrefix(model, modules)
        with torch.no_grad():
            expected = model(sample)
            acts = _input_of_first_trainable(model, sample)
            prefix._swap_in_identity()
            try:
                got = model(acts)
            except Exception:  # the rest of the model cannot start from this activation: not a chain
                got = None
        if got is None or got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=1e-4):
            prefix.restore()
            return None
        return prefix
    finally:
        model.train(was_training)
