"""Every /v2 infer rejection: exact status and {"error": message}, caught before onnxruntime
runs (a counting wrapper around each model's run), and the next valid request still works."""

from __future__ import annotations

import base64
import gzip
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_settings, running_app
from fastapi.testclient import TestClient
from service_images import encode, gradient_rgb, png, png_header_only
from v2_wire import HEADER, binary_request

URL = "/v2/models/tiny-relu/infer"
ZEROS = np.zeros((1, 3, 32, 32), dtype=np.float32)
GOOD_PNG = png(gradient_rgb(40, 40))


def tensor(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": "input",
        "shape": [1, 3, 32, 32],
        "datatype": "FP32",
        "data": ZEROS.ravel().tolist(),
    }
    item.update(changes)
    return item


def image(data: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": "image",
        "shape": [1],
        "datatype": "BYTES",
        "data": data if data is not None else [base64.b64encode(GOOD_PNG).decode()],
    }
    item.update(changes)
    return item


JSON = {"content-type": "application/json"}


def body(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kwargs": {"json": {"inputs": list(inputs), **extra}}}


def raw(content: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kwargs": {"content": content, "headers": headers or {}}}


def binary(header: dict[str, Any], tail: bytes, length: str | None = None) -> dict[str, Any]:
    content, headers = binary_request(header, [tail])
    if length is not None:
        headers[HEADER] = length
    return {"kwargs": {"content": content, "headers": headers}}


def fp32_binary(size: int, **changes: Any) -> dict[str, Any]:
    return tensor(data=None, parameters={"binary_data_size": size}, **changes)


FP32_BYTES = ZEROS.tobytes()
GOOD_B64 = base64.b64encode(GOOD_PNG).decode()
OUT_OF_RANGE = (
    "input 'input' contains values outside the FP32 range ±3.4028235e38; send numbers within it"
)


def not_strings(count: int, shape: list[int]) -> str:
    return (
        "input 'image': 'data' must be an array of base64 strings, one per image: flat (length "
        f"{count}) or nested exactly as the shape {shape}"
    )


def with_first(value: str) -> bytes:
    """A JSON request for ``input`` whose first number is written as ``value``, the rest 0."""
    return (
        json.dumps({"inputs": [tensor()]}).replace('"data": [0.0', f'"data": [{value}', 1).encode()
    )


TOO_LONG = binary({"inputs": [fp32_binary(len(FP32_BYTES))]}, FP32_BYTES, "99999")
SHAPE_NEEDS = "model 'tiny-relu' needs [N, 3, 32, 32]"

# (id, request, status, exact error message)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("broken-json", raw(b'{"inputs": [', {"content-type": "application/json"}), 400,
     "the request body is not valid JSON: EOF while parsing a list at line 1 column 12"),
    ("no-inputs", {"kwargs": {"json": {"id": "1"}}}, 400,
     "invalid inference request: inputs: Field required"),
    ("empty-inputs", body(), 400,
     "invalid inference request: inputs: List should have at least 1 item after validation, "
     "not 0"),
    ("shape-not-ints", body(tensor(shape=[1, 3, "32", 32])), 400,
     "invalid inference request: inputs.0.shape.2: Input should be a valid integer"),
    ("two-inputs", body(tensor(), image()), 400,
     "send exactly one input, 'input' or 'image'; got 2: 'input', 'image'"),
    ("unknown-input", body(tensor(name="pixels")), 400,
     "unknown input 'pixels'; model 'tiny-relu' accepts exactly one of the inputs 'input' "
     "(FP32 [N, 3, 32, 32]) or 'image' (BYTES [N])"),
    ("fp16", body(tensor(datatype="FP16")), 400,
     "input 'input' must have datatype FP32, not 'FP16'"),
    ("int64", body(tensor(datatype="INT64")), 400,
     "input 'input' must have datatype FP32, not 'INT64'"),
    ("three-dims", body(tensor(shape=[3, 32, 32])), 400,
     f"input 'input' has shape [3, 32, 32]; {SHAPE_NEEDS}"),
    ("wrong-size", body(tensor(shape=[1, 3, 64, 64])), 400,
     f"input 'input' has shape [1, 3, 64, 64]; {SHAPE_NEEDS}"),
    ("channels-last", body(tensor(shape=[1, 32, 32, 3])), 400,
     f"input 'input' has shape [1, 32, 32, 3]; {SHAPE_NEEDS}"),
    ("batch-zero", body(tensor(shape=[0, 3, 32, 32], data=[])), 400,
     "input 'input': batch size 0 is not allowed; send 1 to 3"),
    ("batch-too-big", body(tensor(shape=[4, 3, 32, 32])), 400,
     "input 'input': batch size 4 is not allowed; send 1 to 3"),
    ("flat-too-short", body(tensor(data=[0.0] * 3071)), 400,
     "input 'input': 'data' has shape [3071] (3071 values) but the declared shape "
     "[1, 3, 32, 32] needs 3072 values, nested with that shape or flat"),
    ("nested-wrong", body(tensor(data=np.zeros((1, 3, 16, 64)).tolist())), 400,
     "input 'input': 'data' has shape [1, 3, 16, 64] (3072 values) but the declared shape "
     "[1, 3, 32, 32] needs 3072 values, nested with that shape or flat"),
    ("ragged", body(tensor(data=[[0.0, 1.0], [2.0]])), 400,
     "input 'input': 'data' must be an array of numbers, nested with shape [1, 3, 32, 32] or "
     "flat with 3072 values (row-major)"),
    ("strings", body(tensor(data=["0.5"] * 3072)), 400,
     "input 'input': 'data' must be an array of numbers, nested with shape [1, 3, 32, 32] or "
     "flat with 3072 values (row-major)"),
    ("booleans", body(tensor(data=[True] * 3072)), 400,
     "input 'input': 'data' must be an array of numbers, nested with shape [1, 3, 32, 32] or "
     "flat with 3072 values (row-major)"),
    ("fp32-1e39", body(tensor(data=[1e39] + [0.0] * 3071)), 400, OUT_OF_RANGE),
    ("fp32-minus-1e300-nested", body(tensor(data=np.full((1, 3, 32, 32), -1e300).tolist())), 400,
     OUT_OF_RANGE),
    ("fp32-just-past-the-largest", raw(with_first("3.4028236e38"), JSON), 400, OUT_OF_RANGE),
    ("fp32-integer-10-to-the-400", body(tensor(data=[10**400] + [0] * 3071)), 400, OUT_OF_RANGE),
    ("fp32-infinity", raw(with_first("Infinity"), JSON), 400,
     "input 'input' contains NaN or infinite values"),
    ("fp32-nan", raw(with_first("NaN"), JSON), 400,
     "input 'input' contains NaN or infinite values"),
    ("no-data", body(tensor(data=None)), 400,
     "input 'input' has no data: send 'data' or the binary extension's "
     "parameters.binary_data_size"),
    ("unknown-output", body(tensor(), outputs=[{"name": "output0"}]), 400,
     "unknown output 'output0'; the outputs are logits, probabilities"),
    ("empty-outputs", body(tensor(), outputs=[]), 400,
     "'outputs' is empty; name at least one of logits, probabilities"),
    ("duplicate-output", body(tensor(), outputs=[{"name": "logits"}, {"name": "logits"}]), 400,
     "output 'logits' is requested twice"),
    ("classification-zero",
     body(tensor(), outputs=[{"name": "logits", "parameters": {"classification": 0}}]), 400,
     "output 'logits': classification must be an integer >= 1"),
    ("classification-text",
     body(tensor(), outputs=[{"name": "logits", "parameters": {"classification": "3"}}]), 400,
     "output 'logits': classification must be an integer >= 1"),
    ("classification-bool",
     body(tensor(), outputs=[{"name": "logits", "parameters": {"classification": True}}]), 400,
     "output 'logits': classification must be an integer >= 1"),
    ("binary-data-text",
     body(tensor(), outputs=[{"name": "logits", "parameters": {"binary_data": "yes"}}]), 400,
     "output 'logits': binary_data must be true or false"),
    ("binary-data-output-int", body(tensor(), parameters={"binary_data_output": 1}), 400,
     "request parameters: binary_data_output must be true or false"),
    ("image-fp32", body(image(datatype="FP32")), 400,
     "input 'image' must have datatype BYTES, not 'FP32'"),
    ("image-shape", body(image(shape=[1, 2])), 400,
     "input 'image' has shape [1, 2]; send [N] or [N, 1] (one image per row)"),
    ("image-count", body(image(shape=[2])), 400,
     "input 'image' has 1 elements but its shape [2] needs 2"),
    ("image-too-many", body(image(shape=[4])), 400,
     "input 'image': batch size 4 is not allowed; send 1 to 3"),
    ("image-not-string", body(image(data=[12]) | {"data": [12]}), 400, not_strings(1, [1])),
    ("image-nested-not-as-shape", body(image(shape=[2]) | {"data": [[GOOD_B64, GOOD_B64]]}),
     400, not_strings(2, [2])),
    ("image-rows-for-a-flat-shape", body(image(shape=[2]) | {"data": [[GOOD_B64], [GOOD_B64]]}),
     400, not_strings(2, [2])),
    ("image-bare-string", body(image() | {"data": GOOD_B64}), 400, not_strings(1, [1])),
    ("image-nested-too-deep", body(image() | {"data": [[GOOD_B64]]}), 400, not_strings(1, [1])),
    ("image-row-too-long", body(image(shape=[1, 1]) | {"data": [[GOOD_B64, GOOD_B64]]}), 400,
     not_strings(1, [1, 1])),
    ("image-rows-ragged", body(image(shape=[2, 1]) | {"data": [[GOOD_B64], GOOD_B64]}), 400,
     not_strings(2, [2, 1])),
    ("image-flat-count-for-n-by-1", body(image(shape=[2, 1])), 400,
     "input 'image' has 1 elements but its shape [2, 1] needs 2"),
    ("image-bad-base64", body(image(data=["not*base64!"])), 400,
     "input 'image': element 0 is not valid base64 (standard or URL-safe alphabet)"),
    ("image-content-type", body(image(parameters={"content_type": "str"})), 400,
     "input 'image': content_type 'str' is not supported; use 'base64' in JSON, or raw image "
     "bytes with the binary extension"),
    ("image-truncated", body(image(data=[base64.b64encode(GOOD_PNG[:70]).decode()])), 400,
     "the PNG image is truncated or corrupt and could not be decoded"),
    ("image-empty", body(image(data=[""])), 400, "the image is empty (0 bytes)"),
    ("image-tiff", body(image(data=[base64.b64encode(encode(gradient_rgb(), "TIFF")).decode()])),
     415, "the image format is not supported; send JPEG, PNG, WebP, BMP or GIF"),
    ("image-bomb", body(image(data=[base64.b64encode(png_header_only(10_000, 10_000)).decode()])),
     422, "the image is 10000×10000 = 100000000 pixels; the limit is 40000000 pixels"),
    ("header-not-int", binary({"inputs": [fp32_binary(len(FP32_BYTES))]}, FP32_BYTES, "abc"), 400,
     "the Inference-Header-Content-Length header must be a whole number of bytes (the JSON "
     "length)"),
    ("header-too-long", TOO_LONG, 400,
     "the Inference-Header-Content-Length header says the JSON is 99999 bytes but the body "
     f"has {len(TOO_LONG['kwargs']['content'])} bytes; it must be between 1 and the body length"),
    ("header-cuts-json", binary({"inputs": [fp32_binary(len(FP32_BYTES))]}, FP32_BYTES, "20"),
     400, "the request body is not valid JSON: EOF while parsing a value at line 1 column 20"),
    ("binary-leftover", binary({"inputs": [fp32_binary(len(FP32_BYTES))]}, FP32_BYTES + b"xx"),
     400, "the body has 2 bytes of binary data after the last tensor; the binary_data_size of "
     "the inputs must add up to the bytes after the JSON"),
    ("binary-short", binary({"inputs": [fp32_binary(len(FP32_BYTES))]}, FP32_BYTES[:-8]), 400,
     "input 'input' declares binary_data_size 12288 but only 12280 bytes of binary data are left "
     "in the body"),
    ("binary-size-mismatch", binary({"inputs": [fp32_binary(12284)]}, FP32_BYTES[:-4]), 400,
     "input 'input' has 3071 FP32 values in its binary data but shape [1, 3, 32, 32] needs 3072 "
     "(12288 bytes)"),
    ("binary-odd-bytes", binary({"inputs": [fp32_binary(12286)]}, FP32_BYTES[:-2]), 400,
     "input 'input' has 12286 bytes of FP32 data; FP32 elements are 4 bytes"),
    ("binary-nan", binary({"inputs": [fp32_binary(12288)]},
                          np.full(3072, np.nan, dtype="<f4").tobytes()), 400,
     "input 'input' contains NaN or infinite values"),
    ("binary-size-negative", binary({"inputs": [fp32_binary(-4)]}, b""), 400,
     "input 'input': binary_data_size must be an integer >= 0"),
    ("binary-and-data", binary({"inputs": [tensor(parameters={"binary_data_size": 12288})]},
                               FP32_BYTES), 400,
     "input 'input' has both 'data' and binary_data_size; send one of them"),
    ("binary-without-header", body(fp32_binary(12288)), 400,
     "input 'input' uses binary_data_size but the request has no Inference-Header-Content-Length "
     "header giving the length of the JSON part"),
    ("bytes-truncated-length", binary(
        {"inputs": [image(data=None, parameters={"binary_data_size": 6}) | {"data": None}]},
        struct.pack("<I", 10) + b"ab"), 400,
     "input 'image': BYTES element 0 says it is 10 bytes but only 2 remain"),
    ("bytes-cut-prefix", binary(
        {"inputs": [image(data=None, parameters={"binary_data_size": 2}) | {"data": None}]},
        b"\x01\x00"), 400,
     "input 'image': BYTES element 0 has a truncated 4-byte length"),
]  # fmt: skip


