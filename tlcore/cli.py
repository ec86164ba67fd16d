"""Command line: `python -m tlcore compare ...` (and `datasets`, `backbones`). Errors print as one readable message;
Ctrl-C cancels cleanly and whatever finished is still printed and written."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from typing import Optional, Sequence

import pandas as pd

from .backbone import DEFAULT_BACKBONE
from .errors import TlcoreError
from .experiment import ExperimentConfig, compare
from .presets import PRESETS, build_config
from .progress import CancelToken, ProgressEvent
from .results import ComparisonResult
from .strategies import KINDS

EPILOG = """examples:
  python -m tlcore compare                                   # the built-in default: fashion-mnist, 100 a class
  python -m tlcore compare --dataset path/to/photos --per-class 50 --image-size 128 --out results/
  python -m tlcore compare --strategies fine-tune --ft-stages all --no-lp-ft --epochs 10
  python -m tlcore datasets                                  # built-in datasets and whether they are here
"""


def _stages(value: str):
    return value if value == "all" else int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tlcore", description="Compare feature extraction, fine-tuning "
                                     "and training from scratch on the same images.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")

    c = sub.add_parser("compare", help="run strategies side by side and print a table",
                       description="Run the chosen strategies on the same split and test set; print a side-by-side "
                       "table and write JSON and CSV. With no options it runs the built-in default.",
                       epilog=EPILOG, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = c.add_argument_group("data")
    data.add_argument("--dataset", default="fashion-mnist",
                      help="built-in name (see `datasets`) or a folder of class sub-folders, optionally with "
                      "train/ val/ test/ split folders")
    data.add_argument("--per-class", type=int, default=None,
                      help="training images a class (nested seeded subset); 0 = all; default: the preset's (100)")
    data.add_argument("--val-fraction", type=float, default=0.1, help="share of each class drawn for validation "
                      "when there is no val/ folder")
    data.add_argument("--test-fraction", type=float, default=0.2, help="share of each class drawn for the test set "
                      "when there is no test/ folder")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split (fixed across runs)")
    data.add_argument("--image-size", type=int, default=None,
                      help="input size in pixels; default: about 1.75x the images' native size, 48 to 128")

    model = c.add_argument_group("backbone")
    model.add_argument("--backbone", default=DEFAULT_BACKBONE, help="any timm model name")
    model.add_argument("--weights", default="pretrained", help="'pretrained' (packaged offline weights, then the "
                       "timm hub), 'none', or a path to a .pth/.safetensors state_dict")

    strat = c.add_argument_group("strategies")
    strat.add_argument("--strategies", default=",".join(KINDS), help=f"comma-separated, from {', '.join(KINDS)}")
    strat.add_argument("--epochs", type=int, default=None, help="max epochs for fine-tune (default 6)")
    strat.add_argument("--scratch-epochs", type=int, default=None, help="max epochs for scratch (default 20)")
    strat.add_argument("--lr", type=float, default=None, help="fine-tune head learning rate (default 1e-3)")
    strat.add_argument("--scratch-lr", type=float, default=None, help="scratch learning rate (default 3e-3)")
    strat.add_argument("--batch-size", type=int, default=None, help="training batch size (default 32)")
    strat.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    strat.add_argument("--ft-stages", type=_stages, default=None,
                       help="fine-tune: top timm stage groups to train, or 'all' (default 2)")
    strat.add_argument("--lp-ft", dest="lp_ft", action="store_true", default=None,
                       help="fine-tune: fit the head on frozen features first (default on)")
    strat.add_argument("--no-lp-ft", dest="lp_ft", action="store_false")
    strat.add_argument("--backbone-lr-ratio", type=float, default=None,
                       help="fine-tune: backbone lr = head lr x this (default 0.1)")
    strat.add_argument("--bn-policy", choices=["train", "frozen"], default=None,
                       help="fine-tune: BatchNorm statistics in trainable stages (default frozen)")
    strat.add_argument("--augment", action="store_true", default=None, help="light augmentation (crop + flip)")

    run = c.add_argument_group("run")
    run.add_argument("--preset", choices=list(PRESETS), default="default",
                     help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    run.add_argument("--seed", type=int, default=0, help="seed for the subset, initialisation and batch order")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    run.add_argument("--out", default=None, help="folder for comparison.json and comparison.csv")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("datasets", help="list built-in datasets and whether they can be loaded now")
    b = sub.add_parser("backbones", help="list timm backbones and where their weights can come from")
    b.add_argument("--filter", default="", help="wildcard, e.g. '*efficientnet*'")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The preset, then every option given on the command line."""
    common = {"batch_size": args.batch_size, "patience": args.patience, "augment": args.augment}
    options = {
        "fine-tune": {**common, "epochs": args.epochs, "lr": args.lr, "stages": args.ft_stages, "lp_ft": args.lp_ft,
                      "backbone_lr_ratio": args.backbone_lr_ratio, "bn_policy": args.bn_policy},
        "scratch": {**common, "epochs": args.scratch_epochs, "lr": args.scratch_lr},
    }
    options = {kind: {k: v for k, v in opts.items() if v is not None} for kind, opts in options.items()}
    config = build_config(args.preset, dataset=args.dataset, backbone=args.backbone, weights=args.weights,
                          strategies=[s for s in args.strategies.split(",") if s.strip()],
                          per_class=args.per_class, image_size=args.image_size, seed=args.seed, device=args.device,
                          strategy_options=options)
    config.dataset = replace(config.dataset, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                             split_seed=args.split_seed)
    return config


