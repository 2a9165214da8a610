"""INT8 variants: QDQ per-channel graph, card, agreement, atomic publishing, service-loadable."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export.quantize as quantize
from export.__main__ import main
from export.build import BuildRequest, BuildResult, build_model
from export.errors import ExportCheckError
from export.publish import existing_versions
from export.train import TrainConfig
from service.modelcard import (
    DIGEST_SUFFIX,
    INPUT_NAME,
    LOGITS_NAME,
    MODEL_FILENAME,
    PROBABILITIES_NAME,
    ModelCard,
)
from service.repository import ModelFile, verify_model_file
from service.runtime import ModelRuntime

TINY = {"arch": "resnet8", "width": 4, "image_size": 8}


@dataclass(frozen=True)
class Quantized:
    repository: Path
    build: BuildResult
    result: quantize.Int8Result


def _build_and_quantize(repository: Path, activation: str, name: str) -> Quantized:
    """A tiny model trained 2 epochs on digits, published with its INT8 variant (1 thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build = build_model(
            BuildRequest(
                **TINY,
                activation=activation,
                dataset="digits",
                train=TrainConfig(epochs=2, batch_size=64, lr=0.05),
                name=name,
                repository=repository,
                progress=False,
                command="test",
            )
        )
        result = quantize.quantize_build(build, repository, calibration_images=64)
    finally:
        torch.set_num_threads(threads)
    return Quantized(repository, build, result)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    return _build_and_quantize(tmp_path_factory.mktemp("int8_repo"), "relu", "tiny-q")


def _session(path: Path, extra_outputs: list[str] | None = None) -> ort.InferenceSession:
    proto = onnx.load(str(path))
    for name in extra_outputs or []:
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _val_inputs(q: Quantized, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    """Validation images normalised independently of export/ (numpy, the card's mean/std)."""
    assert q.build.dataset is not None and q.build.split is not None
    images = q.build.dataset.images[q.build.split.val].numpy().astype(np.float32) / 255.0
    mean = np.array(card.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(card.std, dtype=np.float32).reshape(1, 3, 1, 1)
    targets = q.build.dataset.targets[q.build.split.val].numpy()
    return ((images - mean) / std).astype(np.float32), targets


def test_int8_card_records_source_agreement_and_accuracy(quantized: Quantized) -> None:
    source = quantized.build.published
    int8 = quantized.result.published
    card = int8.card
    assert (int8.name, int8.version) == ("tiny-q-int8", 1)
    assert card.name == "tiny-q-int8" and card.version == 1
    assert card.quantization == "int8_qdq"
    assert card.source_model == "tiny-q/1"
    for field in (
        "architecture",
        "activation",
        "labels",
        "input_size",
        "mean",
        "std",
        "resize_size",
        "resize_policy",
        "dataset",
        "split",
        "seed",
        "parameters",
    ):
        assert getattr(card, field) == getattr(source.card, field), field
    # Independent computation: both graphs through onnxruntime on the normalised val split.
    inputs, targets = _val_inputs(quantized, card)
    fp32_top1 = _session(source.path).run([LOGITS_NAME], {INPUT_NAME: inputs})[0].argmax(1)
    int8_top1 = _session(int8.path).run([LOGITS_NAME], {INPUT_NAME: inputs})[0].argmax(1)
    assert len(inputs) == len(quantized.build.split.val) == quantized.result.validation_images
    assert card.top1_agreement == pytest.approx(float(np.mean(fp32_top1 == int8_top1)), abs=1e-12)
    assert card.val_accuracy == pytest.approx(float(np.mean(int8_top1 == targets)), abs=1e-12)
    assert quantized.result.top1_agreement == card.top1_agreement
    assert card.top1_agreement > 0.8  # a trained tiny model keeps most decisions


def test_card_read_back_from_the_file_equals_the_published_card(quantized: Quantized) -> None:
    int8 = quantized.result.published
    session = ort.InferenceSession(str(int8.path), providers=["CPUExecutionProvider"])
    card = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert card == int8.card


def test_digest_file_and_layout(quantized: Quantized) -> None:
    int8 = quantized.result.published
    assert int8.path == quantized.repository / "tiny-q-int8" / "1" / MODEL_FILENAME
    data = int8.path.read_bytes()
    expected = hashlib.sha256(data).hexdigest()
    digest_file = int8.path.with_name(MODEL_FILENAME + DIGEST_SUFFIX)
    assert digest_file.read_text() == f"{expected}  {MODEL_FILENAME}\n"
    assert int8.sha256 == expected
    leftovers = [p.name for p in (quantized.repository / "tiny-q-int8").iterdir()]
    assert leftovers == ["1"]  # no staging directory left behind


def test_the_service_loads_and_runs_the_int8_model(quantized: Quantized) -> None:
    int8 = quantized.result.published
    model_file = ModelFile("tiny-q-int8", 1, int8.path)
    digest = verify_model_file(model_file)
    runtime = ModelRuntime.load(
        int8.path, name="tiny-q-int8", version=1, digest=digest, intra_op_threads=1
    )
    inputs, _ = _val_inputs(quantized, int8.card)
    logits, probabilities = runtime.run(inputs[:16])
    assert logits.shape == probabilities.shape == (16, 10)
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(probabilities.astype(np.float64).sum(axis=1), 1.0, atol=1e-5)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, shifted / shifted.sum(1, keepdims=True), atol=1e-5)


def test_graph_is_qdq_with_per_channel_int8_weights(quantized: Quantized) -> None:
    proto = onnx.load(str(quantized.result.published.path))
    fp32 = onnx.load(str(quantized.build.published.path))
    fp32_convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert ops.count("Conv") == len(fp32_convs)
    initializers = {t.name: t for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    for conv in (n for n in proto.graph.node if n.op_type == "Conv"):
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        weight, scale = initializers[dq.input[0]], initializers[dq.input[1]]
        assert weight.data_type == onnx.TensorProto.INT8
        # |w| ≤ 64: two uint8 × int8 products summed in 16 bits (AVX2 vpmaddubsw) stay
        # within 2 · 255 · 64 = 32 640 ≤ 32 767, so they never saturate
        values = onnx.numpy_helper.to_array(weight)
        assert values.min() >= -64 and values.max() <= 64, (values.min(), values.max())
        out_channels = weight.dims[0]
        assert list(scale.dims) == [out_channels]  # one scale per output channel
    # The softmax stays float so probabilities still sum to 1.
    assert producers[PROBABILITIES_NAME].op_type == "Softmax"
    consumers = [n.op_type for n in proto.graph.node if PROBABILITIES_NAME in n.input]
    assert consumers == []


def test_onnxruntime_runs_int8_kernels(quantized: Quantized) -> None:
    counts = quantize.int8_kernel_counts(quantized.result.published.path.read_bytes())
    fp32 = onnx.load(str(quantized.build.published.path))
    convs = sum(n.op_type == "Conv" for n in fp32.graph.node)
    assert counts.get("QLinearConv", 0) == convs
    assert counts.get("Conv", 0) == 0


def test_activation_sites_point_at_what_the_next_layer_sees(quantized: Quantized) -> None:
    int8 = quantized.result.published
    fp32_sites = quantized.build.published.card.activation_sites
    sites = int8.card.activation_sites
    assert [s.name for s in sites] == [s.name for s in fp32_sites]
    proto = onnx.load(str(int8.path))
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert all(producers[s.tensor] == "DequantizeLinear" for s in sites)
    session = _session(int8.path, [s.tensor for s in sites] + [s.tensor for s in fp32_sites])
    inputs, _ = _val_inputs(quantized, int8.card)
    names = [s.tensor for s in sites] + [s.tensor for s in fp32_sites]
    values = dict(zip(names, session.run(names, {INPUT_NAME: inputs[:32]}), strict=True))
    # ReLU outputs are never negative; the float tensor before the quantizer still is.
    assert all(float(values[s.tensor].min()) >= 0.0 for s in sites)
    assert any(float(values[s.tensor].min()) < 0.0 for s in fp32_sites)


def test_calibration_uses_normalised_training_images_only(
    quantized: Quantized, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: dict[str, np.ndarray] = {}

    def capture(repository: Path, source: object, **kwargs: np.ndarray) -> None:
        captured.update(kwargs)

    monkeypatch.setattr(quantize, "publish_int8_variant", capture)
    quantize.quantize_build(quantized.build, tmp_path, calibration_images=40)
    build = quantized.build
    assert build.dataset is not None and build.split is not None
    card = build.published.card
    images = build.dataset.images.numpy().astype(np.float32) / 255.0
    mean = np.array(card.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(card.std, dtype=np.float32).reshape(1, 3, 1, 1)
    everything = ((images - mean) / std).reshape(len(images), -1)
    calibration = captured["calibration"].reshape(40, -1)
    train, val = set(build.split.train.tolist()), set(build.split.val.tolist())
    for row in calibration:
        match = np.flatnonzero(np.all(np.abs(everything - row) < 1e-5, axis=1))
        assert len(match) >= 1 and set(match.tolist()) <= train and not set(match.tolist()) & val
    assert len(captured["validation"]) == len(val)


def test_too_little_agreement_publishes_nothing(
    quantized: Quantized, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0])])  # agreement 3/4
    monkeypatch.setattr(quantize, "predict_top1", lambda session, inputs: next(answers))
    inputs, _ = _val_inputs(quantized, quantized.build.published.card)
    with pytest.raises(ExportCheckError, match=r"only 75\.0% .* at least 80\.0% is required"):
        quantize.publish_int8_variant(
            tmp_path,
            quantized.build.published,
            calibration=inputs[:8],
            validation=inputs[:4],
            min_agreement=0.8,
        )
    assert existing_versions(tmp_path, "tiny-q-int8") == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        (np.zeros((0, 3, 8, 8), np.float32), "non-empty float32 batch"),
        (np.zeros((4, 8, 8), np.float32), "non-empty float32 batch"),
        (np.full((4, 3, 8, 8), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_bad_calibration_inputs_are_refused(
    quantized: Quantized, tmp_path: Path, calibration: np.ndarray, message: str
) -> None:
    inputs, _ = _val_inputs(quantized, quantized.build.published.card)
    with pytest.raises(ExportCheckError, match=message):
        quantize.publish_int8_variant(
            tmp_path, quantized.build.published, calibration=calibration, validation=inputs
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_build_with_quantize_publishes_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "build",
        "--arch",
        "resnet8",
        "--width",
        "4",
        "--image-size",
        "8",
        "--epochs",
        "1",
        "--dataset",
        "digits",
        "--threads",
        "1",
        "--quiet",
        "--name",
        "cli-q",
        "--models-dir",
        str(tmp_path),
        "--quantize",
        "int8",
        "--min-int8-agreement",
        "0",
        "--calibration-images",
        "32",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "published cli-q version 1" in out
    assert "published cli-q-int8 version 1" in out and "calibrated on 32 training images" in out
    assert existing_versions(tmp_path, "cli-q") == [1]
    assert existing_versions(tmp_path, "cli-q-int8") == [1]


def test_cli_rejects_a_bad_agreement_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "build",
                "--models-dir",
                str(tmp_path),
                "--quantize",
                "int8",
                "--min-int8-agreement",
                "1.5",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "expected a number in [0, 1], got 1.5" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_build_help_explains_quantization(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--quantize", "--calibration-images", "--min-int8-agreement"):
        assert flag in text
    assert "per-channel int8 weights" in text


def test_cli_refuses_quantize_without_a_dataset_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without a dataset there is nothing to calibrate on: the refusal must come before the fp32
    # model is trained or published, not after.
    status = main(
        ["build", "--dataset", "none", "--models-dir", str(tmp_path), "--quantize", "int8"]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "--quantize int8 needs training images" in err and "nothing was built" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_mish_formulation_stays_float_and_the_int8_model_agrees(tmp_path: Path) -> None:
    # Mish's fast formulation divides by d = (1 + e^x)² + 1, which no uint8 range can hold: a
    # quantized d made the INT8 model agree with fp32 at chance level. Its nodes must stay float.
    from export.onnx_rewrite import KEEP_FLOAT_PREFIX, SITE_PREFIX

    result = _build_and_quantize(tmp_path, "mish", "tiny-mish").result
    proto = onnx.load(str(result.published.path))
    kept = [n for n in proto.graph.node if n.name.startswith(KEEP_FLOAT_PREFIX)]
    assert {n.op_type for n in kept} >= {"Exp", "Div"}
    quantized_inputs = {
        i for n in proto.graph.node if n.op_type == "QuantizeLinear" for i in n.input
    }
    inner = {o for n in kept for o in n.output if not o.startswith(SITE_PREFIX)}
    assert inner and not inner & quantized_inputs
    assert result.top1_agreement >= 0.95, result.top1_agreement