def encoded(content: bytes, encoding: str) -> dict[str, Any]:
    return raw(content, {"content-type": "application/json", "content-encoding": encoding})


GOOD_JSON = json.dumps({"inputs": [tensor()]}).encode()
BOMB = gzip.compress(b'{"inputs": [' + b" " * 1_000_000 + b"]}")
ENCODING_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("encoding-br", encoded(GOOD_JSON, "br"), 415,
     "Content-Encoding 'br' is not supported; send gzip, deflate or identity"),
    ("encoding-not-gzip", encoded(GOOD_JSON, "gzip"), 400, "the body is not valid gzip data"),
    ("encoding-truncated", encoded(gzip.compress(GOOD_JSON)[:-20], "gzip"), 400,
     "the gzip body is truncated"),
    ("encoding-bomb", encoded(BOMB, "gzip"), 413,
     "the decompressed request body is over the limit of 200000 bytes"),
    ("encoding-bomb-in-two-members", encoded(gzip.compress(b" " * 150_000) * 2, "gzip"), 413,
     "the decompressed request body is over the limit of 200000 bytes"),
    ("encoding-deflate-trailing-bytes", encoded(zlib.compress(GOOD_JSON) + b"xyz", "deflate"),
     400, "the body has 3 bytes after the end of its deflate stream"),
    ("encoding-gzip-trailing-junk", encoded(gzip.compress(GOOD_JSON) + b"xyz", "gzip"), 400,
     "the body is not valid gzip data"),
]  # fmt: skip
CASES += ENCODING_CASES


