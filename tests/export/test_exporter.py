"""ONNX export: every activation exports, passes checker + parity, and names its site tensors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.errors import ExportCheckError
from export.exporter import (
    OPSET,
    SITE_PREFIX,
    check_onnx,
    check_parity,
    export_onnx,
    make_card,
    with_card,
)
from export.resnet import activation_sites, build_resnet
from service.activations import NETWORK_ACTIVATIONS
from service.modelcard import INPUT_NAME, LOGITS_NAME, PROBABILITIES_NAME, ModelCard

SIZE = (16, 16)


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def session_with_outputs(proto: onnx.ModelProto, extra: list[str]) -> ort.InferenceSession:
    """What the service does to inspect a model: add site tensors as graph outputs."""
    inspected = onnx.ModelProto()
    inspected.CopyFrom(proto)
    for name in extra:
        inspected.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return ort.InferenceSession(inspected.SerializeToString(), providers=["CPUExecutionProvider"])


def torch_site_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    captured: dict[str, np.ndarray] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, i, out, name=name: captured.__setitem__(name, out.detach().numpy())
        )
        for name, module in activation_sites(model)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return captured


@pytest.mark.parametrize("activation", NETWORK_ACTIVATIONS)
def test_every_activation_exports_checks_and_matches_torch(activation: str) -> None:
    model = build_resnet("resnet8", activation, num_classes=10, width=4, seed=1).eval()
    graph = export_onnx(model, SIZE)
    data = graph.proto.SerializeToString()
    check_onnx(data)

    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, *SIZE, generator=generator) for n in (5, 1)]
    report = check_parity(model, data, batches)
    assert report.samples == 6 and report.top1_mismatches == 0
    assert report.max_abs_diff <= report.tolerance

    # Inputs/outputs, opset, dynamic batch.
    assert [i.name for i in graph.proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.proto.graph.output] == [LOGITS_NAME, PROBABILITIES_NAME]
    assert {o.domain or "": o.version for o in graph.proto.opset_import}[""] == OPSET
    batch_dim = graph.proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    assert all(not init.external_data for init in graph.proto.graph.initializer)

    # Every site tensor exists and equals the torch module's output (forward hook).
    names = [name for name, _ in activation_sites(model)]
    assert [s.name for s in graph.activation_sites] == names
    assert [s.tensor for s in graph.activation_sites] == [SITE_PREFIX + n for n in names]
    x = batches[0]
    tensors = [s.tensor for s in graph.activation_sites]
    session = session_with_outputs(graph.proto, tensors)
    outputs = session.run([LOGITS_NAME, PROBABILITIES_NAME, *tensors], {INPUT_NAME: x.numpy()})
    expected_sites = torch_site_outputs(model, x)
    for site, got in zip(graph.activation_sites, outputs[2:], strict=True):
        want = expected_sites[site.name]
        assert got.shape == want.shape, site.name
        if activation == "binary_step":
            assert np.mean(got != want) < 1e-3, site.name  # a pre-activation within float eps of 0
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max() + 1e-5)

    # Probabilities: softmax of the logits, computed in the graph.
    logits, probabilities = outputs[0], outputs[1]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        probabilities, shifted / shifted.sum(axis=1, keepdims=True), atol=1e-6
    )


def test_native_ops_for_common_activations() -> None:
    """The cheapest activations export as one native ONNX op each (no decomposition)."""
    expected = {"relu": "Relu", "gelu": "Gelu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    for activation, op in expected.items():
        model = build_resnet("resnet8", activation, num_classes=10, width=4, seed=0)
        ops = [node.op_type for node in export_onnx(model, SIZE).proto.graph.node]
        assert ops.count(op) == 7, (activation, sorted(set(ops)))  # one per activation site


def test_card_round_trips_through_onnx_metadata() -> None:
    model = build_resnet(
        "resnet8",
        "leaky_relu",
        num_classes=3,
        width=4,
        seed=0,
        activation_params={"negative_slope": 0.1},
    )
    graph = export_onnx(model, SIZE)
    card = make_card(
        model,
        graph,
        name="demo",
        architecture="resnet8",
        labels=["a", "b", "c"],
        input_size=SIZE,
        resize_size=18,
        mean=(0.5, 0.5, 0.5),
        std=(0.2, 0.2, 0.2),
        dataset="shapes",
        val_accuracy=0.75,
        epochs=3,
        seed=9,
        command="x y z",
    )
    stamped = with_card(graph.proto, card)
    session = ort.InferenceSession(stamped.SerializeToString(), providers=["CPUExecutionProvider"])
    back = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert back == card
    assert back.activation == "leaky_relu" and back.activation_params == {"negative_slope": 0.1}
    assert back.opset == OPSET and back.torch_version == torch.__version__
    assert back.onnx_version == onnx.__version__
    assert back.parameters == sum(p.numel() for p in model.parameters())
    assert [s.name for s in back.activation_sites][:2] == ["act1", "layer1.0.act1"]
    assert not graph.proto.metadata_props  # the unstamped graph is untouched


def test_parity_failure_is_reported() -> None:
    model = build_resnet("resnet8", "relu", num_classes=10, width=4, seed=0).eval()
    data = export_onnx(model, SIZE).proto.SerializeToString()
    with torch.no_grad():
        model.fc.bias += 1.0  # torch now differs from the exported graph
    with pytest.raises(ExportCheckError, match="onnxruntime and torch disagree: max"):
        check_parity(model, data, [torch.randn(2, 3, *SIZE)])


def test_checker_rejects_a_broken_graph() -> None:
    model = build_resnet("resnet8", "relu", num_classes=10, width=4, seed=0).eval()
    proto = export_onnx(model, SIZE).proto
    proto.graph.node[0].input[0] = "no_such_tensor"
    with pytest.raises(ExportCheckError, match="the exported ONNX graph is invalid"):
        check_onnx(proto.SerializeToString())


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_imagenet_style_architectures_export_with_parity(arch: str) -> None:
    """7×7 stem + max-pool, BasicBlock and Bottleneck (narrow, small input to stay fast)."""
    model = build_resnet(arch, "silu", num_classes=5, width=4, seed=0).eval()
    graph = export_onnx(model, (64, 64))
    data = graph.proto.SerializeToString()
    check_onnx(data)
    report = check_parity(model, data, [torch.randn(3, 3, 64, 64), torch.randn(1, 3, 64, 64)])
    assert report.samples == 4
    assert len(graph.activation_sites) == len(activation_sites(model))
    assert graph.activation_sites[-1].name == (
        "layer4.1.act2" if arch == "resnet18" else "layer4.2.act3"
    )
