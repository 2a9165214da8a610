"""The activation fast path (export/onnx_rewrite.py) against the catalogue and against torch.

- Every fast formulation, run by onnxruntime with all graph optimisations (so the NCHWc layout
  and fusions it relies on are exercised), matches ``service.activations`` on a dense float32
  grid from -30 to 30 plus ±1e-45 … ±1e4 and ±0, at the default parameters and at each
  parameter bound: |y - reference| ≤ 1e-5 · max(1, |x|), never NaN or inf.
- The slow ops are gone from the rewritten graph; activations without a fast formulation are
  left byte-for-byte unchanged.
- Exported tiny networks still pass the exporter's check and torch parity, and every activation
  site tensor (what inspection reads) equals torch's module output.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.onnx_rewrite import (
    FORMULATIONS,
    SITE_PREFIX,
    RewriteError,
    has_fast_formulation,
    rewrite_activations,
    site_tensors,
)
from service.activations import NETWORK_ACTIVATIONS, ParamValue, get_activation

CHANNELS = 8
SITE = SITE_PREFIX + "act"
SLOW_OPS = {"Softplus", "Mish", "Elu", "Selu", "Celu", "PRelu"}
"""Scalar onnxruntime kernels that also force the tensor out of the NCHWc layout."""


def _grid() -> np.ndarray:
    """Dense around 0, then every decade out to 1e4 on both sides, denormals and ±0."""
    dense = np.linspace(-30.0, 30.0, 60_001)
    decades = np.logspace(-45.0, 4.0, 2_000)
    values = np.concatenate([dense, decades, -decades, [0.0, -0.0, 1e4, -1e4]])
    x = values.astype(np.float32)
    size = -(-x.size // (CHANNELS * 16)) * CHANNELS * 16
    return np.resize(x, size).reshape(1, CHANNELS, -1, 16)


GRID = _grid()


def _naive_region(
    name: str, params: Mapping[str, ParamValue], slopes: np.ndarray
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """What torch.onnx emits for the activation: pre -> ... -> SITE (the slow form)."""
    c = lambda n, v: numpy_helper.from_array(np.asarray(v, np.float32), n)  # noqa: E731
    if name == "softplus":
        beta, threshold = float(params["beta"]), float(params["threshold"])
        nodes = [
            helper.make_node("Mul", ["pre", "beta"], ["bx"]),
            helper.make_node("Softplus", ["bx"], ["sp"]),
            helper.make_node("Div", ["sp", "beta"], ["spb"]),
            helper.make_node("Greater", ["bx", "thr"], ["above"]),
            helper.make_node("Where", ["above", "pre", "spb"], [SITE]),
        ]
        return nodes, [c("beta", beta), c("thr", threshold)]
    if name == "prelu":
        return [helper.make_node("PRelu", ["pre", "slope"], [SITE])], [c("slope", slopes)]
    if name == "softsign":  # torch.onnx's decomposition
        nodes = [
            helper.make_node("Abs", ["pre"], ["abs"]),
            helper.make_node("Add", ["abs", "one"], ["den"]),
            helper.make_node("Div", ["pre", "den"], [SITE]),
        ]
        return nodes, [c("one", 1.0)]
    if name == "binary_step":
        nodes = [
            helper.make_node("Greater", ["pre", "zero"], ["gt"]),
            helper.make_node("Cast", ["gt"], [SITE], to=TensorProto.FLOAT),
        ]
        return nodes, [c("zero", 0.0)]
    attrs = {"alpha": float(params["alpha"])} if "alpha" in params else {}
    op = {"mish": "Mish", "elu": "Elu", "selu": "Selu", "celu": "Celu"}[name]
    return [helper.make_node(op, ["pre"], [SITE], **attrs)], []


def _naive_model(
    name: str, params: Mapping[str, ParamValue], slopes: np.ndarray
) -> onnx.ModelProto:
    """x -> identity 1×1 Conv (exact) -> naive activation -> SITE (the graph output)."""
    eye = np.eye(CHANNELS, dtype=np.float32).reshape(CHANNELS, CHANNELS, 1, 1)
    region, constants = _naive_region(name, params, slopes)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "eye"], ["pre"], kernel_shape=[1, 1]), *region],
        "naive",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", CHANNELS, "h", "w"])],
        [helper.make_tensor_value_info(SITE, TensorProto.FLOAT, ["n", CHANNELS, "h", "w"])],
        [numpy_helper.from_array(eye, "eye"), *constants],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return np.asarray(session.run([SITE], {"x": x})[0])


def _reference(name: str, params: Mapping[str, ParamValue], slopes: np.ndarray) -> np.ndarray:
    spec = get_activation(name)
    x = GRID.astype(np.float64)
    if name != "prelu":
        return spec.evaluate(x, params)[0]
    per_channel = np.broadcast_to(slopes.reshape(-1), (CHANNELS,))
    return np.concatenate(
        [
            spec.evaluate(x[:, i : i + 1], {"init": float(a), "mode": "channel"})[0]
            for i, a in enumerate(per_channel)
        ],
        axis=1,
    )


def _cases() -> list[tuple[str, dict[str, ParamValue]]]:
    """Defaults, then each numeric parameter at its minimum and its maximum."""
    cases: list[tuple[str, dict[str, ParamValue]]] = []
    for name in FORMULATIONS:
        spec = get_activation(name)
        cases.append((name, {}))
        for param in spec.params:
            for bound in (param.minimum, param.maximum):
                if bound is not None:
                    cases.append((name, {param.name: bound}))
    cases.append(("prelu", {"mode": "single", "init": 0.25}))
    return cases


@pytest.mark.parametrize(("name", "given"), _cases(), ids=lambda v: str(v))
def test_fast_formulation_matches_catalogue(name: str, given: dict[str, ParamValue]) -> None:
    params = get_activation(name).resolve_params(given)
    if name == "prelu" and params["mode"] == "channel":
        slopes = np.linspace(0.0, 1.0, CHANNELS, dtype=np.float32).reshape(CHANNELS, 1, 1)
    else:
        slopes = np.full((1,), float(params.get("init", 0.0)), np.float32)
    naive = _naive_model(name, params, slopes)
    fast = rewrite_activations(naive, name, params)

    replaced = {"binary_step": {"Greater", "Cast"}, "softsign": {"Abs", "Add", "Div"}}
    slow = SLOW_OPS | replaced.get(name, set())
    assert slow.isdisjoint(n.op_type for n in fast.graph.node)
    onnx.checker.check_model(fast, full_check=True)
    got = _run(fast, GRID).astype(np.float64)
    expected = _reference(name, params, slopes)
    assert np.all(np.isfinite(got))
    error = np.abs(got - expected)
    allowed = 1e-5 * np.maximum(1.0, np.abs(GRID.astype(np.float64)))
    worst = np.unravel_index(np.argmax(error / allowed), error.shape)
    assert np.all(error <= allowed), (
        f"{name} {given}: |error| {error[worst]:.3g} at x={GRID[worst]!r} "
        f"exceeds {allowed[worst]:.3g}"
    )


def test_formulations_cover_only_network_activations() -> None:
    assert set(FORMULATIONS) <= set(NETWORK_ACTIVATIONS) - {"maxout"}
    assert has_fast_formulation("Swish") is False  # silu is fused by onnxruntime already
    assert has_fast_formulation("MISH") is True


def test_site_prefix_matches_exporter() -> None:
    from export.exporter import SITE_PREFIX as EXPORTER_PREFIX

    assert SITE_PREFIX == EXPORTER_PREFIX


def test_activation_without_fast_formulation_is_unchanged() -> None:
    model = _naive_model("elu", {"alpha": 1.0}, np.zeros(1, np.float32))
    before = model.SerializeToString()
    assert rewrite_activations(model, "relu").SerializeToString() == before
    assert model.SerializeToString() == before  # the input is never modified


def test_region_that_cannot_be_isolated_is_an_error() -> None:
    model = _naive_model("mish", {}, np.zeros(1, np.float32))
    with pytest.raises(RewriteError, match="cannot isolate the mish subgraph computing 'site:x1'"):
        rewrite_activations(model, "mish", sites=["site:x1"])
    # A region value read outside the region (here a second graph output) cannot be removed.
    leaky = _naive_model("softplus", get_activation("softplus").resolve_params(), np.zeros(1))
    leaky.graph.output.append(helper.make_tensor_value_info("sp", TensorProto.FLOAT, None))
    with pytest.raises(RewriteError, match="cannot isolate the softplus subgraph"):
        rewrite_activations(leaky, "softplus")


def test_unknown_activation_lists_the_choices() -> None:
    model = _naive_model("mish", {}, np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="unknown activation 'mash'; choose one of: relu"):
        rewrite_activations(model, "mash")


# --------------------------------------------------------------------------- exported networks

torch = pytest.importorskip("torch")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "given"),
    [
        ("softplus", {}),
        ("softplus", {"beta": 2.0, "threshold": 5.0}),
        ("mish", {}),
        ("elu", {}),
        ("selu", {}),
        ("celu", {"alpha": 0.5}),
        ("prelu", {}),
        ("binary_step", {}),
    ],
    ids=lambda v: str(v),
)
def test_exported_network_keeps_parity_and_site_values(
    name: str, given: dict[str, ParamValue]
) -> None:
    from export.exporter import check_onnx, check_parity, export_onnx
    from export.resnet import activation_sites, build_resnet

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = build_resnet(
        "resnet8", name, num_classes=10, width=8, seed=3, activation_params=given or None
    ).eval()
    if name == "prelu":  # trained slopes differ per channel and leave [0, 1]
        with torch.no_grad():
            for _, module in activation_sites(model):
                module.weight.copy_(torch.linspace(-0.5, 1.5, module.weight.numel()))
    graph = export_onnx(model, (32, 32))
    proto = graph.proto
    assert SLOW_OPS.isdisjoint(n.op_type for n in proto.graph.node)
    assert site_tensors(proto) == [s.tensor for s in graph.activation_sites]

    model_bytes = proto.SerializeToString()
    check_onnx(model_bytes)
    batch = 3.0 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    report = check_parity(model, model_bytes, [batch])
    assert report.max_abs_diff <= report.tolerance

    # Every site tensor, added as an output the way inspection does, equals torch's output.
    inspected = onnx.ModelProto()
    inspected.CopyFrom(proto)
    for site in graph.activation_sites:
        inspected.graph.output.append(helper.make_tensor_value_info(site.tensor, 1, None))
    session = ort.InferenceSession(
        inspected.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [s.tensor for s in graph.activation_sites]
    got = session.run(names, {"input": batch.numpy()})
    captured: list[np.ndarray] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().numpy()))
        for _, m in activation_sites(model)
    ]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    assert len(captured) == len(got) == len(names) > 0
    for site_name, ours, theirs in zip(names, got, captured, strict=True):
        scale = max(1.0, float(np.max(np.abs(theirs))))
        assert np.max(np.abs(ours - theirs)) <= 1e-4 * scale, site_name


# --------------------------------------------------------------------------- benchmark report


def test_activation_tax_report_judges_the_worse_ratio_and_says_by_how_much() -> None:
    from dataclasses import asdict

    from bench.activation_tax import Row, render_markdown

    rows = [
        Row("relu", "Relu", 40.0, 1.0, 1.0, None, None, None),
        Row("mish", "x·tanh(softplus(x)), |x| < 20", 100.0, 2.5, 2.6, 46.0, 1.15, 1.2),
        Row("softplus", "fast", 110.0, 2.7, 2.8, 50.0, 1.25, 1.43),
    ]
    report = {
        "settings": {"threads": 2, "rounds": 3, "reps": 2},
        "machine": {"versions": {"onnxruntime": "1.31"}, "load_average": [1.0, 1.0, 1.0]},
        "command": "python -m bench.activation_tax",
        "date": "2026-01-01T00:00:00+00:00",
        "rows": [
            {**asdict(r), "worst_ratio": r.worst_ratio, "met": r.worst_ratio <= 1.3} for r in rows
        ],
        "int8": {"fp32_ms": 40.0, "int8_ms": 16.0, "int8_over_fp32": 0.4, "speedup": 2.5},
    }
    assert [r.worst_ratio for r in rows] == [1.0, 1.2, 1.43]
    text = render_markdown(report)
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines["| mish"].split(" | ")[7] == "yes"
    assert lines["| mish"].endswith(" | x·tanh(softplus(x)), \\|x\\| < 20 |")  # escaped pipes
    assert lines["| softplus"].split(" | ")[7] == "**no**"
    assert "Missed: softplus 1.43× (+10% over the 1.3× target)." in text
    assert "int8 16.0 ms: **2.50× faster**" in text
