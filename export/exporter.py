"""torch → ONNX: one self-contained graph, checked, and compared against torch before publishing.

- ``export_onnx``: pinned opset, dynamic batch axis, input ``input``, outputs ``logits`` and
  ``probabilities`` (softmax in the graph). Every activation site's output is named
  ``site:<module path>`` in the graph, so the service can add it as an output to inspect a model;
  ``ActivationSite`` entries (in forward order) map module paths to those tensor names.
- ``check_onnx``: ``onnx.checker`` full check (with shape inference).
- ``check_parity``: onnxruntime vs torch on given batches; raises ``ExportCheckError`` on failure.
- ``make_card``: the model card for an exported graph (``service.modelcard.ModelCard``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export.errors import ExportCheckError
from export.onnx_rewrite import RewriteError, rewrite_activations
from export.resnet import activation_sites, count_parameters
from service.modelcard import (
    INPUT_NAME,
    LOGITS_NAME,
    PROBABILITIES_NAME,
    ActivationSite,
    ModelCard,
)

OPSET = 20
"""Pinned ONNX opset: native Gelu (20) and Mish (18); onnxruntime 1.31 runs it fully."""
SITE_PREFIX = "site:"

PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-5
"""Logits agree when max |ort - torch| ≤ PARITY_RTOL × max |torch logit| + PARITY_ATOL."""


@dataclass(frozen=True)
class ExportedGraph:
    proto: onnx.ModelProto
    activation_sites: tuple[ActivationSite, ...]


class _WithSites(nn.Module):
    """Wraps a classifier: (logits, probabilities, *activation site outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.site_modules = [module for _, module in activation_sites(model)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        captured: list[torch.Tensor] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: captured.append(out))
            for m in self.site_modules
        ]
        try:
            logits = self.model(x)
        finally:
            for hook in hooks:
                hook.remove()
        return (logits, torch.softmax(logits, dim=1), *captured)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's own chatter (deprecations inside torch, progress prints)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def export_onnx(
    model: nn.Module, input_size: tuple[int, int], *, fast_activations: bool = True
) -> ExportedGraph:
    """Export ``model`` (put in eval mode) to an in-memory ONNX graph with named site tensors.

    ``fast_activations=False`` keeps torch's own activation ops (bench/activation_tax.py compares).
    """
    model.eval()
    wrapper = _WithSites(model).eval()
    site_names = [name for name, _ in activation_sites(model)]
    site_tensors = [SITE_PREFIX + name for name in site_names]
    example = torch.randn(2, 3, *input_size)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[LOGITS_NAME, PROBABILITIES_NAME, *site_tensors],
            opset_version=OPSET,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            external_data=False,
            optimize=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - only when f= is given
        raise ExportCheckError("torch.onnx.export returned no program")
    proto = program.model_proto
    outputs = list(proto.graph.output)
    del proto.graph.output[:]
    proto.graph.output.extend(o for o in outputs if o.name in (LOGITS_NAME, PROBABILITIES_NAME))
    produced = {out for node in proto.graph.node for out in node.output}
    missing = [t for t in site_tensors if t not in produced]
    if missing:
        raise ExportCheckError(f"activation site tensors missing from the graph: {missing}")
    sites = tuple(
        ActivationSite(name=n, tensor=t) for n, t in zip(site_names, site_tensors, strict=True)
    )
    # Fast path (export/onnx_rewrite.py): swap slow activation subgraphs (Softplus, Mish, ELU
    # family, PReLU, step) for exact formulations onnxruntime runs fast; the site tensors keep
    # their names, and check_onnx/check_parity (export/pipeline.py) see the rewritten graph.
    activation = getattr(model, "activation", None)
    if activation is not None and fast_activations:
        try:
            proto = rewrite_activations(
                proto, activation.name, activation.params, sites=site_tensors
            )
        except RewriteError as exc:
            raise ExportCheckError(f"activation fast path failed: {exc}") from exc
    return ExportedGraph(proto, sites)


