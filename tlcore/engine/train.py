"""Training: a linear head on cached features (full-batch L-BFGS, L2 picked on val), and the network loop for
fine-tuning and scratch (AdamW, per-group learning rates, warmup + cosine, early stopping with the best checkpoint
restored, NaN guard, cancellation between batches)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from tlcore.core.errors import RunFailed
from tlcore.core.progress import Reporter
from tlcore.data.dataset import PreparedImages
from tlcore.engine.backbone import classifier_names
from tlcore.engine.features import Normalizer
from tlcore.engine.strategies import StrategySpec


@dataclass
class HeadFit:
    """A linear classifier on raw pooled features (standardisation folded in) and how it was chosen."""

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float
    val_accuracy: float
    grid: list[dict]
    curve: list[dict]


def _objective(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    return F.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * (w * w).sum()


def _lbfgs(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float,
           iters: int, optimizer: Optional[torch.optim.LBFGS] = None) -> float:
    """Run L-BFGS for up to `iters` iterations (reusing `optimizer` keeps its curvature history); returns the loss."""
    opt = optimizer or torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, history_size=20,
                                         line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = _objective(w, b, x, y, l2)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(F.cross_entropy(x @ w.T + b, y))


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


def out_of_fold_probabilities(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, folds: int = 5,
                              max_iter: int = 300, seed: int = 0) -> Optional[torch.Tensor]:
    """Each image's class probabilities from the linear head (standardised features, L-BFGS at one L2 strength)
    fitted on the other folds of a stratified k-fold split: no image is scored by a head that saw it (what cleanlab's
    label-issue search needs). None when a class has fewer images than folds."""
    y = y.long()
    counts = torch.bincount(y, minlength=num_classes)
    if int(counts[counts > 0].min()) < folds:
        return None
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(y), dtype=torch.long)
    for c in torch.unique(y):  # stratified: each class dealt round-robin over the folds, in a seeded order
        members = torch.nonzero(y == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold[members] = torch.arange(len(members)) % folds
    x = x.float()
    probabilities = torch.zeros(len(y), num_classes)
    for k in range(folds):
        train, test = fold != k, fold == k
        mean = x[train].mean(0)
        std = x[train].std(0, unbiased=False).clamp_min(1e-6)
        w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
        b = torch.zeros(num_classes, requires_grad=True)
        _lbfgs(w, b, (x[train] - mean) / std, y[train], l2, max_iter)
        with torch.no_grad():
            probabilities[test] = torch.softmax(((x[test] - mean) / std) @ w.T + b, dim=1)
    return probabilities


def cross_validated_accuracy(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, folds: int = 5,
                             max_iter: int = 300, seed: int = 0) -> Optional[float]:
    """The linear head's accuracy by stratified k-fold cross-validation over `x` (every labelled image a ranking has:
    training and val), at one L2 strength: each image scored once, by a head that did not see it. Less noisy than
    the val split alone where val is small; None when a class has fewer images than folds."""
    probabilities = out_of_fold_probabilities(x, y, num_classes, l2, folds, max_iter, seed)
    if probabilities is None:
        return None
    return float(probabilities.argmax(1).eq(y.long()).float().mean())


def _grid(xs: torch.Tensor, train_y: torch.Tensor, vs: torch.Tensor, val_y: torch.Tensor, num_classes: int,
          l2_grid: tuple[float, ...], max_iter: int, reporter: Optional[Reporter] = None, lo: float = 0.0,
          hi: float = 1.0) -> tuple[float, list[dict]]:
    """The L2 strength with the best val accuracy (ties: the lower val log-loss), solving strong to weak with warm
    starts on standardised features; and each strength's figures."""
    w = torch.zeros(num_classes, xs.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    grid, best = [], None
    for k, l2 in enumerate(sorted(l2_grid, reverse=True)):
        loss = _lbfgs(w, b, xs, train_y, l2, max_iter)
        with torch.no_grad():
            val_logits = vs @ w.T + b
            acc, val_loss = _accuracy(val_logits, val_y), float(F.cross_entropy(val_logits, val_y))
        grid.append({"l2": l2, "train_loss": loss, "val_accuracy": acc, "val_loss": val_loss})
        if best is None or (acc, -val_loss) > (best[1], -best[2]):
            best = (l2, acc, val_loss)
        if reporter:
            reporter("head", lo + (hi - lo) * 0.6 * (k + 1) / len(l2_grid), loss=loss, val_accuracy=acc,
                     message=f"L2 {l2:g}")
    return best[0], grid


def choose_l2(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
              num_classes: int, l2_grid: tuple[float, ...], max_iter: int = 300) -> float:
    """The L2 strength `fit_linear_head` picks on val, without its refit: for callers that need only the strength
    (the health check's out-of-fold heads)."""
    train_x, val_x = train_x.float(), val_x.float()
    mean = train_x.mean(0)
    std = train_x.std(0, unbiased=False).clamp_min(1e-6)
    return _grid((train_x - mean) / std, train_y, (val_x - mean) / std, val_y, num_classes, l2_grid, max_iter)[0]


def fit_linear_head(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                    num_classes: int, l2_grid: tuple[float, ...], max_iter: int = 300,
                    reporter: Optional[Reporter] = None, span: tuple[float, float] = (0.0, 1.0),
                    overwrite_train: bool = False) -> HeadFit:
    """Multinomial logistic regression on standardised features, solved to convergence with L-BFGS for each L2
    strength (strong to weak, warm-started); the best val accuracy wins, ties broken by the lower val log-loss.
    `overwrite_train`: standardise `train_x` in place (the same numbers, without a second copy of the largest
    matrix; the caller's tensor is left standardised)."""
    train_x, val_x = train_x.float(), val_x.float()
    mean = train_x.mean(0)
    std = train_x.std(0, unbiased=False).clamp_min(1e-6)
    xs = train_x.sub_(mean).div_(std) if overwrite_train else (train_x - mean) / std
    vs = (val_x - mean) / std
    d = xs.shape[1]
    lo, hi = span
    l2, grid = _grid(xs, train_y, vs, val_y, num_classes, l2_grid, max_iter, reporter, lo, hi)
    # Refit the chosen strength from zero, recording loss and val accuracy every 10 iterations: the curve the UI shows.
    w = torch.zeros(num_classes, d, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=10, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)
    curve, steps, previous = [], max(1, math.ceil(max_iter / 10)), None
    for step in range(steps):
        loss = _lbfgs(w, b, xs, train_y, l2, 10, opt)
        with torch.no_grad():
            acc = _accuracy(vs @ w.T + b, val_y)
        curve.append({"epoch": step + 1, "train_loss": loss, "val_accuracy": acc, "phase": "head (L-BFGS x10)"})
        if reporter:
            reporter("head", lo + (hi - lo) * (0.6 + 0.4 * (step + 1) / steps), epoch=step + 1, epochs=steps,
                     loss=loss, val_accuracy=acc)
        if previous is not None and abs(previous - loss) < 1e-7:
            break  # converged
        previous = loss
    with torch.no_grad():
        weight = (w / std).float()
        bias = (b - (w * mean / std).sum(1)).float()
        val_acc = _accuracy(val_x.float() @ weight.T + bias, val_y)
    return HeadFit(weight.detach(), bias.detach(), l2, val_acc, grid, curve)


def set_head(model: torch.nn.Module, fit: HeadFit) -> None:
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.copy_(fit.weight.to(head.weight.device).view_as(head.weight))
        head.bias.copy_(fit.bias.to(head.bias.device))


class ImageInputs:
    """Training and evaluation batches from prepared uint8 images: normalised (and augmented) per batch."""

    def __init__(self, prepared: PreparedImages, norm: Normalizer, augment: bool = False) -> None:
        self.prepared, self.norm = prepared, norm
        self.labels = prepared.labels
        self.device = norm.device
        self.augment = _augmenter(prepared.images.shape[-1]) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx, train: bool = False) -> torch.Tensor:
        images = self.prepared.images[idx]
        if train and self.augment is not None:
            images = torch.stack([self.augment(img) for img in images])
        return self.norm(images)


