"""One build: data → model (+ weights) → train → export → check → parity → publish.

``BuildRequest`` is everything a user chooses (the CLI maps its flags onto it); ``build_model``
runs the steps and returns a ``BuildResult`` with the trained model, the data and the published
model, so follow-up steps (INT8 quantization, sweeps) can reuse them. ``prepare_build`` runs every
check that needs no training (names, weights file, version, writable repository) so a caller can
add its own checks before the slow part; nothing is written until every check has passed, so a
failed build publishes nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from export.activations import TorchActivation, torch_activation
from export.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDataset,
    Split,
    channel_stats,
    load_dataset,
    load_labels,
    stratified_split,
)
from export.errors import DataError, PublishError, WeightsError
from export.exporter import ExportedGraph, make_card
from export.pipeline import export_verified
from export.publish import PublishedModel, existing_versions, publish_model, validate_model_name
from export.resnet import ResNet, arch_style, build_resnet
from export.shapes import render_shapes
from export.train import Normalisation, TrainConfig, TrainResult, evaluate, train_model
from export.weights import (
    Checkpoint,
    HeadReplacedWarning,
    LoadReport,
    load_weights,
    read_checkpoint,
)
from service.activations import CatalogueError, ParamValue, get_network_activation

PARITY_VAL_IMAGES = 64


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


@dataclass(frozen=True)
class BuildResult:
    published: PublishedModel
    model: ResNet
    graph: ExportedGraph
    norm: Normalisation
    dataset: ImageDataset | None
    split: Split | None
    training: TrainResult
    weights: LoadReport | None


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


def _labels(request: BuildRequest, dataset: ImageDataset | None) -> tuple[str, ...]:
    if request.labels is not None:
        labels = load_labels(request.labels)
        if dataset is not None and len(labels) != len(dataset.labels):
            raise DataError(
                f"--labels gives {len(labels)} labels but the dataset has "
                f"{len(dataset.labels)} classes ({', '.join(dataset.labels[:5])}…)"
            )
        return labels
    if dataset is not None:
        return dataset.labels
    raise DataError("without a dataset, give the class names with --labels (imagenet or a file)")


def _parity_batches(
    norm: Normalisation, size: tuple[int, int], val_images: torch.Tensor | None, seed: int
) -> list[torch.Tensor]:
    """A random batch, a batch of one, and real images (validation images, else rendered)."""
    generator = torch.Generator().manual_seed(seed)
    batches = [
        torch.randn(8, 3, *size, generator=generator),
        torch.randn(1, 3, *size, generator=generator),
    ]
    if val_images is None or len(val_images) == 0:
        rendered, _ = render_shapes(2, size[0], seed)
        real = torch.from_numpy(np.ascontiguousarray(rendered.transpose(0, 3, 1, 2)))
        if size[1] != size[0]:
            real = torch.nn.functional.interpolate(real.float(), size=size).round().to(torch.uint8)
    else:
        real = val_images[:PARITY_VAL_IMAGES]
    batches.append(norm(real))
    return batches


def _normalisation(
    request: BuildRequest, dataset: ImageDataset | None, split: Split | None
) -> Normalisation:
    """ImageNet's mean/std for pretrained weights or without data, else the training split's."""
    choice = request.normalise or ("imagenet" if request.weights or dataset is None else "dataset")
    if choice == "imagenet":
        return Normalisation(IMAGENET_MEAN, IMAGENET_STD)
    if choice == "dataset" and dataset is not None and split is not None:
        return Normalisation(*channel_stats(dataset.images[split.train]))
    if choice == "dataset":
        raise DataError("--normalise dataset needs a dataset (--dataset) to compute mean/std from")
    raise DataError(f"unknown normalisation {choice!r}; choose one of: dataset, imagenet")


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


def _check_head(request: BuildRequest, report: LoadReport, classes: int) -> None:
    """A head the weights do not provide is random: refuse to publish it untrained."""
    if not report.head_replaced:
        return
    source = request.weights.name if request.weights else "the weights"
    if request.train.epochs == 0:
        where = "--labels gives" if request.labels is not None else "the dataset has"
        raise WeightsError(
            f"the classifier head (fc) in {source} has {report.source_classes} classes but "
            f"{where} {classes}, so the head would be published randomly initialised: train "
            f"it (--epochs N with a --dataset), or pass --labels with {report.source_classes} "
            "class names in the order the weights were trained with"
        )
    warnings.warn(
        f"the classifier head (fc) is newly initialised: {source} has "
        f"{report.source_classes} classes, this model {classes}; only the "
        f"{request.train.epochs} training epoch(s) fit it",
        HeadReplacedWarning,
        stacklevel=3,
    )


def build_model(request: BuildRequest | PreparedBuild) -> BuildResult:
    """Run one build end to end; raises an ``ExportError`` (or ``ValueError``) before writing."""
    prepared = request if isinstance(request, PreparedBuild) else prepare_build(request)
    request, checkpoint = prepared.request, prepared.checkpoint
    name, size = prepared.name, prepared.image_size
    dataset = (
        load_dataset(
            request.dataset,
            image_size=size,
            seed=request.train.seed,
            per_class=request.shapes_per_class,
        )
        if request.dataset
        else None
    )
    if dataset is None and request.train.epochs > 0:
        raise DataError("training needs a dataset (--dataset); use --epochs 0 to export as is")
    labels = _labels(request, dataset)
    split = (
        stratified_split(dataset.targets, request.val_fraction, request.train.seed)
        if dataset
        else None
    )

    model = build_resnet(
        request.arch,
        request.activation or "relu",
        num_classes=len(labels),
        activation_params=request.activation_params or None,
        width=request.width,
        seed=request.train.seed,
    )
    report = None
    if checkpoint is not None:
        report = load_weights(model, checkpoint, activation=model.activation.name)
        _check_head(request, report, len(labels))

    norm = _normalisation(request, dataset, split)

    train_data = val_data = None
    if dataset is not None and split is not None:
        train_data = (dataset.images[split.train], dataset.targets[split.train])
        val_data = (dataset.images[split.val], dataset.targets[split.val])
    training = TrainResult((), 0.0)
    if train_data is not None and val_data is not None:
        training = train_model(
            model,
            train_data,
            val_data,
            norm,
            request.train,
            flips=dataset.flips if dataset else False,
            progress=request.progress,
        )
    model.eval()
    val_accuracy = training.val_accuracy
    if val_accuracy is None and val_data is not None and len(val_data[1]):
        val_accuracy = evaluate(model, *val_data, norm)[1]

    parity = _parity_batches(
        norm, (size, size), val_data[0] if val_data else None, request.train.seed
    )
    graph = export_verified(model, (size, size), parity)

    card = make_card(
        model,
        graph,
        name=name,
        architecture=request.arch.lower(),
        labels=labels,
        input_size=(size, size),
        resize_size=dataset.resize_size if dataset else round(size * 256 / 224),
        mean=norm.mean,
        std=norm.std,
        dataset=dataset.name if dataset else "none",
        split=split.describe() if split else {},
        val_accuracy=val_accuracy,
        epochs=len(training.history),
        train_seconds=round(training.seconds, 2),
        seed=request.train.seed,
        command=with_threads(request.command, torch.get_num_threads()),
    )
    published = publish_model(request.repository, graph.proto, card, version=request.version)
    return BuildResult(published, model, graph, norm, dataset, split, training, report)
