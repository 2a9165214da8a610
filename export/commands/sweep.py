"""``python -m export sweep``: train and export every activation with one recipe, write a report."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

import onnxruntime
import torch

from export.commands import HelpFormatter
from export.commands.build import finite_float, positive_int
from export.resnet import ARCHITECTURES
from export.sweep import SweepConfig, resolve_activations, retime_sweep, run_sweep, selected
from export.sweep_report import write_report


def environment() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def run(args: argparse.Namespace) -> int:
    config = SweepConfig(
        arch=args.arch,
        dataset=args.dataset,
        activations=resolve_activations(args.activations),
        seeds=args.seeds,
        epochs=args.epochs,
        image_size=args.image_size,
        width=args.width,
        batch_size=args.batch_size,
        lr=args.lr,
        latency_runs=args.latency_runs,
        threads=args.threads,
    )
    sweep = retime_sweep if args.retime else run_sweep
    runs = selected(sweep(config, args.out), config)
    argv = [a for a in getattr(args, "argv", sys.argv[1:]) if a != "--retime"]
    command = shlex.join(["python", "-m", "export", *argv])
    summaries = write_report(args.out, config, runs, command, environment())
    trained = sum(1 for s in summaries if s.status == "ok")
    print(
        f"sweep report: {args.out / 'README.md'} ({trained} of {len(summaries)} activations "
        f"trained, {len(runs)} runs)"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = SweepConfig()
    parser = subparsers.add_parser(
        "sweep",
        help="train and export every activation with one recipe over several seeds; write a report",
        description="Train one model per activation and seed with the same recipe; export the "
        "first seed's model of each activation (checked: onnx.checker + parity) and time it in "
        "onnxruntime; then write a report directory: README.md "
        "(val accuracy mean ± std, epochs to 90 %, parameters, onnxruntime latency per image, "
        "the theory's predictions checked), accuracy_per_epoch.png and latency.png. Runs are "
        "saved as they finish (runs.jsonl): re-running the same command resumes.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--arch", default=defaults.arch, help=f"one of {', '.join(ARCHITECTURES)}")
    parser.add_argument(
        "--dataset", default=defaults.dataset, help="digits, shapes or imagefolder:PATH"
    )
    parser.add_argument(
        "--activations",
        default="all",
        help="'all' or a comma-separated list, e.g. relu,gelu,identity",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=defaults.seeds, help="seeds per activation (0, 1, …)"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=defaults.epochs, help="training epochs per run"
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=defaults.image_size,
        help="square network input in pixels",
    )
    parser.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="channels of the first stage (default: the architecture's)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=defaults.batch_size, help="batch size"
    )
    parser.add_argument(
        "--lr",
        type=finite_float(0.0, low_open=True),
        default=defaults.lr,
        help="peak learning rate (SGD, one-cycle)",
    )
    parser.add_argument(
        "--latency-runs",
        type=positive_int,
        default=defaults.latency_runs,
        help="timed onnxruntime runs per model",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=defaults.threads, help="torch threads for training"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/sweep"),
        help="report directory (created; an existing sweep there is resumed)",
    )
    parser.add_argument(
        "--retime",
        action="store_true",
        help="do not train: re-export every activation of the existing sweep in --out with the "
        "current exporter and measure its latency again (latency depends on the graph, not the "
        "weights), then rewrite the report",
    )
    parser.set_defaults(func=run)
