"""The INT8 variant: onnxruntime static QDQ quantization, its top-1 agreement, published.

Per-channel int8 weights and uint8 activations (the U8S8 combination onnxruntime's x86 kernels run
with VNNI), MinMax calibration on shapes images preprocessed exactly as the service does. The
model is pre-processed first (``quant_pre_process``: shape inference and graph optimisation, which
folds batch norms into convolutions) as onnxruntime recommends.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from service.modelcard import INPUT_NAME, LOGITS_NAME, ModelCard


class _Batches(CalibrationDataReader):
    def __init__(self, tensors: np.ndarray, batch: int = 8) -> None:
        self._chunks = iter([tensors[i : i + batch] for i in range(0, len(tensors), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {INPUT_NAME: chunk}


def top1(session: ort.InferenceSession, tensors: np.ndarray, batch: int = 16) -> np.ndarray:
    rows = [
        session.run([LOGITS_NAME], {INPUT_NAME: tensors[i : i + batch]})[0].argmax(1)
        for i in range(0, len(tensors), batch)
    ]
    return np.concatenate(rows)


def top1_agreement(fp32: Path, int8: Path, tensors: np.ndarray) -> float:
    """Fraction of ``tensors`` on which both models pick the same class."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    a = ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    return float(np.mean(top1(a, tensors) == top1(b, tensors)))


def quantize_model(
    fp32_path: Path,
    card: ModelCard,
    repository: Path,
    calibration: np.ndarray,
    validation: np.ndarray,
) -> float:
    """Quantize ``fp32_path``, publish it as ``<name>-int8`` version 1; return the agreement."""
    from export.publish import publish_model

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        agreement = top1_agreement(fp32_path, quantized, validation)
        proto = onnx.load(str(quantized))
        int8_card = card.model_copy(
            update={
                "name": f"{card.name}-int8",
                "quantization": "int8_qdq",
                "source_model": f"{card.name}/{card.version}",
                "top1_agreement": agreement,
            }
        )
        publish_model(repository, proto, int8_card, version=1)
    return agreement
