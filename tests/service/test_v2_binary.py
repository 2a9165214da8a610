"""Binary tensor data extension: requests assembled by hand with ``struct`` (see v2_wire.py,
independent of the service's codec) and responses parsed by hand."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from service_images import gradient_rgb, jpeg, png
from service_reference import run_reference
from v2_wire import (
    HEADER,
    binary_request,
    bytes_elements,
    fp32_bytes,
    parse_binary_response,
    split_bytes_elements,
    unpack_fp32,
)

NUM_CLASSES = 10


def random_batch(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, 3, 32, 32)).astype(np.float32)


def fp32_input(batch: np.ndarray) -> dict[str, object]:
    return {
        "name": "input",
        "shape": list(batch.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": batch.size * 4},
    }


def test_hand_built_binary_request_and_binary_response(
    client: TestClient, model_repo: Path
) -> None:
    batch = random_batch(2, seed=1)
    header = {
        "id": "bin-1",
        "inputs": [fp32_input(batch)],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_request(header, [fp32_bytes(batch)])
    response = client.post("/v2/models/tiny-relu/infer", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers[HEADER])
    assert int(response.headers["content-length"]) == len(response.content)
    reply, tensors = parse_binary_response(response.content, header_length)
    size = 2 * NUM_CLASSES * 4
    assert reply == {
        "model_name": "tiny-relu",
        "model_version": "2",
        "id": "bin-1",
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [2, NUM_CLASSES],
             "parameters": {"binary_data_size": size}},
            {"name": "probabilities", "datatype": "FP32", "shape": [2, NUM_CLASSES],
             "parameters": {"binary_data_size": size}},
        ],
    }  # fmt: skip
    assert len(response.content) == header_length + 2 * size
    logits, probabilities = run_reference(model_repo / "tiny-relu" / "2" / "model.onnx", batch)
    assert np.abs(unpack_fp32(tensors["logits"]).reshape(2, -1) - logits).max() <= 1e-5
    got = unpack_fp32(tensors["probabilities"]).reshape(2, -1)
    assert np.abs(got - probabilities).max() <= 1e-6


def test_binary_and_json_requests_give_the_same_numbers(client: TestClient) -> None:
    batch = random_batch(3, seed=2)
    as_json = client.post(
        "/v2/models/tiny-tanh/infer",
        json={"inputs": [{"name": "input", "shape": [3, 3, 32, 32], "datatype": "FP32",
                          "data": batch.ravel().tolist()}]},
    )  # fmt: skip
    body, headers = binary_request({"inputs": [fp32_input(batch)]}, [fp32_bytes(batch)])
    as_binary = client.post("/v2/models/tiny-tanh/infer", content=body, headers=headers)
    assert as_json.status_code == as_binary.status_code == 200
    # no binary output asked for: a plain JSON response, identical to the JSON request's
    assert as_binary.headers["content-type"] == "application/json"
    assert HEADER.lower() not in {k.lower() for k in as_binary.headers}
    assert as_binary.json() == as_json.json()


def test_per_output_binary_data_overrides_binary_data_output(client: TestClient) -> None:
    batch = random_batch(1, seed=3)
    header = {
        "inputs": [fp32_input(batch)],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": False}},
            {"name": "logits"},
        ],
    }
    body, headers = binary_request(header, [fp32_bytes(batch)])
    response = client.post("/v2/models/tiny-relu/infer", content=body, headers=headers)
    assert response.status_code == 200
    reply, tensors = parse_binary_response(response.content, int(response.headers[HEADER]))
    probabilities, logits = reply["outputs"]
    assert probabilities["name"] == "probabilities" and "parameters" not in probabilities
    assert len(probabilities["data"]) == NUM_CLASSES
    assert logits["parameters"] == {"binary_data_size": NUM_CLASSES * 4} and "data" not in logits
    assert set(tensors) == {"logits"}
    plain = client.post(
        "/v2/models/tiny-relu/infer",
        json={"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                          "data": batch.ravel().tolist()}]},
    ).json()  # fmt: skip
    json_logits = np.array(plain["outputs"][0]["data"], dtype=np.float32)
    assert unpack_fp32(tensors["logits"]).tobytes() == json_logits.tobytes()  # bit for bit
    assert probabilities["data"] == plain["outputs"][1]["data"]


def test_json_request_with_one_binary_output(client: TestClient) -> None:
    batch = random_batch(1, seed=4)
    request = {
        "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                    "data": batch.tolist()}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    response = client.post("/v2/models/tiny-relu/infer", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    reply, tensors = parse_binary_response(response.content, int(response.headers[HEADER]))
    assert reply["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, NUM_CLASSES],
         "parameters": {"binary_data_size": NUM_CLASSES * 4}},
    ]  # fmt: skip
    assert abs(float(unpack_fp32(tensors["probabilities"]).astype(np.float64).sum()) - 1) <= 1e-5


def test_raw_image_bytes_match_v1_classify(client: TestClient) -> None:
    images = [jpeg(gradient_rgb(64, 64, seed=5)), png(gradient_rgb(31, 57, seed=6))]
    header = {
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(bytes_elements(images))}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    body, headers = binary_request(header, [bytes_elements(images)])
    response = client.post("/v2/models/tiny-relu/infer", content=body, headers=headers)
    assert response.status_code == 200
    _, tensors = parse_binary_response(response.content, int(response.headers[HEADER]))
    got = unpack_fp32(tensors["probabilities"]).reshape(2, NUM_CLASSES)
    files = [("file", (str(i), data, "application/octet-stream")) for i, data in enumerate(images)]
    v1 = client.post(
        "/v1/models/tiny-relu/classify", files=files, params={"include_probabilities": "true"}
    )
    assert v1.status_code == 200
    expected = np.array([p["probabilities"] for p in v1.json()["predictions"]])
    assert np.abs(got - expected).max() <= 1e-6


def test_binary_bytes_elements_may_be_base64_text(client: TestClient) -> None:
    image = png(gradient_rgb(40, 30, seed=8))
    raw = bytes_elements([image])
    encoded = bytes_elements([base64.b64encode(image)])
    results = []
    for data, parameters in ((raw, {}), (encoded, {"content_type": "base64"})):
        parameters = {"binary_data_size": len(data), **parameters}
        header = {
            "inputs": [
                {"name": "image", "shape": [1, 1], "datatype": "BYTES", "parameters": parameters}
            ]
        }
        body, headers = binary_request(header, [data])
        response = client.post("/v2/models/tiny-relu/infer", content=body, headers=headers)
        assert response.status_code == 200
        results.append(response.json())
    assert results[0] == results[1]


def test_classification_output_in_binary(client: TestClient) -> None:
    batch = random_batch(2, seed=9)
    header = {
        "inputs": [fp32_input(batch)],
        "outputs": [{"name": "logits", "parameters": {"classification": 3, "binary_data": True}},
                    {"name": "probabilities"}],
    }  # fmt: skip
    body, headers = binary_request(header, [fp32_bytes(batch)])
    response = client.post("/v2/models/tiny-relu/infer", content=body, headers=headers)
    assert response.status_code == 200
    reply, tensors = parse_binary_response(response.content, int(response.headers[HEADER]))
    logits_out = reply["outputs"][0]
    assert logits_out["datatype"] == "BYTES" and logits_out["shape"] == [2, 3]
    strings = [s.decode() for s in split_bytes_elements(tensors["logits"])]
    assert logits_out["parameters"] == {"binary_data_size": len(tensors["logits"])}
    json_header = {
        "inputs": [fp32_input(batch)],
        "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
    }
    json_body, json_headers = binary_request(json_header, [fp32_bytes(batch)])
    json_version = client.post(
        "/v2/models/tiny-relu/infer", content=json_body, headers=json_headers
    )
    assert json_version.status_code == 200
    assert strings == json_version.json()["outputs"][0]["data"]
    assert len(strings) == 6 and all(s.count(":") == 2 for s in strings)