@pytest.fixture(scope="module")
def strict_client(model_repo: Path) -> Iterator[tuple[TestClient, list[int]]]:
    settings = make_settings(model_repo, max_images_per_request=3, max_body_bytes=200_000)
    with running_app(settings) as client:
        runs: list[int] = []
        for runtime in client.app.state.registry.serving().values():  # type: ignore[attr-defined]
            original = runtime.run

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                runs.append(1)
                return _original(*args, **kwargs)

            runtime.run = counted  # type: ignore[method-assign]
        yield client, runs


@pytest.mark.parametrize(("request_", "status", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_rejected_before_onnxruntime_with_the_protocol_error(
    strict_client: tuple[TestClient, list[int]],
    request_: dict[str, Any],
    status: int,
    message: str,
) -> None:
    client, runs = strict_client
    before = len(runs)
    response = client.post(URL, **request_["kwargs"])
    assert (response.status_code, response.json()) == (status, {"error": message})
    assert response.headers["content-type"] == "application/json"
    assert len(runs) == before, "onnxruntime ran for a rejected request"
    good = client.post(URL, json={"inputs": [tensor()]})
    assert good.status_code == 200 and len(runs) == before + 1


def test_binary_data_without_the_header_length_says_what_is_missing(
    strict_client: tuple[TestClient, list[int]],
) -> None:
    client, _ = strict_client
    content, headers = binary_request({"inputs": [fp32_binary(len(FP32_BYTES))]}, [FP32_BYTES])
    del headers[HEADER]
    response = client.post(URL, content=content, headers=headers)
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith("the request body is not valid JSON: trailing characters at line 1")
    assert message.endswith(
        "; a body with binary tensor data after its JSON needs the "
        "Inference-Header-Content-Length header (the JSON part's length in bytes)"
    )


def test_body_over_the_limit_is_413_in_the_v2_shape(
    strict_client: tuple[TestClient, list[int]],
) -> None:
    client, runs = strict_client
    before = len(runs)
    big = json.dumps({"inputs": [tensor(data=[0.0] * 60_000)]}).encode()
    response = client.post(URL, content=big, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (
        413,
        {"error": "the request body is over the limit of 200000 bytes"},
    )
    assert len(runs) == before


def test_error_messages_never_echo_data_values(
    strict_client: tuple[TestClient, list[int]],
) -> None:
    client, _ = strict_client
    secret = "zzSECRETzz"
    secret_b64 = base64.b64encode(secret.encode()).decode()
    for request, status in (
        ({"inputs": [tensor(data=[secret] * 3072)]}, 400),
        ({"inputs": [image(data=[secret])]}, 415),  # valid base64, not an image
        ({"inputs": [image(data=[secret_b64])]}, 415),
        ({"inputs": [image(data=[secret + "!"])]}, 400),
    ):
        response = client.post(URL, json=request)
        assert response.status_code == status
        assert set(response.json()) == {"error"}
        assert secret not in response.text and secret_b64 not in response.text


def test_non_finite_outputs_are_422_in_json_and_returned_in_binary(
    strict_client: tuple[TestClient, list[int]],
) -> None:
    client, _ = strict_client
    huge = np.full((1, 3, 32, 32), 3e38, dtype=np.float32)
    request = {"inputs": [tensor(data=huge.ravel().tolist())]}
    response = client.post(URL, json=request)
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": "model 'tiny-relu' produced NaN or infinite outputs for this input, which "
            "JSON cannot carry; ask for binary outputs (binary_data) or send inputs in the "
            "model's normal range"
        },
    )
    request["parameters"] = {"binary_data_output": True}
    binary_reply = client.post(URL, json=request)
    assert binary_reply.status_code == 200
    length = int(binary_reply.headers[HEADER])
    logits = np.frombuffer(binary_reply.content[length : length + 40], dtype="<f4")
    assert not np.isfinite(logits).all()


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("name", ["logits", "probabilities"])
def test_non_finite_outputs_are_422_with_classification_too(
    strict_client: tuple[TestClient, list[int]], name: str, binary: bool
) -> None:
    client, _ = strict_client
    huge = np.full((1, 3, 32, 32), 3e38, dtype=np.float32)
    plain = client.post(URL, json={"inputs": [tensor(data=huge.ravel().tolist())]})
    assert plain.status_code == 422  # the same inference, without classification
    parameters = {"classification": 3, "binary_data": binary}
    request = {
        "inputs": [tensor(data=huge.ravel().tolist())],
        "outputs": [{"name": name, "parameters": parameters}],
    }
    response = client.post(URL, json=request)
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": "model 'tiny-relu' produced NaN or infinite outputs for this input, which "
            "classification cannot rank; ask for the output without classification, in binary "
            "(binary_data), or send inputs in the model's normal range"
        },
    )
    assert response.headers["content-type"] == "application/json"


