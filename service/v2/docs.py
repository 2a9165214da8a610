"""OpenAPI examples for the /v2 routes (what /docs shows): success bodies and the error shape."""

from __future__ import annotations

from typing import Any

from service.v2.binary import HEADER_LENGTH, OCTET_STREAM
from service.v2.schemas import InferenceRequest

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad input (caught before inference).", "input 'input' has shape [1, 3, 64, 64]; "
          "model 'tiny-relu' needs [N, 3, 32, 32]"),
    404: ("Unknown model or version.", "no model named 'x'; loaded models: tiny-relu"),
    408: ("The body stopped arriving for ACTLAB_BODY_TIMEOUT_S (the connection is closed).",
          "the request body stopped arriving: nothing came for 30 s after 65536 bytes "
          "(ACTLAB_BODY_TIMEOUT_S); send the whole body without pausing that long"),
    413: ("Body over ACTLAB_MAX_BODY_BYTES.",
          "the request body is over the limit of 20000000 bytes"),
    415: ("Image format or Content-Encoding not supported.",
          "the image format is not supported; send JPEG, PNG, WebP, BMP or GIF"),
    422: ("Image too large, or NaN/infinite outputs that JSON or classification cannot carry.",
          "the image is 10000×10000 = 100000000 pixels; the limit is 40000000 pixels"),
    503: ("Not ready, or over capacity (Retry-After).", "models are still loading; retry shortly"),
    504: ("Past ACTLAB_INFERENCE_TIMEOUT_S.", "the request took longer than the 30 s inference "
          "deadline"),
}  # fmt: skip

SERVER = {
    "name": "actlab",
    "version": "0.1.0",
    "extensions": ["binary_tensor_data", "classification", "model_configuration", "statistics"],
}
METADATA = {
    "name": "tiny-relu",
    "versions": ["1", "2"],
    "platform": "onnx_onnxv1",
    "inputs": [
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ],
    "outputs": [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ],
}
CONFIG = {
    "name": "tiny-relu",
    "platform": "onnxruntime_onnx",
    "backend": "onnxruntime",
    "max_batch_size": 32,
    "input": [
        {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [3, 32, 32]},
        {"name": "image", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    ],
    "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}, "..."],
}
_COUNT = {"count": 2, "ns": 3_400_000}
STATS = {
    "model_stats": [
        {
            "name": "tiny-relu",
            "version": "2",
            "last_inference": 1763700000000,
            "inference_count": 5,
            "execution_count": 2,
            "inference_stats": {
                "success": _COUNT,
                "fail": {"count": 0, "ns": 0},
                "queue": {"count": 2, "ns": 90_000},
                "compute_input": {"count": 2, "ns": 1_200_000},
                "compute_infer": {"count": 2, "ns": 1_900_000},
                "compute_output": {"count": 2, "ns": 60_000},
            },
            "batch_stats": [{"batch_size": 2, "compute_infer": {"count": 1, "ns": 800_000}}],
        }
    ]
}
INFER = {
    "model_name": "tiny-relu",
    "model_version": "2",
    "id": "42",
    "outputs": [
        {
            "name": "probabilities",
            "datatype": "BYTES",
            "shape": [1, 3],
            "data": ["0.71:3:cat", "0.2:5:dog", "0.04:2:bird"],
        }
    ],
}


def responses(example: object, *errors: int) -> dict[int | str, dict[str, Any]]:
    documented: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/json": {"example": example}}}
    }
    for status in errors:
        description, message = _ERRORS[status]
        documented[status] = {
            "description": description,
            "content": {"application/json": {"example": {"error": message}}},
        }
    return documented


_PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
INFER_REQUEST = {
    "id": "42",
    "inputs": [
        {
            "name": "image",
            "shape": [1],
            "datatype": "BYTES",
            "parameters": {"content_type": "base64"},
            "data": [_PNG_1PX],
        }
    ],
    "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
}  # fmt: skip


def _request_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    schema = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return schema, schema.pop("$defs", {})


INFER_REQUEST_SCHEMA, SCHEMAS = _request_schemas()
"""The request's JSON schema, and the definitions its ``$ref``s name
(``#/components/schemas/RequestInput``, ``RequestOutput``): the finished OpenAPI document must
hold ``SCHEMAS`` under ``components.schemas``."""
INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON, or with the binary tensor data extension application/octet-stream: "
        f"the JSON request ({HEADER_LENGTH} bytes) followed by each binary input's bytes.",
        "content": {
            "application/json": {"schema": INFER_REQUEST_SCHEMA, "example": INFER_REQUEST},
            OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}  # fmt: skip


def infer_responses(*errors: int) -> dict[int | str, dict[str, Any]]:
    """``responses(INFER, *errors)`` with the binary extension's 200 (octet-stream, header)."""
    documented = responses(INFER, *errors)
    documented[200] = {
        "description": "The inference response: JSON, or application/octet-stream when an "
        "output is asked for in binary (binary_data, binary_data_output): the JSON response "
        f"({HEADER_LENGTH} bytes) followed by each binary output's bytes, in the order of the "
        "outputs.",
        "headers": {
            HEADER_LENGTH: {
                "description": "On application/octet-stream responses only: the length in "
                "bytes of the JSON response at the start of the body.",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": {
            "application/json": {"example": INFER},
            OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    }
    return documented


INFER_DESCRIPTION = """Inputs: `input` (FP32 `[N, 3, H, W]`, preprocessed) or `image` (BYTES
`[N]`, encoded images, base64 in JSON or raw with the binary extension). Outputs: `logits`,
`probabilities` (FP32 `[N, C]`); `"classification": k` on an output gives `"value:index:label"`
strings. Binary extension: `Inference-Header-Content-Length`, `binary_data_size`, `binary_data`,
`binary_data_output`. Request bodies may be gzip or deflate (`Content-Encoding`)."""
