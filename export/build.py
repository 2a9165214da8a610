"""One build: data → model (+ weights) → train → export → check → parity → publish.

``BuildRequest`` is everything a user chooses (the CLI maps its flags onto it); ``build_model``
runs the steps and returns a ``BuildResult`` with the trained model, the data and the published
model, so follow-up steps (INT8 quantization, sweeps) can reuse them. Every check runs before
anything is written: a failed build publishes nothing.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

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
from export.errors import DataError
from export.exporter import ExportedGraph, make_card
from export.pipeline import export_verified
from export.publish import PublishedModel, publish_model, validate_model_name
from export.resnet import ResNet, arch_style, build_resnet
from export.shapes import render_shapes
from export.train import Normalisation, TrainConfig, TrainResult, evaluate, train_model
from export.weights import Checkpoint, LoadReport, load_weights, read_checkpoint
from service.activations import NETWORK_ACTIVATIONS, ParamValue

PARITY_VAL_IMAGES = 64


@dataclass(frozen=True)
class BuildRequest:
    arch: str = "resnet20"
    activation: str | None = None
    """None: the activation the ``weights`` file records (if it is in the catalogue), else relu."""
    activation_params: dict[str, ParamValue] = field(default_factory=dict)
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


def default_name(request: BuildRequest) -> str:
    source = request.dataset or ("imagenet" if request.labels == "imagenet" else "weights")
    source = source.removeprefix("imagefolder:").rstrip("/").rsplit("/", 1)[-1] or "images"
    raw = f"{request.arch}-{request.activation}-{source}".lower()
    return re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")[:64]


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


def resolve_activation(activation: str | None, checkpoint: Checkpoint | None) -> str:
    """The activation asked for; else the one the weights file records; else relu."""
    if activation is not None:
        return activation
    recorded = checkpoint.activation if checkpoint is not None else None
    return recorded if recorded in NETWORK_ACTIVATIONS else "relu"


def build_model(request: BuildRequest) -> BuildResult:
    """Run one build end to end; raises an ``ExportError`` (or ``ValueError``) before writing."""
    checkpoint = read_checkpoint(request.weights) if request.weights is not None else None
    activation = resolve_activation(request.activation, checkpoint)
    request = replace(request, activation=activation)
    name = validate_model_name(request.name or default_name(request))
    style = arch_style(request.arch)
    size = request.image_size or (32 if style == "cifar" else 224)
    if size < 8:
        raise DataError(f"--image-size must be at least 8 pixels, got {size}")
    request.train.validate()
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
        activation,
        num_classes=len(labels),
        activation_params=request.activation_params or None,
        width=request.width,
        seed=request.train.seed,
    )
    report = None
    if checkpoint is not None:
        report = load_weights(model, checkpoint, activation=model.activation.name)

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
        command=request.command,
    )
    published = publish_model(request.repository, graph.proto, card, version=request.version)
    return BuildResult(published, model, graph, norm, dataset, split, training, report)
