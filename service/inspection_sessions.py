"""Inspection sessions: the served graph with every activation site's tensor as an output.

The serving session only exposes ``logits`` and ``probabilities``. An inspection session runs the
same file with the card's site tensors appended to the graph's outputs. They are appended on the
protobuf wire, not by parsing the model: an ONNX file is a serialized ``ModelProto``, and a second
``graph`` field after it is merged into the first, its ``output`` entries appended (protobuf's
rule for repeated fields of an embedded message that appears twice). Parsing and re-serializing
a 94 MB ResNet-50 with the ``onnx`` package holds the GIL for about 0.2 s, stalling every other
request and the health checks; the append is one copy of the bytes. The file's SHA-256 is checked
against the digest the serving runtime verified, so both sessions run the same bytes.

Sessions are built lazily, on a model version's first inspection (once, however many requests
ask at the same time), and cached least recently used out within a byte budget
(``ACTLAB_INSPECTION_CACHE_BYTES``, counted in model-file bytes; an inspection session of ResNet-50
takes about 2.5 times its file in memory; ``service.load_once_cache``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray

from service.errors import DeadlineExceeded, ServiceError, Unprocessable
from service.load_once_cache import LoadOnceCache
from service.modelcard import INPUT_NAME, LOGITS_NAME, PROBABILITIES_NAME
from service.runtime import ModelRuntime, session_options

SessionKey = tuple[str, int, str]
"""(name, version, SHA-256) of the model file a session runs."""


class NotInspectable(Unprocessable):
    """The model's card or graph does not allow inspection (no or unknown activation sites)."""

    code = "model_not_inspectable"


def with_extra_outputs(model_bytes: bytes, tensors: Collection[str]) -> bytes:
    """``model_bytes`` (a serialized ModelProto) with ``tensors`` appended to the graph outputs,
    typed float32 of unknown shape (onnxruntime infers the shapes)."""
    if not tensors:
        return model_bytes
    outputs = [
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors
    ]
    suffix = onnx.ModelProto(graph=onnx.GraphProto(output=outputs)).SerializeToString()
    return model_bytes + suffix


def _sites_not_in_graph(model_bytes: bytes, tensors: Collection[str]) -> list[str]:
    """The tensors no node of the graph produces (parses the model: only on the error path)."""
    try:
        graph = onnx.load_model_from_string(model_bytes).graph
    except Exception:  # onnx's decode error types differ between protobuf backends
        return []
    produced = {out for node in graph.node for out in node.output}
    return [t for t in tensors if t not in produced]


class InspectionSession:
    """An onnxruntime session over the same model file with every site tensor as an output."""

    def __init__(self, runtime: ModelRuntime, options: ort.SessionOptions) -> None:
        card = runtime.card
        name = f"model {runtime.name!r} version {runtime.version}"
        if not card.activation_sites:
            raise NotInspectable(
                f"{name} lists no activation sites in its card; re-export it with a current "
                "exporter to inspect it"
            )
        data = runtime.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != runtime.digest:
            raise ServiceError(
                f"{name} changed on disk since it was loaded; retry after the next reload",
                status=503,
                code="model_changed",
            )
        served = {o.name for o in runtime.session.get_outputs()}
        tensors = [s.tensor for s in card.activation_sites]
        extra = [t for t in dict.fromkeys(tensors) if t not in served]
        try:
            self.session = ort.InferenceSession(
                with_extra_outputs(data, extra),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            missing = _sites_not_in_graph(data, extra)
            if missing:
                sites = [s.name for s in card.activation_sites if s.tensor in missing]
                raise NotInspectable(
                    f"{name}: the card's activation sites {', '.join(sites)} are not in its graph"
                ) from exc
            raise
        self.key: SessionKey = (runtime.name, runtime.version, runtime.digest)
        self.size_bytes = len(data)
        self.site_tensors = tensors

    def run(
        self, batch: NDArray[np.float32], run_options: ort.RunOptions | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], list[NDArray[np.float32]]]:
        """float32 [N, 3, H, W] → (logits, probabilities, one array per site in card order)."""
        try:
            logits, probabilities, *sites = self.session.run(
                [LOGITS_NAME, PROBABILITIES_NAME, *self.site_tensors],
                {INPUT_NAME: batch},
                run_options,
            )
        except Exception as exc:
            if run_options is not None and run_options.terminate:
                raise DeadlineExceeded("inspection was stopped at the deadline") from exc
            raise
        return logits, probabilities, sites


class InspectionCache:
    """Inspection sessions by (name, version, digest), built once each, least recently used out
    once their model files add up to more than ``budget_bytes`` (the latest one always stays).

    A request that picked its runtime before a reload may still be building that runtime's
    session when the reload's ``retain`` runs; such a session serves its request but is not
    cached (it would otherwise sit in the cache, holding a superseded model, until evicted).
    """

    def __init__(self, intra_op_threads: int, inter_op_threads: int, budget_bytes: int) -> None:
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self._sessions: LoadOnceCache[SessionKey, InspectionSession] = LoadOnceCache(
            budget_bytes, lambda session: session.size_bytes
        )

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def budget_bytes(self) -> int:
        return self._sessions.budget_bytes

    @property
    def size_bytes(self) -> int:
        """Model-file bytes of the cached sessions."""
        return self._sessions.size_bytes

    def retain(self, live: Collection[SessionKey]) -> int:
        """Drop the sessions of models no longer served (after a reload); how many went."""
        kept = frozenset(live)
        return self._sessions.invalidate(keep=lambda key: key in kept)

    def get(self, runtime: ModelRuntime) -> InspectionSession:
        key = (runtime.name, runtime.version, runtime.digest)
        return self._sessions.get_or_build(key, lambda: self._build(runtime))

    def _build(self, runtime: ModelRuntime) -> InspectionSession:
        return InspectionSession(
            runtime, session_options(self.intra_op_threads, self.inter_op_threads)
        )