class TensorInputs:
    """Batches of precomputed activations (the output of a frozen prefix, see prefix.py)."""

    def __init__(self, values: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        self.values, self.labels, self.device = values, labels, device

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx, train: bool = False) -> torch.Tensor:
        x = self.values[idx].to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: CUDA, or a CPU with AVX512-BF16 or AMX. There a bf16 pass is faster
    than fp32; elsewhere oneDNN emulates bf16, which is slower."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


@torch.no_grad()
def predict(model: torch.nn.Module, inputs, batch_size: int = 128, reporter: Optional[Reporter] = None,
            bf16: Optional[bool] = None) -> tuple[torch.Tensor, float]:
    """Logits for every input (model in eval mode) and the inputs per second it took. `bf16` runs the pass under
    bf16 autocast; None: on CUDA only (test predictions on a CPU stay fp32, so `tlcore predict` reproduces them)."""
    model.eval()
    outs = []
    use_autocast = inputs.device.type == "cuda" if bf16 is None else bf16
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=use_autocast):
        for s in range(0, len(inputs), batch_size):
            if reporter:
                reporter.cancel.check()
            outs.append(model(inputs.batch(slice(s, s + batch_size))).float().cpu())
    seconds = time.perf_counter() - start
    return torch.cat(outs), len(inputs) / max(seconds, 1e-9)


