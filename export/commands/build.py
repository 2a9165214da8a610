"""``python -m export build``: train (or load) a ResNet, export it to ONNX and publish it.

Other modules can extend the command without editing it: append a ``BuildExtension`` to
``BUILD_EXTENSIONS`` (its ``add_arguments`` adds flags, its ``check`` validates them before
anything is built, its ``after_build`` runs once the fp32 model is published, e.g. to publish an
INT8 variant).

Every check that needs no training runs first (argument types, ``prepare_build``, the
``--save-weights`` path, each extension's ``check``): a bad option costs no training time.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from export.build import BuildRequest, BuildResult, build_model, prepare_build
from export.commands import HelpFormatter
from export.data import DATASETS
from export.errors import ExportError, Interrupted
from export.resnet import ARCHITECTURES
from export.train import TrainConfig
from export.weights import check_weights_path, save_weights
from service.activations import NETWORK_ACTIVATIONS, ParamValue


def _no_check(args: argparse.Namespace, request: BuildRequest) -> None:
    return None


@dataclass(frozen=True)
class BuildExtension:
    add_arguments: Callable[[argparse.ArgumentParser], None]
    after_build: Callable[[argparse.Namespace, BuildResult], None]
    check: Callable[[argparse.Namespace, BuildRequest], None] = _no_check
    """Runs before anything is trained or written (the request's activation, name and image size
    are resolved by then); raises an ExportError for flags that ``after_build`` could not
    honour, so a build never publishes half of what was asked."""


BUILD_EXTENSIONS: list[BuildExtension] = []


def parse_param(text: str) -> tuple[str, ParamValue]:
    """'alpha=0.5' -> ('alpha', 0.5); numbers become int/float, anything else stays a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip() or not raw.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    value: ParamValue
    try:
        value = int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            value = raw.strip()
    return name.strip(), value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


MAX_SEED = 2**32 - 1


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {MAX_SEED}], got {text!r}")
    return value


