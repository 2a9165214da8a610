"""Which outputs a request wants, and how each is returned: JSON or binary, tensor or top-k.

Outputs are ``logits`` and ``probabilities`` (FP32 ``[N, C]``); without ``outputs`` in the
request both are returned. Triton's classification extension
(``"parameters": {"classification": k}`` on a requested output) returns that output as a BYTES
tensor ``[N, k]`` of ``"<value>:<index>:<label>"`` strings, best first (k is clamped to C).
``binary_data`` on an output, or ``binary_data_output`` in the request parameters, returns it
with the binary extension. In JSON each FP32 value is the shortest decimal that reads back as
the same float32, as in the classification strings. NaN and infinity have no JSON number and no
rank: an output that has them is a 422 unless it is sent as a binary tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.errors import BadRequest, Unprocessable, quoted
from service.modelcard import OUTPUT_NAMES
from service.v2.binary import (
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    encode_bytes_elements,
    encode_fp32,
)
from service.v2.schemas import Parameters, RequestOutput

CLASSIFICATION = "classification"
_COMPACT = (",", ":")
_CHUNK = 65_536  # values formatted at a time: bounds the temporary text arrays


@dataclass(frozen=True)
class OutputSpec:
    name: str
    binary: bool = False
    classification: int | None = None


def _flag(parameters: Parameters, key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{where}: {key} must be true or false")
    return value


def requested_outputs(
    outputs: list[RequestOutput] | None, request_parameters: Parameters
) -> list[OutputSpec]:
    """Validated output choices (before any inference runs)."""
    binary_default = bool(_flag(request_parameters, BINARY_DATA_OUTPUT, "request parameters"))
    if outputs is None:
        return [OutputSpec(name, binary=binary_default) for name in OUTPUT_NAMES]
    if not outputs:
        raise BadRequest(f"'outputs' is empty; name at least one of {', '.join(OUTPUT_NAMES)}")
    specs: list[OutputSpec] = []
    for output in outputs:
        if output.name not in OUTPUT_NAMES:
            raise BadRequest(
                f"unknown output {quoted(output.name)}; the outputs are {', '.join(OUTPUT_NAMES)}"
            )
        if any(spec.name == output.name for spec in specs):
            raise BadRequest(f"output {output.name!r} is requested twice")
        where = f"output {output.name!r}"
        binary = _flag(output.parameters, BINARY_DATA, where)
        k = output.parameters.get(CLASSIFICATION)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise BadRequest(f"{where}: {CLASSIFICATION} must be an integer >= 1")
        specs.append(
            OutputSpec(
                output.name,
                binary=binary_default if binary is None else binary,
                classification=k,
            )
        )
    return specs


def classification_strings(
    values: NDArray[np.float32], k: int, labels: list[str]
) -> list[list[str]]:
    """Per row, the k largest values as ``"<value>:<index>:<label>"``, best first; the value is
    the shortest decimal that reads back as the same float32."""
    k = min(k, values.shape[1])
    ranked = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return [
        [f"{np.float32(row[i])!s}:{i}:{labels[i]}" for i in order.tolist()]
        for row, order in zip(values, ranked, strict=True)
    ]


def require_finite(
    specs: list[OutputSpec], arrays: dict[str, NDArray[np.float32]], model_name: str
) -> None:
    """422 if an output sent as JSON numbers or ranked for classification has NaN or infinity."""
    for spec in specs:
        if spec.binary and spec.classification is None:
            continue  # a binary FP32 tensor carries NaN and infinity as they are
        if np.isfinite(arrays[spec.name]).all():
            continue
        if spec.classification is not None:
            why = "classification cannot rank"
            instead = "the output without classification, in binary (binary_data),"
        else:
            why, instead = "JSON cannot carry", "binary outputs (binary_data)"
        raise Unprocessable(
            f"model {model_name!r} produced NaN or infinite outputs for this input, which {why}; "
            f"ask for {instead} or send inputs in the model's normal range",
            code="non_finite_output",
        )


def render_outputs(
    specs: list[OutputSpec], arrays: dict[str, NDArray[np.float32]], labels: list[str]
) -> tuple[list[dict[str, object]], list[bytes]]:
    """(``outputs`` for ``encode_response``, binary tails in the same order). Call
    ``require_finite`` first; FP32 JSON data stays an array until ``encode_response``."""
    rendered: list[dict[str, object]] = []
    tails: list[bytes] = []
    for spec in specs:
        values = arrays[spec.name]
        entry: dict[str, object] = {"name": spec.name}
        if spec.classification is not None:
            rows = classification_strings(values, spec.classification, labels)
            flat = [item for row in rows for item in row]
            entry |= {"datatype": "BYTES", "shape": [len(rows), len(rows[0]) if rows else 0]}
            payload = encode_bytes_elements([s.encode() for s in flat]) if spec.binary else None
            data: object = flat
        else:
            entry |= {"datatype": "FP32", "shape": list(values.shape)}
            payload = encode_fp32(values) if spec.binary else None
            data = values if not spec.binary else None
        if payload is not None:
            entry["parameters"] = {BINARY_DATA_SIZE: len(payload)}
            tails.append(payload)
        else:
            entry["data"] = data
        rendered.append(entry)
    return rendered, tails


def fp32_json(values: NDArray[np.float32]) -> str:
    """A JSON array of finite float32 values, row-major, each the shortest decimal that reads
    back as the same float32 (numpy's float32 ``str``: ``-10.643719``, ``4.9561302e-05``)."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    chunks = (
        ",".join(flat[start : start + _CHUNK].astype(str).tolist())
        for start in range(0, flat.size, _CHUNK)
    )
    return f"[{','.join(chunks)}]"


def encode_response(head: dict[str, object], outputs: list[dict[str, object]]) -> bytes:
    """The response JSON: ``head``'s fields, then ``outputs`` (from ``render_outputs``), whose
    FP32 ``data`` arrays are written by ``fp32_json`` (as fast as ``json.dumps`` of floats,
    about half the bytes)."""
    parts: list[str] = []
    for entry in outputs:
        data = entry.get("data")
        if isinstance(data, np.ndarray):
            fields = {key: value for key, value in entry.items() if key != "data"}
            start = json.dumps(fields, separators=_COMPACT)[:-1]  # "{...": has name, datatype
            parts.append(f'{start},"data":{fp32_json(data)}}}')
        else:
            parts.append(json.dumps(entry, separators=_COMPACT, allow_nan=False))
    start = json.dumps(head, separators=_COMPACT, allow_nan=False)[:-1]  # "{...", head not empty
    return f'{start},"outputs":[{",".join(parts)}]}}'.encode()