def test_over_capacity_is_503_with_retry_after(
    strict_client: tuple[TestClient, list[int]],
) -> None:
    client, runs = strict_client
    limiter = client.app.state.executor.limiter  # type: ignore[attr-defined]
    held = 0
    try:
        while limiter.in_use < limiter.limit:
            limiter.acquire()
            held += 1
        before = len(runs)
        response = client.post(URL, json={"inputs": [tensor()]})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json() == {
            "error": f"the server is at its limit of {limiter.limit} concurrent inference "
            "requests; retry shortly"
        }
        assert len(runs) == before
    finally:
        for _ in range(held):
            limiter.release()
    assert client.post(URL, json={"inputs": [tensor()]}).status_code == 200


def test_past_the_deadline_is_504(model_repo: Path) -> None:
    settings = make_settings(model_repo, inference_timeout_s=0.2)
    with running_app(settings) as client:
        runtime = client.app.state.registry.get("tiny-relu")  # type: ignore[attr-defined]
        original = runtime.run
        release = threading.Event()

        def slow(*args: Any, **kwargs: Any) -> Any:
            release.wait(10)
            return original(*args, **kwargs)

        runtime.run = slow  # type: ignore[method-assign]
        try:
            response = client.post(URL, json={"inputs": [tensor()]})
        finally:
            release.set()
            runtime.run = original  # type: ignore[method-assign]
        assert (response.status_code, response.json()) == (
            504,
            {"error": "the request took longer than the 0.2 s inference deadline"},
        )
