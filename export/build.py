"""One build: data → model (+ weights) → train → export → check → parity → publish.

``build_model`` takes a ``BuildRequest`` (or one ``prepare_build`` already checked, see
``export.build_request``: a caller can add its own checks before the slow part), runs the steps
and returns a ``BuildResult`` with the trained model, the data and the published model, so
follow-up steps (INT8 quantization, sweeps) can reuse them. Nothing is written until every check
has passed, so a failed build publishes nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from export.build_request import (
    BuildRequest,
    PreparedBuild,
    prepare_build,
    with_threads,
)
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
from export.errors import DataError, WeightsError
from export.exporter import ExportedGraph, make_card
from export.pipeline import export_verified
from export.publish import PublishedModel, publish_model
from export.resnet import ResNet, build_resnet
from export.shapes import render_shapes
from export.train import Normalisation, TrainResult, evaluate, train_model
from export.weights import (
    HeadReplacedWarning,
    LoadReport,
    load_weights,
)

PARITY_VAL_IMAGES = 64


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
