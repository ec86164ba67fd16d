"""Training: a linear head on cached features (full-batch L-BFGS, L2 picked on val), and the network loop for
fine-tuning and scratch (AdamW, per-group learning rates, warmup + cosine, early stopping with the best checkpoint
restored, NaN guard, cancellation between batches)."""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
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
from tlcore.engine.precision import native_bf16, train_bf16
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
    label-issue search needs). None when a class has fewer images than folds.

    The folds' heads are solved as one problem, the sum of their objectives (each fold's mean cross-entropy over its
    training rows, on its own standardisation, plus its L2 term): they share no parameter, so its minimum is each
    head's own, and an evaluation reads the features once for all folds instead of once a fold (the cost of these
    skinny products is reading the features; benchmarks/bench_oof.py times it against one L-BFGS a fold). Where
    the shared solver stops depends on every fold, so an image's label reaches its own head only through that point,
    by less than the solver's tolerance."""
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
    n, d = x.shape
    trains = torch.stack([fold != k for k in range(folds)])  # folds x n
    mean = torch.stack([x[t].mean(0) for t in trains])
    std = torch.stack([x[t].std(0, unbiased=False).clamp_min(1e-6) for t in trains])
    share = (trains / trains.sum(1, keepdim=True)).T  # n x folds: each training row's weight in its fold's mean
    w = torch.zeros(folds, num_classes, d, requires_grad=True)
    b = torch.zeros(folds, num_classes, requires_grad=True)

    def logits() -> torch.Tensor:  # n x folds x classes: every fold's head on every row, its standardisation folded in
        scaled = w / std[:, None, :]
        bias = b - (scaled * mean[:, None, :]).sum(-1)
        return (x @ scaled.reshape(folds * num_classes, d).T).view(n, folds, num_classes) + bias

    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        ce = F.cross_entropy(logits().permute(0, 2, 1), y[:, None].expand(n, folds), reduction="none")
        loss = (ce * share).sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return torch.softmax(logits()[torch.arange(n), fold], dim=1)


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
    """Training and evaluation batches from prepared uint8 images: normalised (and augmented) per batch.

    A batch has a host stage (`host_batch`: the rows read, in pinned memory for a GPU) and a device stage
    (`to_device`), so a GPU's training loop can read the next batch while the current one computes. On a CPU,
    augmentation is torchvision's, image by image; on a GPU it is the same crop and flip drawn per image and applied
    to the whole batch at once on the device (`batch_crop_flip`)."""

    def __init__(self, prepared: PreparedImages, norm: Normalizer, augment: bool = False) -> None:
        self.prepared, self.norm = prepared, norm
        self.labels = prepared.labels
        self.device = norm.device
        self.augment = _augmenter(prepared.images.shape[-1]) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def host_batch(self, idx, train: bool = False) -> torch.Tensor:
        images = self.prepared.images[idx]
        if self.device.type != "cuda":
            if train and self.augment is not None:
                images = torch.stack([self.augment(img) for img in images])
            return images
        return images.pin_memory()

    def to_device(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        if self.device.type == "cuda" and train and self.augment is not None:
            x = images.to(self.device, non_blocking=True).float()
            return self.norm(batch_crop_flip(x).round_().clamp_(0, 255))
        return self.norm(images)

    def batch(self, idx, train: bool = False) -> torch.Tensor:
        return self.to_device(self.host_batch(idx, train), train)


class TensorInputs:
    """Batches of precomputed activations (the output of a frozen prefix, see prefix.py)."""

    def __init__(self, values: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        self.values, self.labels, self.device = values, labels, device

    def __len__(self) -> int:
        return len(self.labels)

    def host_batch(self, idx, train: bool = False) -> torch.Tensor:
        x = self.values[idx]
        return x.pin_memory() if self.device.type == "cuda" else x

    def to_device(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x

    def batch(self, idx, train: bool = False) -> torch.Tensor:
        return self.to_device(self.host_batch(idx, train), train)


@torch.no_grad()
def predict(model: torch.nn.Module, inputs, batch_size: int = 128, reporter: Optional[Reporter] = None,
            bf16: bool = False) -> tuple[torch.Tensor, float]:
    """Logits for every input (model in eval mode) and the inputs per second it took. `bf16` runs the pass under
    bf16 autocast, for val passes only: anything scored is fp32 (tlcore.engine.precision)."""
    model.eval()
    outs = []
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
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


def batch_crop_flip(x: torch.Tensor, scale: tuple[float, float] = (0.7, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: Optional[torch.Generator] = None,
                    ) -> torch.Tensor:
    """`_augmenter`'s random resized crop and horizontal flip for a whole float batch (N, C, H, W) on its device, in
    one resampling: a crop of `scale` of the area and `ratio` of aspect, drawn per image, as an affine grid."""
    n, device = len(x), x.device
    rand = torch.rand(n, 5, generator=generator).to(device)
    area = scale[0] + (scale[1] - scale[0]) * rand[:, 0]
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand[:, 1]
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # the crop's width and height, as fractions of the image's
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * rand[:, 2] - 1)  # the crop's centre, in [-1, 1] coordinates, inside the image
    cy = (1 - h) * (2 * rand[:, 3] - 1)
    flip = torch.where(rand[:, 4] < 0.5, -1.0, 1.0).to(device)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


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


GPU_CHECK_EVERY = 25  # training steps between looks at the loss on a GPU (each look waits for the GPU)


class _Feed:
    """The training batches, in the sampler's order. On a GPU, the next batch's host stage (rows read, pinned) runs
    in a thread while the current step computes; elsewhere each batch is made when asked, as before the feed
    existed, so CPU runs keep their numbers."""

    def __init__(self, inputs, sampler: "_BatchSampler", ahead: bool) -> None:
        self.inputs, self.sampler = inputs, sampler
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tlcore-feed") if ahead else None
        self._next = self._submit() if ahead else None

    def _host(self, idx):
        return idx, self.inputs.host_batch(idx, train=True)

    def _submit(self):
        return self._pool.submit(self._host, self.sampler.next())

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pool is None:
            idx, host = self._host(self.sampler.next())
        else:
            idx, host = self._next.result()
            self._next = self._submit()
        device = self.inputs.device
        return self.inputs.to_device(host, train=True), self.inputs.labels[idx].to(device, non_blocking=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


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

    Precision follows tlcore.engine.precision: training steps in bf16 on a GPU that computes it natively, fp32
    elsewhere; val passes in bf16 where the device computes it natively (`val_bf16` None: `native_bf16`): they only
    rank epochs, and in fp32 they are a sizeable share of a long scratch run on a CPU."""
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
    use_autocast = train_bf16(device)
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
    # A GPU runs ahead of the host until something asks for a number: there the loss is looked at every
    # GPU_CHECK_EVERY steps (and at the end of each epoch), and the next batch is read while this one computes.
    check_every = GPU_CHECK_EVERY if device.type == "cuda" else 1
    feed = _Feed(train, sampler, device.type == "cuda")
    try:
        for epoch in range(1, epochs + 1):
            set_train_mode(model, bn_frozen)
            losses: list[torch.Tensor] = []
            checked = 0
            for b in range(batches):
                x, y = feed.next()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                    loss = F.cross_entropy(model(x), y, label_smoothing=spec.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.detach())
                if (b + 1) % check_every and b + 1 < batches:
                    continue
                recent = torch.stack(losses[checked:]).float().cpu()
                bad = (~torch.isfinite(recent)).nonzero()
                if len(bad):
                    at = checked + int(bad[0])
                    raise RunFailed(f"The training loss became {float(recent[int(bad[0])])} at epoch {epoch}, batch "
                                    f"{at + 1}. Lower the learning rate (now {spec.lr:g}) or check the data.")
                checked = len(losses)
                done = ((epoch - 1) * batches + b + 1) / total_steps
                reporter("epoch", lo + (hi - lo) * done, epoch=epoch, epochs=epochs, batch=b + 1, batches=batches,
                         loss=float(recent[-1]))
            logits, _ = predict(model, val, reporter=reporter, bf16=val_bf16)
            val_acc = _accuracy(logits, val.labels)
            val_loss = float(F.cross_entropy(logits, val.labels))
            train_loss = float(np.mean(torch.stack(losses).float().cpu().numpy().astype(np.float64)))
            fit.curve.append({"epoch": epoch, "train_loss": train_loss, "val_accuracy": val_acc,
                              "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"],
                              "seconds": time.perf_counter() - start, "phase": spec.kind})
            fit.epochs_run = epoch
            reporter("epoch", lo + (hi - lo) * epoch / epochs, epoch=epoch, epochs=epochs,
                     loss=train_loss, val_accuracy=val_acc)
            if best_state is None or val_acc > fit.best_val_accuracy:
                fit.best_val_accuracy, fit.best_epoch = val_acc, epoch
                best_state = copy.deepcopy(model.state_dict())
            if plateau.update(epoch, val_acc):
                fit.stopped_early = True
                break
    finally:
        feed.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    fit.seconds = time.perf_counter() - start
    return fit
