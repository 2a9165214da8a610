"""ONNX → ONNX: replace slow activation subgraphs with formulations onnxruntime runs fast.

Why: onnxruntime's CPU kernels for ``Softplus``, ``Elu``, ``Selu``, ``Celu`` and ``PRelu`` are
scalar loops, and none of them can stay in the blocked NCHWc layout that makes its convolutions
fast, so a ResNet-50 with Mish or Softplus runs ≈2.5× slower than with ReLU. The same functions
written with vectorised kernels (``Exp``, ``Min``, ``Mul``, ``Div``) or with ops that stay in
NCHWc (``Relu``, ``Sigmoid``, ``HardSigmoid``, ``Mul``, ``Add`` and depthwise 1×1 ``Conv``s, into
which onnxruntime fuses a following activation or sum) cost a fraction of that. ``Log`` is
avoided where possible: its kernel is scalar too (≈10× ``Exp``). Measured per activation by
``bench/activation_tax.py``.

How: every activation site's output is a named tensor (``site:<module path>``, see
``export.exporter``). For each site, the nodes between the pre-activation tensor and the site
tensor (the *region*) are replaced by a new subgraph that writes the same site tensor. A region
is found by walking back from the site tensor until a ``Conv`` or a residual ``Add`` (two
non-constant inputs); it must have exactly one non-constant input and no value used outside it,
otherwise the site is left as exported. Activations without a faster formulation are untouched.

Every formulation is checked against the catalogue (``service.activations``) on a dense grid up
to |x| = 1e4 (tests/export/test_fast_activations.py), and the exporter's torch-vs-onnxruntime
parity check runs on the rewritten graph. Training keeps the plain torch modules: the torch
formulas are the reference, this pass only changes how onnxruntime evaluates them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.activations import ParamValue, get_network_activation

SITE_PREFIX = "site:"
FAST_PREFIX = "fast:"
"""Names of the nodes a formulation adds start with this (``fast:<module path>/<op><n>``)…"""
KEEP_FLOAT_PREFIX = "fast-float:"
"""…or with this, for formulations in ``KEEP_FLOAT``: quantizers must leave those nodes in float."""

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

EXP_CLAMP = 20.0
"""The thresholded Softplus clamps exp()'s argument at 20 so Exp never overflows. The clamp only
touches inputs above the threshold (that path is taken for thresholds below ≈ 18.4, see
``_softplus``), where ``Where`` returns x anyway."""

STEP_GAIN = float(2.0**127)
"""HardSigmoid slope for the step: 2^127·x ≥ 1 for every normal x > 0 (a second pass lifts
denormals, whose product is still ≥ 2^-22)."""


class RewriteError(ValueError):
    """The graph does not have the shape this pass expects at an activation site."""


@dataclass
class _Region:
    """The nodes computing one activation site from its single non-constant input."""

    site: str
    source: str
    nodes: list[onnx.NodeProto]
    constants: dict[str, np.ndarray]


@dataclass
class _Builder:
    """Collects the nodes and initializers of one replacement subgraph, with unique names."""

    site: str
    prefix: str = FAST_PREFIX
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    _count: int = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{self.site.removeprefix(SITE_PREFIX)}/{hint}{self._count}"

    def const(self, value: float | np.ndarray, hint: str = "c") -> str:
        name = self.name(hint)
        array = np.asarray(value, dtype=np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        output = out or self.name(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=self.name(op_type), **attrs)
        )
        return output

    def channel_affine(self, x: str, scale: np.ndarray, bias: np.ndarray | None = None) -> str:
        """Per-channel scale·x (+ bias) as a depthwise 1×1 Conv: it stays in onnxruntime's NCHWc
        layout, absorbs a following Relu, and a following Add is fused into it as a sum."""
        channels = scale.shape[0]
        weight = self.const(scale.reshape(channels, 1, 1, 1), "w")
        inputs = [x, weight]
        if bias is not None:
            inputs.append(self.const(bias.reshape(channels), "b"))
        return self.op("Conv", inputs, group=channels, kernel_shape=[1, 1])


Formulation = Callable[[_Builder, _Region, str, Mapping[str, ParamValue], int], None]
"""(builder, region, pre-activation tensor, params, channels): adds nodes writing the site."""


LOG1P_QUADRATIC = (2.0000518692832507, 0.663032397110722, 0.4626630247681235)
LOG1P_CUBIC = (1.999998469178099, 0.6668464015724378, 0.3943415298339101, 0.35024208893668146)
"""log1p(t) = z·(a0 + a1·w + a2·w² [+ a3·w³]) with z = t / (2 + t) ∈ [0, 1/3], w = z²: the series
of 2·atanh(z) (log1p(t) = 2·atanh(z)) refitted for the least maximum error on [0, 1/3] (float64,
Lawson-weighted least squares): 2.5e-6 for the quadratic, 5.7e-8 for the cubic."""


def _softplus_core(b: _Builder, x: str, beta: float) -> str:
    """log(1 + exp(min(beta·x, 20))) with vectorised kernels (Min, Exp, Add, Log)."""
    scaled = x if beta == 1.0 else b.op("Mul", [x, b.const(beta)])
    clamped = b.op("Min", [scaled, b.const(EXP_CLAMP)])
    return b.op("Log", [b.op("Add", [b.op("Exp", [clamped]), b.const(1.0)])])


def _softplus_nchwc(b: _Builder, r: _Region, x: str, beta: float, c: int) -> None:
    """relu(x) + log1p(e^(-beta·|x|)) / beta without Log, Exp or a layout change.

    z = t/(2+t) with t = e^(-beta·|x|) is exactly sigmoid(-beta·|x| - ln 2), and log1p(t) is a
    polynomial in z² times z (``LOG1P_QUADRATIC`` for beta ≥ 1, else ``LOG1P_CUBIC``: the error
    is divided by beta). -|x| = x - 2·relu(x) is a depthwise 1×1 Conv on relu(x) with x fused
    in as a sum (onnxruntime also fuses the Sigmoid); the polynomial uses Mul and depthwise 1×1
    Convs with fused sums, so every op stays in NCHWc: 7 passes over the tensor for beta ≥ 1.
    """
    ones = np.ones(c, np.float32)
    positive = b.op("Relu", [x])
    shift = np.full(c, -math.log(2.0), np.float32)
    if beta == 1.0:
        pre = b.op("Add", [b.channel_affine(positive, -2.0 * ones, shift), x])
    else:
        neg_abs = b.op("Add", [b.channel_affine(positive, -2.0 * ones), x])
        pre = b.channel_affine(neg_abs, beta * ones, shift)
    z = b.op("Sigmoid", [pre])
    w = b.op("Mul", [z, z])
    w2 = b.op("Mul", [w, w])
    if beta >= 1.0:
        a0, a1, a2 = LOG1P_QUADRATIC
        # a2·(w² + (a1/a2)·w + a0/a2): the outer a2/beta rides on the final sum-fused Conv.
        monic = b.op("Add", [b.channel_affine(w, a1 / a2 * ones, a0 / a2 * ones), w2])
        scaled = b.channel_affine(b.op("Mul", [z, monic]), a2 / beta * ones)
        b.op("Add", [scaled, positive], out=r.site)
        return
    a0, a1, a2, a3 = (coefficient / beta for coefficient in LOG1P_CUBIC)
    high = b.op("Mul", [w2, b.channel_affine(w, a3 * ones, a2 * ones)])
    poly = b.op("Add", [b.channel_affine(w, a1 * ones, a0 * ones), high])
    b.op("Add", [positive, b.op("Mul", [z, poly])], out=r.site)


def _softplus(b: _Builder, r: _Region, x: str, p: Mapping[str, ParamValue], c: int) -> None:
    beta, threshold = float(p["beta"]), float(p["threshold"])
    if math.log1p(math.exp(-threshold)) / beta <= 1e-7:
        # softplus(x) > x everywhere and the two differ by < 1e-7 beyond the threshold, so the
        # unthresholded function equals the thresholded reference to float32 precision.
        _softplus_nchwc(b, r, x, beta, c)
        return
    core = _softplus_core(b, x, beta)
    if beta != 1.0:
        core = b.op("Div", [core, b.const(beta)])
    above = b.op("Greater", [b.op("Mul", [x, b.const(beta)]), b.const(threshold)])
    b.op("Where", [above, x, core], out=r.site)


def _mish(b: _Builder, r: _Region, x: str, p: Mapping[str, ParamValue], c: int) -> None:
    """x·tanh(softplus(x)) = x - 2x/d with d = u² + 1, u = 1 + e^x: exact algebra, no Softplus.

    tanh(ln u) = (u² - 1)/(u² + 1) = 1 - 2/d. No clamp is needed: where e^x overflows, d = inf
    and x/d = 0, so the result is x (what Mish is in float32 beyond x ≈ 9); for very negative x,
    d = 2 and the result is 0. Five element-wise passes (Exp, Add, Mul with one input read
    twice, Add, Div); the -2 scale and the residual sum run as one depthwise 1×1 Conv with a
    fused sum, back in NCHWc. Measured against the previous x·p/(p+2) form (Min, Exp, Add, Mul,
    Add, Div, Mul): 1.27–1.28× instead of 1.35× ReLU's ResNet-50 latency.
    """
    u = b.op("Add", [b.op("Exp", [x]), b.const(1.0)])
    d = b.op("Add", [b.op("Mul", [u, u]), b.const(1.0)])
    quotient = b.op("Div", [x, d])
    b.op("Add", [x, b.channel_affine(quotient, np.full(c, -2.0, np.float32))], out=r.site)


def _elu_family(scale: float | None, alpha: float | None, divide_by_alpha: bool) -> Formulation:
    """scale·(relu(x) + alpha·(exp(min(x, 0) / d) - 1)), d = alpha for CELU else 1.

    ``scale``/``alpha`` None means 1 / the ``alpha`` parameter (ELU, CELU); SELU fixes both.
    """

    def build(b: _Builder, r: _Region, x: str, p: Mapping[str, ParamValue], c: int) -> None:
        s = 1.0 if scale is None else scale
        a = float(p["alpha"]) if alpha is None else alpha
        negative = b.op("Min", [x, b.const(0.0)])
        if divide_by_alpha and a != 1.0:
            negative = b.op("Mul", [negative, b.const(1.0 / a)])
        e = b.op("Exp", [negative])
        # s·a·e - s·a as a depthwise 1×1 Conv (weight, bias): back in NCHWc, where the final
        # Add is fused into it as a sum.
        tail = b.channel_affine(e, np.full(c, s * a, np.float32), np.full(c, -s * a, np.float32))
        scaled = x if s == 1.0 else b.channel_affine(x, np.full(c, s, np.float32))
        b.op("Add", [b.op("Relu", [scaled]), tail], out=r.site)

    return build


def _prelu(b: _Builder, r: _Region, x: str, p: Mapping[str, ParamValue], c: int) -> None:
    slopes = [v for v in r.constants.values() if v.size in (1, c)]
    if len(slopes) != 1:
        raise RewriteError(f"{r.site}: expected one PRelu slope tensor, found {len(slopes)}")
    slope = np.broadcast_to(slopes[0].astype(np.float32).reshape(-1), (c,))
    # prelu(x) = x + (1 - a)·relu(-x): two depthwise 1×1 Convs (negate + fused Relu, then
    # scale + fused residual sum), so the tensor never leaves onnxruntime's NCHWc layout.
    negated = b.op("Relu", [b.channel_affine(x, np.full(c, -1.0, np.float32))])
    b.op("Add", [x, b.channel_affine(negated, 1.0 - slope)], out=r.site)


def _softsign(b: _Builder, r: _Region, x: str, p: Mapping[str, ParamValue], c: int) -> None:
    """ONNX ``Softsign``: x / (1 + |x|) in one kernel.

    torch exports Softsign as Abs, Add, Div: three element-wise passes between the two layout
    reorders that any non-NCHWc operator needs, against one here. Measured on a 2-core Xeon
    (AVX-512), ResNet-50 latency ÷ ReLU's: 1.23–1.29× instead of 1.41–1.43× (two runs)."""
    b.op("Softsign", [x], out=r.site)


