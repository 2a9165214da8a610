"""INT8 variants: static QDQ quantization of a published fp32 model, published as ``<name>-int8``.

``quantize_int8`` runs onnxruntime's ``quant_pre_process`` (symbolic shape inference; the graph is
already BatchNorm-folded by the exporter, so no further optimisation is needed and the activation
site tensors keep their names) and ``quantize_static`` in QDQ format with per-channel int8 weights
and uint8 activations, calibrated (MinMax) on normalised training images. The weights use about
7 of their 8 bits, |w| ≤ 64 (``reduce_range``): on x86 CPUs without VNNI (AVX2, e.g. AMD EPYC
before Zen 4) onnxruntime multiplies uint8 by int8 with ``vpmaddubsw``, whose 16-bit sums of two
products saturate with full-range weights (2 · 255 · 127 > 32 767) but not with these
(2 · 255 · 64 = 32 640), so the integer sums are exact on every x86 CPU. Measured on an AVX2
EPYC, the shipped digits model with full-range weights agreed with its fp32 source on 96.9 % of
the validation images (99.7 % on the machine it was built on); with 7-bit weights, 100 %.

The softmax stays in float so the probabilities still sum to 1, and so do activation
formulations whose intermediate values no 8-bit range can hold
(``export.onnx_rewrite.KEEP_FLOAT``: Mish). onnxruntime then fuses each QDQ group into
``QLinearConv`` / ``QLinearAdd`` / ``QGemm`` kernels (``int8_kernel_counts`` shows it).

``publish_int8_variant`` quantizes, checks the graph (``onnx.checker``, finite logits,
probabilities summing to 1), measures top-1 agreement with the fp32 model on the validation
inputs, refuses to publish below ``min_agreement``, and publishes atomically with a card of its
own (``quantization="int8_qdq"``, ``source_model``, ``top1_agreement``).
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from export.build import BuildResult
from export.errors import ExportCheckError
from export.exporter import check_onnx, ort_session
from export.onnx_rewrite import KEEP_FLOAT_PREFIX
from export.publish import PublishedModel, publish_model
from service.modelcard import INPUT_NAME, LOGITS_NAME, PROBABILITIES_NAME, ActivationSite

INT8_SUFFIX = "-int8"
QUANTIZATION = "int8_qdq"
CALIBRATION_BATCH = 32
INT8_KERNELS = ("QLinearConv", "QLinearAdd", "QGemm", "QLinearMatMul", "ConvInteger")


def int8_name(fp32_name: str) -> str:
    return fp32_name + INT8_SUFFIX


class _BatchReader(CalibrationDataReader):
    """Feeds the calibration inputs to the quantizer in fixed-size batches."""

    def __init__(self, inputs: np.ndarray, batch_size: int) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _check_inputs(inputs: np.ndarray, what: str) -> np.ndarray:
    if inputs.ndim != 4 or inputs.shape[1] != 3 or len(inputs) == 0:
        raise ExportCheckError(
            f"{what} must be a non-empty float32 batch [N, 3, H, W], got shape {inputs.shape}"
        )
    if not np.all(np.isfinite(inputs)):
        raise ExportCheckError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(inputs, dtype=np.float32)


def _pre_process(source: Path, target: Path) -> None:
    """Shape inference for the quantizer: symbolic if it copes with the graph, else ONNX's own.

    (The symbolic pass cannot follow maxout's reshape; ONNX shape inference can.)
    """
    try:
        quant_pre_process(str(source), str(target), skip_optimization=True)
    except Exception:  # the symbolic pass raises assorted types on shapes it cannot follow
        quant_pre_process(
            str(source), str(target), skip_optimization=True, skip_symbolic_shape=True
        )


def quantize_int8(model_bytes: bytes, calibration: np.ndarray) -> onnx.ModelProto:
    """Static QDQ quantization of an fp32 graph, calibrated on ``calibration`` (normalised)."""
    calibration = _check_inputs(calibration, "calibration inputs")
    source = onnx.load_from_string(model_bytes)
    keep_float = [
        n.name
        for n in source.graph.node
        if n.op_type == "Softmax" or n.name.startswith(KEEP_FLOAT_PREFIX)
    ]
    with tempfile.TemporaryDirectory(prefix="actlab-quantize-") as tmp:
        fp32_path, pre_path, int8_path = (Path(tmp) / f for f in ("fp32", "pre", "int8"))
        fp32_path.write_bytes(model_bytes)
        _pre_process(fp32_path, pre_path)
        quantize_static(
            str(pre_path),
            str(int8_path),
            _BatchReader(calibration, CALIBRATION_BATCH),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # 7-bit weights: no vpmaddubsw saturation on AVX2 (docstring)
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
        )
        return onnx.load(str(int8_path))


def dequantized_sites(
    proto: onnx.ModelProto, sites: Sequence[ActivationSite]
) -> list[ActivationSite]:
    """The sites of a QDQ graph, each pointing at the tensor the next layer really sees.

    The quantizer drops a ReLU in front of a uint8 QuantizeLinear (the quantization range clips
    it) and hands its output name to the convolution, so the float tensor ``site:…`` holds
    pre-activation values; the DequantizeLinear after it holds the activation's output.
    Sites whose tensor no longer exists are left out.
    """
    consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in proto.graph.node:
        for name in node.input:
            consumers[name].append(node)
    produced = {out for node in proto.graph.node for out in node.output}
    result = []
    for site in sites:
        if site.tensor not in produced:
            continue
        tensor = site.tensor
        for q in consumers[site.tensor]:
            if q.op_type != "QuantizeLinear":
                continue
            dq = [n for n in consumers[q.output[0]] if n.op_type == "DequantizeLinear"]
            if dq:
                tensor = dq[0].output[0]
                break
        result.append(ActivationSite(name=site.name, tensor=tensor))
    return result


def predict_top1(session: ort.InferenceSession, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    """Top-1 class of every input; checks logits are finite and probabilities sum to 1."""
    winners = []
    for start in range(0, len(inputs), batch):
        logits, probabilities = session.run(
            [LOGITS_NAME, PROBABILITIES_NAME], {INPUT_NAME: inputs[start : start + batch]}
        )
        if not np.all(np.isfinite(logits)):
            raise ExportCheckError("the quantized graph produces non-finite logits")
        if not np.allclose(probabilities.astype(np.float64).sum(axis=1), 1.0, atol=1e-5):
            raise ExportCheckError("the quantized graph's probabilities do not sum to 1")
        winners.append(logits.argmax(axis=1))
    return np.concatenate(winners)


def top1_agreement(fp32_bytes: bytes, int8_bytes: bytes, inputs: np.ndarray) -> float:
    """Fraction of ``inputs`` on which both graphs pick the same top-1 class."""
    inputs = _check_inputs(inputs, "validation inputs")
    fp32 = predict_top1(ort_session(fp32_bytes), inputs)
    int8 = predict_top1(ort_session(int8_bytes), inputs)
    return float(np.mean(fp32 == int8))


def int8_kernel_counts(model_bytes: bytes) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs (after its optimisations)."""
    with tempfile.TemporaryDirectory(prefix="actlab-optimized-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return dict(collections.Counter(node.op_type for node in optimized.graph.node))


@dataclass(frozen=True)
class Int8Result:
    published: PublishedModel
    top1_agreement: float
    calibration_images: int
    validation_images: int


def publish_int8_variant(
    repository: Path,
    source: PublishedModel,
    *,
    calibration: np.ndarray,
    validation: np.ndarray,
    validation_targets: np.ndarray | None = None,
    min_agreement: float = 0.0,
    version: int | None = None,
) -> Int8Result:
    """Quantize the published fp32 ``source`` and publish it as ``<name>-int8``.

    ``calibration`` (training images) and ``validation`` are float32 [N, 3, H, W] inputs,
    normalised exactly as the service normalises a request (the card's mean/std). With
    ``validation_targets`` the card's ``val_accuracy`` is the int8 model's own; without, it is
    left empty (the fp32 accuracy would be a claim nobody measured).
    """
    if not 0.0 <= min_agreement <= 1.0:
        raise ExportCheckError(f"the minimum agreement must be in [0, 1], got {min_agreement}")
    fp32_bytes = source.path.read_bytes()
    proto = quantize_int8(fp32_bytes, calibration)
    int8_bytes = proto.SerializeToString()
    check_onnx(int8_bytes)
    validation = _check_inputs(validation, "validation inputs")
    fp32_top1 = predict_top1(ort_session(fp32_bytes), validation)
    int8_top1 = predict_top1(ort_session(int8_bytes), validation)
    agreement = float(np.mean(fp32_top1 == int8_top1))
    accuracy = None
    if validation_targets is not None:
        if len(validation_targets) != len(validation):
            raise ExportCheckError("validation targets and inputs differ in length")
        accuracy = float(np.mean(int8_top1 == np.asarray(validation_targets)))
    if agreement < min_agreement:
        raise ExportCheckError(
            f"the int8 model agrees with {source.name} on only {agreement:.1%} of the "
            f"validation images; at least {min_agreement:.1%} is required (lower it with "
            "--min-int8-agreement, or calibrate on more images)"
        )
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    card = source.card.model_copy(
        update={
            "name": int8_name(source.name),
            "quantization": QUANTIZATION,
            "source_model": f"{source.name}/{source.version}",
            "top1_agreement": agreement,
            "val_accuracy": accuracy,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "opset": opset,
            "activation_sites": dequantized_sites(proto, source.card.activation_sites),
        }
    )
    card = type(card).model_validate(card.model_dump())
    published = publish_model(repository, proto, card, version=version)
    return Int8Result(published, agreement, len(calibration), len(validation))


DEFAULT_CALIBRATION_IMAGES = 256


def quantize_build(
    result: BuildResult,
    repository: Path,
    *,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    min_agreement: float = 0.0,
    seed: int = 0,
) -> Int8Result:
    """Publish the INT8 variant of a finished build, calibrated on its training images.

    The calibration images are a seeded random subset of the training split, normalised with
    the card's mean/std (``result.norm``, exactly as training and the service do); agreement
    and accuracy are measured on the whole validation split.
    """
    if result.dataset is None or result.split is None or len(result.split.val) == 0:
        raise ExportCheckError(
            "--quantize int8 needs training images to calibrate on and validation images to "
            "measure agreement: give --dataset (digits, shapes or imagefolder:PATH)"
        )
    if calibration_images < 1:
        raise ExportCheckError(f"calibration needs at least 1 image, got {calibration_images}")
    generator = torch.Generator().manual_seed(seed)
    train = result.split.train[torch.randperm(len(result.split.train), generator=generator)]
    chosen = train[:calibration_images]
    calibration = result.norm(result.dataset.images[chosen]).numpy()
    validation = result.norm(result.dataset.images[result.split.val]).numpy()
    targets = result.dataset.targets[result.split.val].numpy()
    return publish_int8_variant(
        repository,
        result.published,
        calibration=calibration,
        validation=validation,
        validation_targets=targets,
        min_agreement=min_agreement,
    )
