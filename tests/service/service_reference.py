"""Independent reference computations for tests: plain PIL, float64 numpy, raw onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.modelcard import ModelCard


def reference_preprocess(image: Image.Image, card: ModelCard) -> np.ndarray:
    """torchvision Resize(resize_size) + CenterCrop(input_size) + Normalize, written plainly."""
    width, height = image.size
    short = card.resize_size
    if width <= height:
        size = (short, int(short * height / width))
    else:
        size = (int(short * width / height), short)
    resized = image.resize(size, Image.Resampling.BILINEAR)
    crop_h, crop_w = card.input_size
    top = round((size[1] - crop_h) / 2.0)
    left = round((size[0] - crop_w) / 2.0)
    cropped = np.asarray(resized, dtype=np.float64)[top : top + crop_h, left : left + crop_w]
    normalised = (cropped / 255.0 - np.array(card.mean)) / np.array(card.std)
    return normalised.transpose(2, 0, 1)[None]


def softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def run_reference(model_path: Path, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) from a plain onnxruntime session, default options."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(
        ["logits", "probabilities"], {"input": batch.astype(np.float32)}
    )
    return logits, probabilities
