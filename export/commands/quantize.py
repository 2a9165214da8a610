"""``build --quantize int8``: also publish a statically quantized ``<name>-int8`` variant.

Importing this module registers the flags with ``python -m export build`` (a ``BuildExtension``).
"""

from __future__ import annotations

import argparse

from export.build import BuildRequest, BuildResult
from export.commands.build import BUILD_EXTENSIONS, BuildExtension, positive_int
from export.errors import ExportError, Interrupted
from export.publish import NAME_RULE, validate_model_name
from export.quantize import DEFAULT_CALIBRATION_IMAGES, INT8_SUFFIX, int8_name, quantize_build


def unit_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quantization")
    group.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: also publish <name>-int8, statically quantized with onnxruntime (QDQ, "
        "per-channel int8 weights within ±64, uint8 activations), calibrated on training images, "
        "with its top-1 agreement with the fp32 model on the validation split in its card",
    )
    group.add_argument(
        "--calibration-images",
        type=positive_int,
        default=DEFAULT_CALIBRATION_IMAGES,
        help="training images used to calibrate the int8 activation ranges",
    )
    group.add_argument(
        "--min-int8-agreement",
        type=unit_fraction,
        default=0.9,
        help="refuse to publish the int8 variant if it agrees with the fp32 model on fewer "
        "validation images than this fraction",
    )


def check(args: argparse.Namespace, request: BuildRequest) -> None:
    if args.quantize != "int8":
        return
    if request.dataset is None:
        raise ExportError(
            "--quantize int8 needs training images to calibrate on and validation images to "
            "measure agreement: give --dataset (digits, shapes or imagefolder:PATH); nothing "
            "was built"
        )
    name = request.name or ""
    try:
        validate_model_name(int8_name(name))
    except ExportError:
        raise ExportError(
            f"--quantize int8 also publishes {int8_name(name)!r}, which is not a valid model name "
            f"({NAME_RULE}): choose a --name of at most {64 - len(INT8_SUFFIX)} characters; "
            "nothing was built"
        ) from None


def after_build(args: argparse.Namespace, result: BuildResult) -> None:
    if args.quantize != "int8":
        return
    try:
        int8 = quantize_build(
            result,
            args.models_dir,
            calibration_images=args.calibration_images,
            min_agreement=args.min_int8_agreement,
            seed=args.seed,
        )
    except KeyboardInterrupt as exc:
        raise Interrupted(
            f"{result.published.name} version {result.published.version} was published, but "
            "its int8 variant was not"
        ) from exc
    except ExportError as exc:
        raise ExportError(
            f"{result.published.name} version {result.published.version} was published, but "
            f"its int8 variant was not: {exc}"
        ) from exc
    published = int8.published
    accuracy = published.card.val_accuracy
    print(
        f"published {published.name} version {published.version}: {published.path} "
        f"(sha256 {published.sha256[:12]}…, top-1 agreement with fp32 {int8.top1_agreement:.4f}"
        + (f", val accuracy {accuracy:.4f}" if accuracy is not None else "")
        + f", calibrated on {int8.calibration_images} training images)"
    )


BUILD_EXTENSIONS.append(BuildExtension(add_arguments, after_build, check))