@dataclass
class NetworkFit:
    planned_epochs: int = 0
    steps_per_epoch: int = 0
    curve: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = float("nan")
    stopped_early: bool = False
    seconds: float = 0.0
    val_precision: str = "fp32"  # what the val passes ran in (they rank epochs; the test pass is separate)


FLAT_TOLERANCE = 0.01  # val accuracy points (as a fraction) that still count as flat


def still_rising(curve: list[dict], tolerance: float = FLAT_TOLERANCE) -> bool:
    """Whether a training run's val curve was still rising when it ended: the best val accuracy of its last quarter of
    epochs (at least 2) beats everything before by more than `tolerance`. A run stopped early has flattened by
    definition; one whose last epoch is the best by a hair has flattened too (a cosine schedule ends that way)."""
    vals = [p["val_accuracy"] for p in curve if p.get("epoch", 0) > 0 and p.get("val_accuracy") is not None]
    tail = max(2, len(vals) // 4)
    if len(vals) <= tail:
        return bool(vals)  # too short to tell: count it as rising
    return max(vals[-tail:]) > max(vals[:-tail]) + tolerance


STOP_BELOW_LR = 0.25  # early stopping waits until the learning rate has decayed below this share of its peak


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning rate's share of its peak at `step`: linear warmup, then cosine decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def early_stop_from(epochs: int, batches: int, warmup: int) -> int:
    """The first epoch after which early stopping may end a run: the end of the first epoch whose last step runs below
    STOP_BELOW_LR of the peak learning rate (two thirds into a cosine schedule). While the rate is high, val accuracy
    swings by points from epoch to epoch, and patience would take that for a plateau and stop a run that still
    improves."""
    for epoch in range(1, epochs + 1):
        if warmup_cosine(epoch * batches - 1, warmup, epochs * batches) < STOP_BELOW_LR:
            return epoch
    return epochs


@dataclass
class Plateau:
    """Early stopping when val accuracy is flat: `patience` epochs in a row without a rise of more than `tolerance`
    over the val accuracy of the last epoch that rose that much (Keras's and Lightning's min_delta; scratch uses
    FLAT_TOLERANCE, the point that `still_rising` calls flat), and only from `first_epoch` (see `early_stop_from`) and
    before the last epoch. A slow climb still counts once its gains add up to more than `tolerance`. With tolerance 0
    any new best resets patience. Which checkpoint is restored is separate: the best val epoch, however small its
    lead."""

    patience: int
    first_epoch: int
    last_epoch: int
    tolerance: float = 0.0
    reference: float = float("-inf")
    waited: int = 0

    def update(self, epoch: int, val_accuracy: float) -> bool:
        """Record an epoch's val accuracy; True when training should stop after it."""
        if val_accuracy > self.reference + self.tolerance:
            self.reference, self.waited = val_accuracy, 0
            return False
        self.waited += 1
        return self.waited >= self.patience and self.first_epoch <= epoch < self.last_epoch


def _param_groups(model: torch.nn.Module, spec: StrategySpec) -> list[dict]:
    """Head vs backbone learning rates; no weight decay on biases and norm scales (1-d tensors), as timm does."""
    heads = classifier_names(model)
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = any(name.startswith(h + ".") for h in heads)
        groups.setdefault((is_head, p.ndim <= 1), []).append(p)
    backbone_lr = spec.lr * (spec.backbone_lr_ratio if spec.kind == "fine-tune" else 1.0)
    return [{"params": ps, "lr": spec.lr if is_head else backbone_lr, "weight_decay": 0.0 if no_decay else
             spec.weight_decay, "name": ("head" if is_head else "backbone") + ("/no_decay" if no_decay else "")}
            for (is_head, no_decay), ps in sorted(groups.items())]


def _augmenter(size: int):

    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True), v2.RandomHorizontalFlip()])


def bn_statistics_frozen(spec: StrategySpec) -> bool:
    """Whether a network run keeps BatchNorm in eval mode while it trains (bn_policy 'frozen')."""
    return spec.bn_policy == "frozen"


def set_train_mode(model: torch.nn.Module, bn_frozen: bool) -> None:
    """Put `model` in the mode a network run trains it in: training mode, but with every BatchNorm layer in eval mode
    when `bn_frozen` (`bn_statistics_frozen(spec)`), so its running statistics stay those of pretraining. Used by
    `train_network` every epoch, and by `anatomy.strategy_view` to show which statistics a strategy updates."""
    model.train()
    if bn_frozen:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


