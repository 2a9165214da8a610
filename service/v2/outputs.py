"""Which outputs a request wants, and how each is returned: JSON or binary, tensor or top-k.

Outputs are ``logits`` and ``probabilities`` (FP32 ``[N, C]``); without ``outputs`` in the
request both are returned. Triton's classification extension
(``"parameters": {"classification": k}`` on a requested output) returns that output as a BYTES
tensor ``[N, k]`` of ``"<value>:<index>:<label>"`` strings, best first (k is clamped to C).
``binary_data`` on an output, or ``binary_data_output`` in the request parameters, returns it
with the binary extension.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.errors import BadRequest, quoted
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


def render_outputs(
    specs: list[OutputSpec], arrays: dict[str, NDArray[np.float32]], labels: list[str]
) -> tuple[list[dict[str, object]], list[bytes]]:
    """(``outputs`` for the JSON response, binary tails in the same order)."""
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
            data = values.ravel().tolist() if not spec.binary else None
        if payload is not None:
            entry["parameters"] = {BINARY_DATA_SIZE: len(payload)}
            tails.append(payload)
        else:
            entry["data"] = data
        rendered.append(entry)
    return rendered, tails
