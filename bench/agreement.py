"""INT8 top-1 agreement on a *trained* classifier, so the number measures decisions, not noise.

The ResNet-50 timed by the suite has random convolution weights (no pretrained weights exist
offline; training ResNet-50 on two CPU cores is out of a benchmark's budget), and its classes
are near-ties: agreement there says little. So the agreement target is measured on a CIFAR-style
ResNet (``resnet20`` in the full profile) trained with ``export.train`` on the shapes dataset
and quantized with exactly the same recipe (``bench.int8``); BENCHMARKS.md says so next to the
number, and also reports the ResNet-50 agreement for what it is worth.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import CACHE_DIR, Profile
from bench.int8 import quantize_model
from service.modelcard import MODEL_FILENAME

# 2: INT8 through export.quantize (the product's recipe); 3: its weights within ±64
AGREEMENT_RECIPE = 3


@dataclass(frozen=True)
class AgreementModel:
    arch: str
    val_accuracy: float
    int8_val_accuracy: float
    agreement: float
    val_images: int
    epochs: int
    train_seconds: float


def trained_agreement(profile: Profile, log: Callable[[str], None] = print) -> AgreementModel:
    """Train (or reuse from the cache) the small classifier, quantize it, measure agreement."""
    key = (
        f"agreement-{profile.agreement_arch}-{profile.agreement_per_class}-"
        f"{profile.agreement_epochs}-r{AGREEMENT_RECIPE}"
    )
    root = CACHE_DIR / key
    result = root / "agreement.json"
    if result.exists():
        log(f"agreement: using the cache {root}")
        return AgreementModel(**json.loads(result.read_text()))
    building = CACHE_DIR / f".{key}.{os.getpid()}.partial"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        model = _train_and_quantize(profile, building, log)
        (building / "agreement.json").write_text(json.dumps(model.__dict__, indent=2))
        try:
            building.rename(root)
        except OSError:
            if not result.exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return AgreementModel(**json.loads(result.read_text()))


def _train_and_quantize(profile: Profile, root: Path, log: Callable[[str], None]) -> AgreementModel:
    import torch

    from export.data import channel_stats, load_dataset, stratified_split
    from export.pipeline import export_and_publish
    from export.resnet import build_resnet
    from export.train import Normalisation, TrainConfig, train_model

    torch.manual_seed(0)
    data = load_dataset("shapes", image_size=32, per_class=profile.agreement_per_class, seed=0)
    split = stratified_split(data.targets, 0.2, seed=0)
    train = (data.images[split.train], data.targets[split.train])
    val = (data.images[split.val], data.targets[split.val])
    mean, std = channel_stats(train[0])
    norm = Normalisation(mean, std)
    model = build_resnet(profile.agreement_arch, "relu", num_classes=len(data.labels), seed=0)
    log(f"agreement: training {profile.agreement_arch} on shapes ({len(train[1])} images)")
    config = TrainConfig(epochs=profile.agreement_epochs, batch_size=64)
    trained = train_model(model, train, val, norm, config, flips=data.flips, progress=False)
    model.eval()
    val_x = norm(val[0])
    published = export_and_publish(
        model, root / "fp32", name=f"agreement-{profile.agreement_arch}", version=1,
        input_size=data.input_size, parity_batches=[val_x[:4]],
        architecture=profile.agreement_arch, labels=data.labels, resize_size=data.resize_size,
        mean=mean, std=std, dataset="shapes", split=split.describe(),
        val_accuracy=trained.val_accuracy, epochs=profile.agreement_epochs,
        train_seconds=trained.seconds, seed=0, command="python -m bench (bench/agreement.py)",
    )  # fmt: skip
    train_x = norm(train[0][:: max(1, len(train[1]) // profile.calibration_images)])
    calibration = train_x[: profile.calibration_images].numpy().astype(np.float32)
    validation = val_x.numpy().astype(np.float32)
    agreement = quantize_model(published, root / "int8", calibration, validation)
    int8_path = root / "int8" / f"{published.name}-int8" / "1" / MODEL_FILENAME
    int8_accuracy = _accuracy(int8_path, validation, val[1].numpy())
    log(
        f"agreement: {profile.agreement_arch} val accuracy {trained.val_accuracy:.3f}, "
        f"INT8 {int8_accuracy:.3f}, top-1 agreement {agreement:.4f}"
    )
    return AgreementModel(
        arch=profile.agreement_arch, val_accuracy=float(trained.val_accuracy or 0.0),
        int8_val_accuracy=int8_accuracy, agreement=agreement, val_images=len(val[1]),
        epochs=profile.agreement_epochs, train_seconds=round(trained.seconds, 1),
    )  # fmt: skip


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    from bench.int8 import top1

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(np.mean(top1(session, x) == y))
