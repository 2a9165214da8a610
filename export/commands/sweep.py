"""``python -m export sweep``: train and export every activation with one recipe, write a report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from export.commands import HelpFormatter
from export.commands.build import finite_float, positive_int
from export.errors import ExportError
from export.resnet import ARCHITECTURES
from export.sweep import (
    CONFIG_FILE,
    SweepConfig,
    check_recipe,
    describe_machine,
    load_runs,
    resolve_activations,
    retime_sweep,
    run_sweep,
    selected,
)
from export.sweep_report import REPORT_FILE, write_report

_MODES = ("--retime", "--report-only")


def environment() -> str:
    machine = describe_machine()
    return (
        f"{machine['cpu']} (torch CPU capability {machine['cpu_capability']}), "
        f"{torch.get_num_threads()} torch threads, {machine['software']}, "
        f"git commit {machine['git_commit']}, report written {machine['date']}"
    )


def recorded_environment(out: Path) -> str:
    """The environment paragraph of the report already in ``out`` (written when it ran)."""
    report = out / REPORT_FILE
    if not report.is_file():
        return ""
    text = report.read_text(encoding="utf-8")
    _, found, rest = text.partition("\n## Environment\n\n")
    return rest.split("\n\n", 1)[0].strip() if found else ""


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
    argv = [a for a in getattr(args, "argv", sys.argv[1:]) if a not in _MODES]
    command = shlex.join(["python", "-m", "export", *argv])
    if args.report_only:
        if not (args.out / CONFIG_FILE).is_file():
            raise ExportError(f"{args.out} holds no sweep to report on (no {CONFIG_FILE})")
        check_recipe(args.out, config)
        env = recorded_environment(args.out)
        runs = selected(load_runs(args.out), config)
    else:
        sweep = retime_sweep if args.retime else run_sweep
        runs = selected(sweep(config, args.out), config)
        env = environment()
    summaries = write_report(args.out, config, runs, command, env)
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
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="do not train or time: rewrite the report of the existing sweep in --out from its "
        "runs.jsonl and latency.json (keeping the environment the report recorded)",
    )
    parser.set_defaults(func=run)
