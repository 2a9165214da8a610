"""One v2 inference request, start to finish: parse → validate → run → render → count.

``infer`` is synchronous and CPU-bound (run it on the inference executor). Everything the client
sent is validated before onnxruntime runs; images use ``classify_images``, the same decoding and
preprocessing as ``/v1/classify``; a float32 batch goes straight to ``ModelRuntime.run``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from service.classify import Deadline, classify_images
from service.content_encoding import decode_content
from service.errors import BadRequest, invalid_body
from service.imaging import DecodeLimits
from service.metrics import Metrics
from service.modelcard import LOGITS_NAME, PROBABILITIES_NAME
from service.runtime import ModelRuntime
from service.v2.binary import BinaryReader, split_body
from service.v2.outputs import (
    encode_response,
    render_outputs,
    requested_outputs,
    require_finite,
)
from service.v2.schemas import InferenceRequest
from service.v2.statistics import InferenceStatistics, StageTimes
from service.v2.tensors import read_inputs


@dataclass(frozen=True)
class InferBody:
    body: bytes
    header_length: str | None  # the Inference-Header-Content-Length header, if sent
    content_encoding: str | None = None  # gzip / deflate / identity


@dataclass(frozen=True)
class InferResult:
    header: bytes  # the JSON response object
    tails: list[bytes]  # binary outputs, in the order of the JSON outputs

    @property
    def binary(self) -> bool:
        return bool(self.tails)


@dataclass(frozen=True)
class InferContext:
    limits: DecodeLimits
    max_batch_size: int
    max_body_bytes: int
    metrics: Metrics
    statistics: InferenceStatistics
    on_inflated: Callable[[int], None] | None = None  # counts a compressed body's inflated bytes


def parse_request(json_part: bytes) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate_json(json_part)
    except ValidationError as exc:
        raise invalid_body(exc, what="inference request", status=400) from None


def infer(
    model: ModelRuntime,
    body: InferBody,
    context: InferContext,
    deadline: Deadline,
    *,
    received_ns: int,
    queued_ns: int,
) -> InferResult:
    """Answer one request for ``model``; any failure is counted against it and re-raised."""
    try:
        return _infer(model, body, context, deadline, received_ns, queued_ns)
    except Exception:
        context.statistics.record_failure(
            model.name, model.version, time.perf_counter_ns() - received_ns
        )
        raise


def _infer(
    model: ModelRuntime,
    body: InferBody,
    context: InferContext,
    deadline: Deadline,
    received_ns: int,
    queued_ns: int,
) -> InferResult:
    started = time.perf_counter_ns()
    content = decode_content(
        body.body, body.content_encoding, context.max_body_bytes, context.on_inflated
    )
    json_part, binary_part = split_body(content, body.header_length)
    try:
        request = parse_request(json_part)
    except BadRequest as exc:
        if body.header_length is None and "not valid JSON: trailing characters" in exc.message:
            raise BadRequest(  # most likely binary tensor data after the JSON, with no header
                f"{exc.message}; a body with binary tensor data after its JSON needs the "
                "Inference-Header-Content-Length header (the JSON part's length in bytes)"
            ) from None
        raise
    reader = BinaryReader(binary_part) if body.header_length is not None else None
    inputs = read_inputs(request.inputs, reader, model, context.max_batch_size)
    specs = requested_outputs(request.outputs, request.parameters)
    if reader is not None:
        reader.finish()
    deadline.check()
    parsed = time.perf_counter_ns()
    parse_ns = parsed - started
    if inputs.batch is not None:
        logits, probabilities = model.run(inputs.batch, deadline.run_options)
        infer_ns = time.perf_counter_ns() - parsed
        input_ns = parse_ns
        decode_s, preprocess_s = 0.0, parse_ns / 1e9
    else:
        result = classify_images(model, inputs.images or [], context.limits, deadline=deadline)
        logits, probabilities = result.logits, result.probabilities
        timings = result.timings
        input_ns = parse_ns + int((timings.decode_ms + timings.preprocess_ms) * 1e6)
        infer_ns = int(timings.inference_ms * 1e6)
        decode_s, preprocess_s = timings.decode_ms / 1e3, timings.preprocess_ms / 1e3
    output_started = time.perf_counter_ns()
    arrays = {LOGITS_NAME: logits, PROBABILITIES_NAME: probabilities}
    require_finite(specs, arrays, model.name)
    outputs, tails = render_outputs(specs, arrays, model.card.labels)
    head: dict[str, object] = {"model_name": model.name, "model_version": str(model.version)}
    if request.id is not None:
        head["id"] = request.id
    header = encode_response(head, outputs)
    finished = time.perf_counter_ns()
    times = StageTimes(
        queue=queued_ns,
        compute_input=input_ns,
        compute_infer=infer_ns,
        compute_output=finished - output_started,
        total=finished - received_ns,
    )
    context.statistics.record_success(model.name, model.version, inputs.size, times)
    context.metrics.record_classify(model.name, inputs.size, decode_s, preprocess_s, infer_ns / 1e9)
    return InferResult(header=header, tails=tails)
