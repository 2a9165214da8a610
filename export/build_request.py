"""A build request and every check that needs no data or training.

``BuildRequest`` is everything a user chooses (the CLI maps its flags onto it). ``prepare_build``
resolves the activation (the one asked for, else the one the weights were trained with), the
model name (``default_name``), the image size, and refuses before any slow step what would fail
after it: a bad weights file or activation, an invalid name or ``-int8`` name, an existing
``--version``, a repository that cannot be written. ``export.build.build_model`` runs the rest.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from export.activations import TorchActivation, torch_activation
from export.errors import DataError, PublishError
from export.publish import existing_versions, validate_model_name
from export.resnet import arch_style
from export.train import TrainConfig
from export.weights import Checkpoint, read_checkpoint
from service.activations import CatalogueError, ParamValue, get_network_activation


@dataclass(frozen=True)
class BuildRequest:
    arch: str = "resnet20"
    activation: str | None = None
    """None: the activation the ``weights`` file records (if it is in the catalogue, with its
    recorded parameters; PReLU slopes in a plain state dict mean prelu), else relu."""
    activation_params: dict[str, ParamValue] = field(default_factory=dict)
    """Overrides of the activation's parameters (also over the ones a weights file records)."""
    dataset: str | None = "digits"
    """'digits' | 'shapes' | 'imagefolder:PATH' | None (export weights as they are)."""
    image_size: int | None = None
    """Network input (square); default 32 for CIFAR-style archs, 224 for ImageNet-style."""
    width: int | None = None
    weights: Path | None = None
    labels: str | None = None
    """'imagenet' or a file with one label per line (overrides the dataset's class names)."""
    normalise: str | None = None
    """'dataset' (mean/std of the training split) or 'imagenet'; default picks by weights."""
    val_fraction: float = 0.2
    shapes_per_class: int = 300
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None
    version: int | None = None
    repository: Path = Path("models")
    progress: bool = True
    command: str = field(
        default_factory=lambda: shlex.join(["python", "-m", "export", *sys.argv[1:]])
    )
    """What the card records; a ``python -m export build`` command also gets ``--threads N``
    (the torch thread count the build ran with: it changes the trained weights)."""


@dataclass(frozen=True)
class PreparedBuild:
    """A request that passed every check that needs no training (see ``prepare_build``)."""

    request: BuildRequest
    """With ``activation`` (its catalogue name), ``activation_params``, ``name`` and
    ``image_size`` resolved."""
    checkpoint: Checkpoint | None
    name: str
    image_size: int


def activation_label(activation: str | None, params: dict[str, ParamValue] | None = None) -> str:
    """The catalogue name plus every parameter that differs from its default, e.g.
    ``leaky_relu-negative_slope0.2`` (numbers) or ``gelu-approximate_tanh`` (choices)."""
    act = torch_activation(activation or "relu", params)
    parts = [act.name]
    for param in act.spec.params:
        value = act.params[param.name]
        if value != param.default:
            parts.append(
                f"{param.name}_{value}" if isinstance(value, str) else f"{param.name}{value}"
            )
    return "-".join(parts)


def default_name(request: BuildRequest) -> str:
    """``<arch>-<activation label>-<dataset>`` (see ``activation_label``), at most 64 characters."""
    source = request.dataset or ("imagenet" if request.labels == "imagenet" else "weights")
    source = source.removeprefix("imagefolder:").rstrip("/").rsplit("/", 1)[-1] or "images"
    label = activation_label(request.activation, request.activation_params)
    raw = f"{request.arch}-{label}-{source}".lower()
    return re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")[:64].rstrip("-._")


def with_threads(command: str, threads: int) -> str:
    """A ``python -m export build`` command with ``--threads threads`` in place of any it had;
    other commands are returned unchanged."""
    try:
        args = shlex.split(command)
    except ValueError:
        return command
    if args[:4] != ["python", "-m", "export", "build"]:
        return command
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip or arg.startswith("--threads="):
            skip = False
            continue
        skip = arg == "--threads"
        if not skip:
            kept.append(arg)
    return shlex.join([*kept, "--threads", str(threads)])


def resolve_activation(
    activation: str | None,
    params: dict[str, ParamValue],
    checkpoint: Checkpoint | None,
) -> tuple[str, dict[str, ParamValue]]:
    """(name, parameters): the activation asked for; else the one the weights were trained with
    (recorded in the file, or prelu for a file with PReLU slopes); else relu. When the weights'
    activation is used, ``params`` go over the parameters they were trained with."""
    trained, trained_params = checkpoint.trained_activation() if checkpoint else (None, {})
    try:
        trained = get_network_activation(trained).name if trained is not None else None
    except CatalogueError:
        trained = None  # load_weights warns that the weights are used with another activation
    if activation is None:
        activation = trained or "relu"
    try:
        same = trained is not None and get_network_activation(activation).name == trained
    except CatalogueError:
        same = False  # reported with the option's name by prepare_build
    return activation, ({**trained_params, **params} if same else dict(params))


def _checked_activation(
    request: BuildRequest,
    activation: str,
    params: dict[str, ParamValue],
    checkpoint: Checkpoint | None,
) -> TorchActivation:
    """``torch_activation``, its ``CatalogueError`` saying which option (or file) was wrong."""
    try:
        get_network_activation(activation)
    except CatalogueError as exc:
        raise CatalogueError(f"--activation: {exc}") from None
    try:
        return torch_activation(activation, params)
    except CatalogueError as exc:
        where = "--act-param"
        if not request.activation_params and request.weights is not None and checkpoint:
            where = f"the activation parameters recorded in {request.weights.name}"
        raise CatalogueError(f"{where}: {exc}") from None


def _check_publishable(repository: Path, name: str, version: int | None) -> None:
    """Refuse, before any training, what ``publish_model`` would refuse after it."""
    versions = existing_versions(repository, name)
    if version is not None and version in versions:
        raise PublishError(
            f"{name} version {version} already exists in {repository} (versions "
            f"{', '.join(map(str, versions))}); versions are never overwritten: choose another "
            f"--version or leave it out to publish version {versions[-1] + 1}"
        )
    target = repository / name
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise PublishError(f"cannot publish into {repository}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PublishError(
            f"cannot write to {existing} (read-only or permission denied); choose a writable "
            "--models-dir"
        )


def prepare_build(request: BuildRequest) -> PreparedBuild:
    """Every check that needs no data or training: weights file, activation, name, version,
    image size, training options, a writable repository. Raises an ``ExportError``."""
    checkpoint = read_checkpoint(request.weights) if request.weights is not None else None
    activation, params = resolve_activation(
        request.activation, request.activation_params, checkpoint
    )
    resolved = _checked_activation(request, activation, params, checkpoint)
    request = replace(request, activation=resolved.name, activation_params=params)
    name = validate_model_name(request.name or default_name(request))
    request = replace(request, name=name)
    size = request.image_size or (32 if arch_style(request.arch) == "cifar" else 224)
    if size < 8:
        raise DataError(f"--image-size must be at least 8 pixels, got {size}")
    request = replace(request, image_size=size)
    request.train.validate()
    _check_publishable(request.repository, name, request.version)
    return PreparedBuild(request, checkpoint, name, size)
