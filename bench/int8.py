"""The INT8 variant the benchmark measures: exactly what ``python -m export build --quantize int8``
publishes (``export.quantize``: static QDQ, per-channel int8 weights within ±64, uint8
activations, MinMax calibration, softmax kept in float), so the numbers describe the product, not
a bench-only recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.publish import PublishedModel
from export.quantize import predict_top1, publish_int8_variant
from export.quantize import top1_agreement as _agreement_of_bytes


def top1(session: ort.InferenceSession, tensors: np.ndarray) -> np.ndarray:
    """Top-1 class of every row of ``tensors``."""
    return predict_top1(session, tensors)


def top1_agreement(fp32: Path, int8: Path, tensors: np.ndarray) -> float:
    """Fraction of ``tensors`` on which both model files pick the same class."""
    return _agreement_of_bytes(fp32.read_bytes(), int8.read_bytes(), tensors)


def quantize_model(
    published: PublishedModel,
    repository: Path,
    calibration: np.ndarray,
    validation: np.ndarray,
) -> float:
    """Quantize ``published``, publish it as ``<name>-int8`` version 1; return the agreement."""
    result = publish_int8_variant(
        repository, published, calibration=calibration, validation=validation, version=1
    )
    return result.top1_agreement