def with_card(proto: onnx.ModelProto, card: ModelCard) -> onnx.ModelProto:
    """A copy of ``proto`` whose ``metadata_props`` hold exactly ``card`` (other keys kept)."""
    stamped = onnx.ModelProto()
    stamped.CopyFrom(proto)
    metadata = card.to_metadata()
    kept = [p for p in stamped.metadata_props if p.key not in metadata]
    del stamped.metadata_props[:]
    stamped.metadata_props.extend(kept)
    for key, value in metadata.items():
        stamped.metadata_props.add(key=key, value=value)
    stamped.producer_name = "actlab"
    return stamped


def check_onnx(model_bytes: bytes) -> None:
    """``onnx.checker`` full check; raises ``ExportCheckError`` with the checker's reason."""
    try:
        onnx.checker.check_model(model_bytes, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportCheckError(f"the exported ONNX graph is invalid: {exc}") from exc
    initializers = onnx.load_from_string(model_bytes).graph.initializer
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in initializers):
        raise ExportCheckError("the exported ONNX graph refers to external data")


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    tolerance: float
    samples: int
    top1_mismatches: int


def ort_session(model_bytes: bytes, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def check_parity(
    model: nn.Module, model_bytes: bytes, batches: Sequence[torch.Tensor]
) -> ParityReport:
    """onnxruntime vs torch on every batch: logits within tolerance, identical top-1.

    A top-1 difference only counts where torch's winner leads the class onnxruntime picked by
    more than the tolerance (an exact tie has no well-defined top-1).
    """
    model.eval()
    session = ort_session(model_bytes)
    worst, tolerance, samples, mismatches = 0.0, float("inf"), 0, 0
    for batch in batches:
        with torch.no_grad():
            expected = model(batch).double().numpy()
        logits, probabilities = session.run(
            [LOGITS_NAME, PROBABILITIES_NAME], {INPUT_NAME: batch.numpy().astype(np.float32)}
        )
        diff = float(np.max(np.abs(logits.astype(np.float64) - expected)))
        tol = PARITY_RTOL * float(np.max(np.abs(expected))) + PARITY_ATOL
        worst, tolerance = max(worst, diff), min(tolerance, tol)
        if not np.all(np.isfinite(logits)) or diff > tol:
            raise ExportCheckError(
                f"onnxruntime and torch disagree: max |logit difference| {diff:.3g} exceeds "
                f"the allowed {tol:.3g} (1e-4 × max |logit| + 1e-5)"
            )
        sums = probabilities.astype(np.float64).sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-5):
            raise ExportCheckError("the graph's probabilities do not sum to 1")
        rows = np.arange(len(expected))
        ort_top1 = logits.argmax(axis=1)
        lead = expected.max(axis=1) - expected[rows, ort_top1]
        mismatches += int(np.sum(lead > tol))
        samples += len(expected)
    if mismatches:
        raise ExportCheckError(
            f"onnxruntime and torch pick a different top-1 class for {mismatches} of {samples} "
            "inputs"
        )
    return ParityReport(worst, tolerance, samples, mismatches)


def make_card(
    model: nn.Module,
    graph: ExportedGraph,
    *,
    name: str,
    architecture: str,
    labels: Sequence[str],
    input_size: tuple[int, int],
    resize_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    dataset: str,
    version: int = 1,
    **fields: Any,
) -> ModelCard:
    """The card for ``model``; ``fields`` are other ``ModelCard`` fields (split, accuracy...)."""
    activation = getattr(model, "activation", None)
    act_fields: Mapping[str, Any] = (
        {"activation": activation.name, "activation_params": dict(activation.params)}
        if activation is not None
        else {}
    )
    return ModelCard(
        name=name,
        version=version,
        architecture=architecture,
        labels=list(labels),
        input_size=input_size,
        resize_size=resize_size,
        mean=mean,
        std=std,
        dataset=dataset,
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        opset=OPSET,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        parameters=count_parameters(model),
        activation_sites=list(graph.activation_sites),
        **{**act_fields, **fields},
    )
