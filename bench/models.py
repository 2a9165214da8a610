"""The benchmarked models, built once with export/ and cached under ``bench/.cache/``.

ResNet-50 has no pretrained weights here (nothing is downloaded), and a randomly initialised
network's logits are near-ties, so "INT8 agrees with fp32 on top-1" would measure noise. What is
built instead, honestly labelled in the card and in BENCHMARKS.md:

1. ``build_resnet(arch, "relu", seed=0)`` — random seeded convolution weights;
2. batch-norm statistics re-estimated on shapes images (so activations have the scale a trained
   network has — this matters for INT8 ranges and for speed-neutral numerics);
3. the ``fc`` head fitted as a linear probe (multinomial logistic regression) on the network's
   pooled features of shapes images rendered at the input size.

The result is a real 8-class shapes classifier (its validation accuracy goes into the card) with
exactly ResNet-50's compute, so latency numbers are ResNet-50's and agreement is measured on a
classifier whose decisions mean something. The INT8 variant is onnxruntime's static QDQ
quantization (per-channel int8 weights within ±64, uint8 activations, MinMax calibration on
shapes images: ``export.quantize``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from bench.config import CACHE_DIR, Profile
from service.imaging import normalisation_table, preprocess_into
from service.modelcard import INPUT_NAME, MODEL_FILENAME, ModelCard

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BUILD_RECIPE = 5  # bump when the recipe below changes (4: INT8 via export.quantize; 5: |w| ≤ 64)


@dataclass(frozen=True)
class BenchModels:
    fp32_repo: Path  # a repository holding only the fp32 model (what the service serves)
    int8_repo: Path
    fp32_path: Path
    int8_path: Path
    weights_path: Path  # torch state dict of the same network, for PyTorch eager
    name: str
    val_images: Path  # uint8 [N, S, S, 3] shapes validation images (.npy)
    val_targets: Path
    info: dict[str, object]


def model_name(profile: Profile) -> str:
    return f"bench-{profile.arch}-relu"


def _cache_key(profile: Profile) -> str:
    text = json.dumps(
        [BUILD_RECIPE, profile.arch, profile.input_size, profile.resize_size,
         profile.probe_per_class, profile.val_per_class, profile.calibration_images],
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _layout(root: Path, name: str, info: dict[str, object]) -> BenchModels:
    return BenchModels(
        fp32_repo=root / "fp32",
        int8_repo=root / "int8",
        fp32_path=root / "fp32" / name / "1" / MODEL_FILENAME,
        int8_path=root / "int8" / f"{name}-int8" / "1" / MODEL_FILENAME,
        weights_path=root / "weights.pt",
        name=name,
        val_images=root / "val_images.npy",
        val_targets=root / "val_targets.npy",
        info=info,
    )


def prepare_models(profile: Profile, log: Callable[[str], None] = print) -> BenchModels:
    """Build (or reuse from the cache) the fp32 model, its INT8 variant and the torch weights.

    A build happens in a private directory renamed into place when complete, so an interrupted
    or concurrent build never leaves a half-built cache entry behind.
    """
    name = model_name(profile)
    root = CACHE_DIR / f"{profile.name}-{_cache_key(profile)}"
    info_path = root / "info.json"
    if info_path.exists():
        log(f"models: using the cache {root}")
        return _layout(root, name, json.loads(info_path.read_text()))
    building = CACHE_DIR / f".{root.name}.{os.getpid()}.partial"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    log(f"models: building {profile.arch} (cached in {root} for later runs)")
    try:
        info = _build(profile, _layout(building, name, {}), log)
        (building / "info.json").write_text(json.dumps(info, indent=2))
        try:
            building.rename(root)
        except OSError:  # another run finished the same build first: use it
            if not info_path.exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return _layout(root, name, json.loads(info_path.read_text()))


def _build(profile: Profile, models: BenchModels, log: Callable[[str], None]) -> dict[str, object]:
    import torch
    from sklearn.linear_model import LogisticRegression

    from export.pipeline import export_and_publish
    from export.resnet import build_resnet
    from export.shapes import SHAPE_CLASSES, render_shapes

    torch.manual_seed(0)
    started = time.perf_counter()
    size = profile.input_size
    train_x, train_y = render_shapes(profile.probe_per_class, size, seed=1)
    val_x, val_y = render_shapes(profile.val_per_class, size, seed=2)
    np.save(models.val_images, val_x)
    np.save(models.val_targets, val_y)
    labels = list(SHAPE_CLASSES)
    model = build_resnet(profile.arch, "relu", num_classes=len(labels), seed=0)

    card_like = _card_stub(profile, labels)
    train_t = torch.from_numpy(_tensors(train_x, card_like))
    val_t = torch.from_numpy(_tensors(val_x, card_like))

    # Batch-norm statistics of this random network on real-looking inputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over every batch
    model.train()
    with torch.no_grad():
        for chunk in torch.split(train_t, 32):
            model(chunk)
    model.eval()
    log(f"models: batch-norm statistics re-estimated ({time.perf_counter() - started:.0f} s)")

    with torch.no_grad():
        features = torch.cat([model.forward_features(c) for c in torch.split(train_t, 32)])
        val_features = torch.cat([model.forward_features(c) for c in torch.split(val_t, 32)])
    mu = features.mean(0)
    sigma = features.std(0) + 1e-6
    probe = LogisticRegression(C=1.0, max_iter=2000)
    probe.fit(((features - mu) / sigma).numpy(), train_y)
    weight = torch.from_numpy(probe.coef_).float() / sigma
    bias = torch.from_numpy(probe.intercept_).float() - (weight * mu).sum(1)
    with torch.no_grad():
        model.fc.weight.copy_(weight)
        model.fc.bias.copy_(bias)
        val_pred = model.fc(val_features).argmax(1).numpy()
    accuracy = float(np.mean(val_pred == val_y))
    log(f"models: linear-probe head fitted, val accuracy {accuracy:.3f}")
    torch.save(model.state_dict(), models.weights_path)

    published = export_and_publish(
        model,
        models.fp32_repo,
        name=models.name,
        version=1,
        input_size=(size, size),
        parity_batches=[val_t[:2]],
        architecture=profile.arch,
        labels=labels,
        resize_size=profile.resize_size,
        mean=MEAN,
        std=STD,
        dataset=f"shapes (linear probe on random-init features, {len(train_y)} train images)",
        split={"train": len(train_y), "val": len(val_y)},
        val_accuracy=accuracy,
        seed=0,
        command="python -m bench (bench/models.py: random init, BN re-estimated, linear probe)",
    )
    log(f"models: fp32 exported and published ({time.perf_counter() - started:.0f} s)")

    from bench.int8 import quantize_model

    calibration = _tensors(
        train_x[:: max(1, len(train_x) // profile.calibration_images)], card_like
    )
    agreement = quantize_model(
        published, models.int8_repo, calibration[: profile.calibration_images],
        _tensors(val_x, card_like),
    )  # fmt: skip
    log(f"models: INT8 variant published, top-1 agreement {agreement:.4f}")
    return {
        "arch": profile.arch,
        "val_accuracy": accuracy,
        "int8_agreement": agreement,
        "train_images": len(train_y),
        "val_images": len(val_y),
        "calibration_images": int(min(profile.calibration_images, len(calibration))),
        "build_seconds": round(time.perf_counter() - started, 1),
        "fp32_bytes": published.path.stat().st_size,
        "int8_bytes": models.int8_path.stat().st_size,
    }


def _card_stub(profile: Profile, labels: list[str]) -> ModelCard:
    """A card with the preprocessing fields only, to preprocess exactly as the service does."""
    size = profile.input_size
    return ModelCard(
        name="stub", version=1, architecture=profile.arch, activation="relu", labels=labels,
        input_size=(size, size), resize_size=profile.resize_size, mean=MEAN, std=STD,
        dataset="-", opset=20, created_at="-", parameters=0,
    )  # fmt: skip


def _tensors(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """uint8 [N, S, S, 3] → float32 [N, 3, H, W] through the service's own preprocessing."""
    height, width = card.input_size
    out = np.empty((len(images), 3, height, width), dtype=np.float32)
    table = normalisation_table(card)
    for i, pixels in enumerate(images):
        preprocess_into(Image.fromarray(pixels, "RGB"), card, out[i], table)
    return out


def load_validation(models: BenchModels, card: ModelCard) -> np.ndarray:
    return _tensors(np.load(models.val_images), card)


def read_card(path: Path) -> ModelCard:
    proto = onnx.load(str(path), load_external_data=False)
    return ModelCard.from_metadata({p.key: p.value for p in proto.metadata_props})


__all__ = ["INPUT_NAME", "BenchModels", "load_validation", "prepare_models", "read_card"]