def _binary_step(b: _Builder, r: _Region, x: str, p: Mapping[str, ParamValue], c: int) -> None:
    # clip(2^127·x, 0, 1) is the step for every x except positive denormals; a second identical
    # HardSigmoid lifts those (2^127·2^-149 = 2^-22 > 0). Both stay in NCHWc, the first fuses.
    first = b.op("HardSigmoid", [x], alpha=STEP_GAIN, beta=0.0)
    b.op("HardSigmoid", [first], out=r.site, alpha=STEP_GAIN, beta=0.0)


FORMULATIONS: dict[str, Formulation] = {
    "softplus": _softplus,
    "mish": _mish,
    "elu": _elu_family(None, None, divide_by_alpha=False),
    "selu": _elu_family(_SELU_SCALE, _SELU_ALPHA, divide_by_alpha=False),
    "celu": _elu_family(None, None, divide_by_alpha=True),
    "prelu": _prelu,
    "softsign": _softsign,
    "binary_step": _binary_step,
}
"""Catalogue name -> fast formulation. Names not listed are exported as torch wrote them."""

KEEP_FLOAT = frozenset({"mish"})
"""Formulations with intermediate tensors no 8-bit range can hold: Mish's d = (1 + eˣ)² + 1 grows
like e^(2x), so a uint8 d (MinMax-calibrated, spanning 2 to ~1e9) is 2 everywhere that matters
and x − 2x/d collapses (INT8 top-1 agreement fell to chance, 0.11, on a trained resnet20). Their
nodes are named with ``KEEP_FLOAT_PREFIX``; export/quantize.py excludes them, so they run in
float between the quantized convolutions."""


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _is_region_boundary(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> bool:
    """A Conv or a residual Add (two computed inputs) ends the walk back from a site."""
    if node.op_type in ("Conv", "MaxPool", "Gemm"):
        return True
    computed = [i for i in node.input if i and i not in constants]
    return node.op_type in ("Add", "Sum") and len(computed) >= 2


def _find_region(
    site: str,
    producers: Mapping[str, onnx.NodeProto],
    consumers: Mapping[str, list[onnx.NodeProto]],
    constants: Mapping[str, np.ndarray],
    graph_outputs: set[str],
) -> _Region | None:
    if site not in producers:
        return None
    members: dict[int, onnx.NodeProto] = {}
    sources: set[str] = set()
    stack = [producers[site]]
    while stack:
        node = stack.pop()
        if id(node) in members or node.op_type == "Constant":
            continue
        members[id(node)] = node
        for name in node.input:
            if not name or name in constants:
                continue
            producer = producers.get(name)
            if producer is None or _is_region_boundary(producer, constants):
                sources.add(name)
            else:
                stack.append(producer)
    if len(sources) != 1:
        return None
    internal = {out for node in members.values() for out in node.output} - {site}
    for name in internal:
        if name in graph_outputs or any(id(c) not in members for c in consumers.get(name, [])):
            return None
    used = {
        name: constants[name] for n in members.values() for name in n.input if name in constants
    }
    ordered = list({id(n): n for n in producers.values() if id(n) in members}.values())
    return _Region(site, sources.pop(), ordered, used)


def _channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> its (static) channel dimension, from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    counts: dict[str, int] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            counts[info.name] = int(dims[1].dim_value)
    return counts


def site_tensors(model: onnx.ModelProto) -> list[str]:
    """Every ``site:`` tensor the graph produces, in graph order."""
    return [o for n in model.graph.node for o in n.output if o.startswith(SITE_PREFIX)]


def has_fast_formulation(activation: str) -> bool:
    return get_network_activation(activation).name in FORMULATIONS


def rewrite_activations(
    model: onnx.ModelProto,
    activation: str,
    params: Mapping[str, ParamValue] | None = None,
    *,
    sites: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` with each activation site computed by the fast formulation.

    ``activation``/``params`` name the catalogue entry every site uses (the model card's
    activation); ``sites`` defaults to every ``site:`` tensor in the graph. Returns an
    unchanged copy for activations without a faster formulation. Raises ``RewriteError``
    when a site's region cannot be identified.
    """
    spec = get_network_activation(activation)
    resolved = spec.resolve_params(params)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    formulation = FORMULATIONS.get(spec.name)
    if formulation is None:
        return result
    graph = result.graph
    constants = _constant_values(graph)
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    channel_counts = _channel_counts(model)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    removed: set[int] = set()
    new_initializers: list[TensorProto] = []
    for site in sites if sites is not None else site_tensors(result):
        region = _find_region(site, producers, consumers, constants, outputs)
        if region is None:
            raise RewriteError(f"cannot isolate the {spec.name} subgraph computing {site!r}")
        channels = channel_counts.get(region.source) or channel_counts.get(site)
        if channels is None:
            raise RewriteError(f"unknown channel count at {site!r}")
        builder = _Builder(site, KEEP_FLOAT_PREFIX if spec.name in KEEP_FLOAT else FAST_PREFIX)
        formulation(builder, region, region.source, resolved, channels)
        replaced[id(region.nodes[-1])] = builder.nodes
        removed.update(id(n) for n in region.nodes)
        new_initializers.extend(builder.initializers)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in replaced:
            nodes.extend(replaced[id(node)])
        elif id(node) not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_initializers)
    _drop_unused(graph)
    return result


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove initializers and Constant nodes nothing reads any more."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept_nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