def format_table(result: ComparisonResult) -> str:
    rows = []
    for r in result.runs:
        ok = r.accuracy is not None
        rows.append({
            "strategy": r.strategy,
            "status": r.status,
            "accuracy": f"{r.accuracy:.3f} [{r.accuracy_low:.3f}, {r.accuracy_high:.3f}]" if ok else "-",
            "macro-F1": f"{r.macro_f1:.3f}" if ok else "-",
            "train s": f"{r.train_seconds:.1f}" if r.train_seconds is not None else "-",
            "img/s": f"{r.throughput_ips:.0f}" if r.throughput_ips else "-",
            "trainable": f"{r.trainable_params:,}" if r.trainable_params is not None else "-",
            "total": f"{r.total_params:,}" if r.total_params else "-",
            "peak MB": f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb else "-",
            "epochs": f"{r.epochs_run} (best {r.best_epoch})" if r.kind != "feature-extraction" else "L-BFGS",
        })
    table = pd.DataFrame(rows).to_string(index=False)
    notes = [f"  {r.strategy}: {r.error}" for r in result.runs if r.error]
    ds = result.dataset
    head = (f"dataset {ds['name']} | {len(ds['classes'])} classes | train {ds['sizes']['train']} "
            f"(per class {ds['per_class'] or 'all'}) | val {ds['sizes']['val']} | test {ds['sizes']['test']} | "
            f"backbone {result.config['backbone']['name']} | image {result.config['image_size']} px | "
            f"seed {result.config['seed']} | wall {result.wall_seconds:.1f} s")
    return "\n".join([head, table] + (["problems:"] + notes if notes else []))


class _Bars:
    """One tqdm bar per strategy, fed by progress events."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bars: dict[str, object] = {}

    def __call__(self, event: ProgressEvent) -> None:
        bar = self.bars.get(event.strategy)
        if bar is None:
            bar = self.bars[event.strategy] = self._tqdm(total=1000, desc=f"{event.strategy:>18}", leave=True,
                                                         file=sys.stderr, bar_format="{desc} {percentage:3.0f}%|"
                                                         "{bar}| {elapsed}<{remaining} {postfix}")
        bar.n = int(event.fraction * 1000)
        post = event.phase + (f" ep {event.epoch}/{event.epochs}" if event.epochs else "")
        if event.val_accuracy is not None:
            post += f" val {event.val_accuracy:.3f}"
        bar.set_postfix_str(post, refresh=False)
        bar.refresh()
        if event.phase == "done":
            bar.close()


def cmd_compare(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    cancel = CancelToken()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        print("\ncancelling after the current batch (Ctrl-C again to abort)...", file=sys.stderr)
        cancel.cancel()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        result = compare(config, callbacks=[] if args.no_progress else [_Bars()], cancel=cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(format_table(result))
    if args.out:
        json_path, csv_path = result.save(args.out)
        print(f"wrote {json_path} and {csv_path}")
    if any(r.status == "cancelled" for r in result.runs):
        return 130
    return 1 if any(r.status == "failed" for r in result.runs) else 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .builtin import BUILTIN_DATASETS, builtin_available

    for name, info in BUILTIN_DATASETS.items():
        why = builtin_available(name)
        print(f"{name:20} {'ready' if why is None else why:45} {info.description}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    import timm

    from .weights import PACKAGED_WEIGHTS, weights_availability

    names = timm.list_models(args.filter or "*") if args.filter else list(PACKAGED_WEIGHTS)
    for name in names:
        print(f"{name:40} {weights_availability(name)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return {"compare": cmd_compare, "datasets": cmd_datasets, "backbones": cmd_backbones}[args.command](args)
    except TlcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