def finite_float(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval (NaN and ±inf are refused)."""
    allowed = (
        f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        if math.isfinite(high)
        else f"{'>' if low_open else '≥'} {low:g}"
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if (
            not math.isfinite(value)
            or value < low
            or value > high
            or (low_open and value == low)
            or (high_open and value == high)
        ):
            raise argparse.ArgumentTypeError(f"expected a finite number {allowed}, got {text!r}")
        return value

    return parse


def request_from_args(args: argparse.Namespace) -> BuildRequest:
    dataset = args.dataset
    if dataset is None:
        dataset = None if args.weights else "digits"
    elif dataset == "none":
        dataset = None
    lr = args.lr if args.lr is not None else (0.1 if args.optimizer == "sgd" else 2e-3)
    weight_decay = args.weight_decay
    if weight_decay is None:
        weight_decay = 5e-4 if args.optimizer == "sgd" else 0.05
    return BuildRequest(
        arch=args.arch,
        activation=args.activation,
        activation_params=dict(args.act_param or []),
        dataset=dataset,
        image_size=args.image_size,
        width=args.width,
        weights=args.weights,
        labels=args.labels,
        normalise=args.normalise,
        val_fraction=args.val_fraction,
        shapes_per_class=args.shapes_per_class,
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=lr,
            weight_decay=weight_decay,
            schedule=args.schedule,
            label_smoothing=args.label_smoothing,
            augment=not args.no_augment,
            seed=args.seed,
        ),
        name=args.name,
        version=args.version,
        repository=args.models_dir,
        progress=not args.quiet,
        command=shlex.join(["python", "-m", "export", *getattr(args, "argv", [])]),
    )


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.save_weights is not None:
        check_weights_path(args.save_weights)
    prepared = prepare_build(request_from_args(args))
    for extension in BUILD_EXTENSIONS:
        extension.check(args, prepared.request)
    result = build_model(prepared)
    try:
        _after_publish(args, result)
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:
        raise Interrupted(
            f"{result.published.name} version {result.published.version} was published; "
            "the steps after it were not finished"
        ) from exc
    return 0


def _after_publish(args: argparse.Namespace, result: BuildResult) -> None:
    published = result.published
    accuracy = published.card.val_accuracy
    print(
        f"published {published.name} version {published.version}: {published.path} "
        f"(sha256 {published.sha256[:12]}…, {published.card.parameters:,} parameters"
        + (f", val accuracy {accuracy:.4f}" if accuracy is not None else "")
        + ")"
    )
    if args.save_weights is not None:
        activation = result.model.activation
        try:
            save_weights(
                result.model,
                args.save_weights.expanduser(),
                activation=activation.name,
                activation_params=activation.params,
                extra={"actlab.architecture": args.arch.lower()},
            )
        except ExportError as exc:
            raise ExportError(
                f"{published.name} version {published.version} was published, but --save-weights "
                f"failed: {exc}"
            ) from exc
        print(f"saved weights to {args.save_weights} (activation {activation.name})")
    for extension in BUILD_EXTENSIONS:
        extension.after_build(args, result)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="train or load a ResNet, export it to ONNX and publish it",
        description="Build one classifier: load data, build the ResNet with the chosen "
        "activation (optionally from a weights file), train it, export it to ONNX with its "
        "model card, check it (onnx.checker, onnxruntime-vs-torch parity) and publish it "
        "atomically as <models-dir>/<name>/<version>/model.onnx. Nothing is written if any step "
        "fails.",
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--arch", default="resnet20", help=f"architecture: {', '.join(ARCHITECTURES)}"
    )
    model.add_argument(
        "--activation",
        default=None,
        help=f"activation at every site: {', '.join(NETWORK_ACTIVATIONS)} "
        "(see `python -m export activations`) (default: the activation the --weights file "
        "was trained with, with its recorded parameters; PReLU slopes in it mean prelu; else "
        "relu)",
    )
    model.add_argument(
        "--act-param",
        action="append",
        type=parse_param,
        metavar="NAME=VALUE",
        help="activation parameter, repeatable (e.g. --act-param alpha=0.5)",
    )
    model.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="channels of the first stage (default: 16 CIFAR-style, 64 ImageNet-style)",
    )
    model.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="start from a torchvision/timm ResNet state dict (.pth/.pt loaded "
        "with weights_only=True, or .safetensors); if its class count differs from the labels' "
        "the head is newly initialised, which needs training (--epochs > 0)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default=None,
        help=f"{', '.join(DATASETS)} or none (default: digits, or none with --weights)",
    )
    data.add_argument(
        "--labels",
        default=None,
        help="class names: 'imagenet' (the shipped 1000) or a file, one per line",
    )
    data.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="square network input in pixels (default: 32 CIFAR-style, 224 ImageNet-style)",
    )
    data.add_argument(
        "--normalise",
        choices=("dataset", "imagenet"),
        default=None,
        help="mean/std: of the training split, or ImageNet's (default: imagenet "
        "with --weights or without a dataset, else dataset)",
    )
    data.add_argument(
        "--val-fraction",
        type=finite_float(0.0, 1.0, low_open=True, high_open=True),
        default=0.2,
        help="fraction of each class held out for validation (stratified)",
    )
    data.add_argument(
        "--shapes-per-class",
        type=positive_int,
        default=300,
        help="images per class for the shapes dataset",
    )
    train = parser.add_argument_group("training")
    train.add_argument(
        "--epochs",
        type=non_negative_int,
        default=15,
        help="training epochs; 0 exports the model as it is",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=128,
        help="training batch size (images per optimiser step)",
    )
    train.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="SGD with Nesterov momentum 0.9, or AdamW",
    )
    train.add_argument(
        "--lr",
        type=finite_float(0.0, low_open=True),
        default=None,
        help="peak learning rate (default: 0.1 for sgd, 2e-3 for adamw)",
    )
    train.add_argument(
        "--weight-decay",
        type=finite_float(0.0),
        default=None,
        help="weight decay on conv/linear weights (default: 5e-4 sgd, 0.05 adamw)",
    )
    train.add_argument(
        "--schedule",
        choices=("onecycle", "cosine", "constant"),
        default="onecycle",
        help="learning-rate schedule",
    )
    train.add_argument(
        "--label-smoothing",
        type=finite_float(0.0, 1.0, high_open=True),
        default=0.0,
        help="label smoothing for the cross-entropy loss (0 = off)",
    )
    train.add_argument(
        "--no-augment", action="store_true", help="disable random translations and flips"
    )
    train.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        help="seed for initialisation, split, shuffling and augmentation",
    )
    train.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="torch CPU threads (0 = torch's default); the card's recorded command gets the "
        "count the build ran with, as it changes the trained weights",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--name",
        default=None,
        help="model name in the repository (default: <arch>-<activation>-<dataset>, with the "
        "catalogue name of the activation and each --act-param that differs from its default, "
        "e.g. resnet8-leaky_relu-negative_slope0.2-shapes)",
    )
    out.add_argument(
        "--version",
        type=positive_int,
        default=None,
        help="version to publish (default: the next free one; never overwrites)",
    )
    out.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("ACTLAB_MODELS_DIR", "models")),
        help="model repository (default: $ACTLAB_MODELS_DIR or models)",
    )
    out.add_argument(
        "--save-weights",
        type=Path,
        default=None,
        metavar="FILE.safetensors",
        help="also save the trained weights after a successful publish (safetensors, with "
        "the activation and its parameters recorded: a later build from them uses them unless "
        "--activation says otherwise, and warns if it does); the path is checked before building",
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    for extension in BUILD_EXTENSIONS:
        extension.add_arguments(parser)
    parser.set_defaults(func=run)
