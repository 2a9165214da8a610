"""Tiny seeded models (CIFAR-style resnet8, narrow, untrained) for tests and demos.

Every tiny model: 32×32 input, resize 36 + centre crop 32, ImageNet mean/std, ten labels
``digit-0`` … ``digit-9``. Building and publishing one takes about a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from export.pipeline import export_and_publish
from export.publish import PublishedModel
from export.resnet import build_resnet
from service.activations import ParamValue

TINY_ARCH = "resnet8"
TINY_WIDTH = 8
TINY_INPUT = (32, 32)
TINY_RESIZE = 36
TINY_LABELS = tuple(f"digit-{i}" for i in range(10))
TINY_MEAN = (0.485, 0.456, 0.406)
TINY_STD = (0.229, 0.224, 0.225)


def publish_tiny_model(
    repository: Path,
    name: str,
    activation: str = "relu",
    *,
    version: int | None = None,
    seed: int = 0,
    activation_params: Mapping[str, ParamValue] | None = None,
) -> PublishedModel:
    """Build a seeded, untrained tiny ResNet and publish it (verified) into ``repository``."""
    model = build_resnet(
        TINY_ARCH,
        activation,
        num_classes=len(TINY_LABELS),
        activation_params=activation_params,
        width=TINY_WIDTH,
        seed=seed,
    ).eval()
    generator = torch.Generator().manual_seed(seed)
    batches = [torch.randn(n, 3, *TINY_INPUT, generator=generator) for n in (4, 1)]
    return export_and_publish(
        model,
        repository,
        name=name,
        version=version,
        input_size=TINY_INPUT,
        parity_batches=batches,
        architecture=TINY_ARCH,
        labels=TINY_LABELS,
        resize_size=TINY_RESIZE,
        mean=TINY_MEAN,
        std=TINY_STD,
        dataset="none (seeded random init)",
        seed=seed,
        command=f"export.tiny.publish_tiny_model(name={name!r}, activation={activation!r}, "
        f"seed={seed})",
    )
