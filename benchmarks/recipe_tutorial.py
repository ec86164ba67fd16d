"""The hand-written baseline: PyTorch's "Transfer learning for computer vision" tutorial recipe, on the same Lite0
weights and images tlcore uses, for the three strategies. bench_recipe.py times it against `python -m tlcore compare`.

    python benchmarks/recipe_tutorial.py --data FOLDER [--size 48] [--epochs 5]

FOLDER holds train/ val/ test/, each with one sub-folder per class. As in the tutorial
(https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html): torchvision ImageFolder + DataLoader (batch
32, shuffled), RandomResizedCrop + horizontal flip for training and resize + centre crop for evaluation, SGD (lr 0.001,
momentum 0.9), StepLR (step 7, gamma 0.1), `model.train()` in the training phase (BatchNorm statistics update, frozen
backbone included), the best val epoch's weights kept, the backbone re-run on every batch. Only the sizes differ: 48 px
instead of 224 and 5 epochs instead of 25 (the issue's setting); workers 0, because 2 vCPUs have no core to spare for
loader processes. Prints one JSON line per strategy and a total.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from tlcore.engine.backbone import BackboneSpec, load_template  # the same packaged weights, offline

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # Lite0's are 0.5/0.5; the tutorial hard-codes ImageNet's


def loaders(root: Path, size: int, mean, std):
    rgb = transforms.Lambda(lambda im: im.convert("RGB"))
    train_tf = transforms.Compose([rgb, transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    eval_tf = transforms.Compose([rgb, transforms.Resize(int(size / 0.875)), transforms.CenterCrop(size),
                                  transforms.ToTensor(), transforms.Normalize(mean, std)])
    sets = {s: datasets.ImageFolder(str(root / s), train_tf if s == "train" else eval_tf)
            for s in ("train", "val", "test")}
    return {s: torch.utils.data.DataLoader(d, batch_size=32, shuffle=(s == "train"), num_workers=0)
            for s, d in sets.items()}, len(sets["train"].classes)


def evaluate(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def train_model(model, params, data, epochs: int) -> tuple[float, float]:
    """The tutorial's train_model: train phase then val phase each epoch, best val weights kept; returns (best val,
    test accuracy)."""
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        for x, y in data["train"]:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        scheduler.step()
        acc = evaluate(model, data["val"])
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best, evaluate(model, data["test"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    template, _ = load_template(BackboneSpec(args.backbone, "pretrained"))
    data, classes = loaders(Path(args.data), args.size, MEAN, STD)
    results = {}
    for strategy in ("feature-extraction", "fine-tune", "scratch"):
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        if strategy == "scratch":
            import timm

            model = timm.create_model(args.backbone, pretrained=False, num_classes=classes)
        else:
            model = copy.deepcopy(template)
            model.reset_classifier(classes)
        if strategy == "feature-extraction":
            for p in model.parameters():
                p.requires_grad = False
            for p in model.get_classifier().parameters():
                p.requires_grad = True
        params = [p for p in model.parameters() if p.requires_grad]
        val, test = train_model(model, params, data, args.epochs)
        results[strategy] = {"strategy": strategy, "val_accuracy": round(val, 4), "accuracy": round(test, 4),
                             "seconds": round(time.perf_counter() - t0, 2)}
        print(json.dumps(results[strategy]), flush=True)
    print(json.dumps({"total_seconds": round(time.perf_counter() - start, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