class _BatchSampler:
    """Batches from consecutive shuffles of the training set; each shuffle's last ragged batch is dropped."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.order, self.pos = torch.randperm(n, generator=generator), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.order, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


def train_network(model: torch.nn.Module, spec: StrategySpec, train, val, reporter: Reporter, seed: int,
                  span: tuple[float, float] = (0.0, 1.0), evaluate_start: bool = False,
                  val_bf16: Optional[bool] = None) -> NetworkFit:
    """Train the trainable parameters on `train` inputs (ImageInputs or TensorInputs); early stopping on val accuracy;
    the best epoch's weights are restored.

    With `evaluate_start` (fine-tuning from an LP-FT head), the model as it starts is epoch 0: its val accuracy is
    measured before any optimizer step, recorded as epoch 0 of the curve, and it is a candidate for the restored
    checkpoint (a later epoch must beat it), so training never ends below its own start on val; patience counts from
    it. Without it (scratch, a fine-tune from a random head) there is no epoch 0: a random start is never worth
    keeping, and a val pass to show chance accuracy is not worth its time.

    Val passes run in bf16 where the device computes it natively (`val_bf16` None: `native_bf16`): they only rank
    epochs, and in fp32 they are a sizeable share of a long scratch run on a CPU. Training steps and the test pass
    stay fp32."""
    device = train.device
    model.to(device).to(memory_format=torch.channels_last)
    groups = _param_groups(model, spec)
    if not groups:
        raise RunFailed("No trainable parameters: check the strategy's stages setting.")
    # PyTorch's default implementation, not fused=True: fused is a few percent faster a step on CPU, but it changes
    # seeded results, and the same seed should give the same numbers as the figures already stored.
    optimizer = torch.optim.AdamW(groups)
    n = len(train)
    batch_size = min(spec.batch_size, n)
    batches = max(1, n // batch_size)  # an epoch drops the last ragged batch
    # Small data: an "epoch" becomes a round of at least min_steps / epochs steps (batches drawn from consecutive
    # shuffles), so a 50-image set gets enough optimizer steps without validating after every 2-step pass.
    batches = max(batches, math.ceil(spec.min_steps / spec.epochs))
    epochs = spec.epochs
    total_steps = epochs * batches
    warmup = max(1, int(spec.warmup_epochs * batches))
    plateau = Plateau(spec.patience, early_stop_from(epochs, batches, warmup), epochs, spec.min_delta)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total_steps))
    generator = torch.Generator().manual_seed(seed)
    use_autocast = device.type == "cuda"
    val_bf16 = native_bf16(device) if val_bf16 is None else val_bf16
    bn_frozen = bn_statistics_frozen(spec)

    sampler = _BatchSampler(n, batch_size, generator)
    fit = NetworkFit(planned_epochs=epochs, steps_per_epoch=batches, val_precision="bf16" if val_bf16 else "fp32")
    best_state = None
    start = time.perf_counter()
    lo, hi = span
    if evaluate_start:
        logits, _ = predict(model, val, reporter=reporter, bf16=val_bf16)
        val_acc = _accuracy(logits, val.labels)
        fit.curve.append({"epoch": 0, "train_loss": None, "val_accuracy": val_acc,
                          "val_loss": float(F.cross_entropy(logits, val.labels)), "lr": None,
                          "seconds": time.perf_counter() - start, "phase": spec.kind})
        reporter("epoch", lo, epoch=0, epochs=epochs, val_accuracy=val_acc, message="the start (LP-FT head)")
        fit.best_val_accuracy, fit.best_epoch = val_acc, 0
        best_state = copy.deepcopy(model.state_dict())
        plateau.update(0, val_acc)
    for epoch in range(1, epochs + 1):
        set_train_mode(model, bn_frozen)
        losses = []
        for b in range(batches):
            idx = sampler.next()
            x, y = train.batch(idx, train=True), train.labels[idx].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                loss = F.cross_entropy(model(x), y, label_smoothing=spec.label_smoothing)
            if not torch.isfinite(loss):
                raise RunFailed(f"The training loss became {loss.item()} at epoch {epoch}, batch {b + 1}. "
                                f"Lower the learning rate (now {spec.lr:g}) or check the data.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach().item())
            done = ((epoch - 1) * batches + b + 1) / total_steps
            reporter("epoch", lo + (hi - lo) * done, epoch=epoch, epochs=epochs, batch=b + 1, batches=batches,
                     loss=losses[-1])
        logits, _ = predict(model, val, reporter=reporter, bf16=val_bf16)
        val_acc = _accuracy(logits, val.labels)
        val_loss = float(F.cross_entropy(logits, val.labels))
        fit.curve.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_accuracy": val_acc,
                          "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"],
                          "seconds": time.perf_counter() - start, "phase": spec.kind})
        fit.epochs_run = epoch
        reporter("epoch", lo + (hi - lo) * epoch / epochs, epoch=epoch, epochs=epochs,
                 loss=float(np.mean(losses)), val_accuracy=val_acc)
        if best_state is None or val_acc > fit.best_val_accuracy:
            fit.best_val_accuracy, fit.best_epoch = val_acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        if plateau.update(epoch, val_acc):
            fit.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    fit.seconds = time.perf_counter() - start
    return fit
