"""POST /v2/models/{m}[/versions/{v}]/infer (JSON): tensor and image inputs, outputs,
classification, id, versions — numbers checked against onnxruntime and /v1/classify."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_images import gradient_rgb, jpeg, png
from service_reference import reference_preprocess, run_reference, softmax64

from service.errors import BadRequest
from service.modelcard import ModelCard
from service.v2.tensors import _json_numbers

NUM_CLASSES = 10
INPUT_SHAPE = (3, 32, 32)


def card_of(client: TestClient, name: str) -> ModelCard:
    return ModelCard.model_validate(client.get(f"/v1/models/{name}").json()["card"])


def random_batch(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, *INPUT_SHAPE)).astype(np.float32)


def tensor_request(batch: np.ndarray, **extra: object) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(batch.shape),
                "datatype": "FP32",
                "data": batch.tolist(),
            }
        ],
        **extra,
    }


def image_request(images: list[bytes], **extra: object) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "image",
                "shape": [len(images)],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(image).decode() for image in images],
            }
        ],
        **extra,
    }


def outputs_of(body: dict) -> dict[str, dict]:
    return {output["name"]: output for output in body["outputs"]}


def test_spec_example_shape_with_this_models_tensors(client: TestClient, model_repo: Path) -> None:
    """The protocol's canonical example (id "42", one input, one requested output), adapted."""
    batch = random_batch(2, seed=3)
    request = tensor_request(batch, id="42", outputs=[{"name": "logits"}])
    request["inputs"][0]["data"] = batch.ravel().tolist()  # flat, row-major, as in the spec
    response = client.post("/v2/models/tiny-relu/infer", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"model_name", "model_version", "id", "outputs"}
    assert body["model_name"] == "tiny-relu"
    assert body["model_version"] == "2"
    assert body["id"] == "42"
    assert len(body["outputs"]) == 1
    output = body["outputs"][0]
    assert set(output) == {"name", "shape", "datatype", "data"}
    assert output["name"] == "logits"
    assert output["shape"] == [2, NUM_CLASSES] and output["datatype"] == "FP32"
    logits, _ = run_reference(model_repo / "tiny-relu" / "2" / "model.onnx", batch)
    assert len(output["data"]) == 2 * NUM_CLASSES
    assert np.abs(np.array(output["data"]).reshape(2, NUM_CLASSES) - logits).max() <= 1e-5


def test_the_spec_example_verbatim_is_a_clear_400(client: TestClient) -> None:
    request = {
        "id": "42",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
            {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
        ],
        "outputs": [{"name": "output0"}],
    }
    response = client.post("/v2/models/tiny-relu/infer", json=request)
    assert response.status_code == 400
    assert response.json() == {
        "error": "unknown input 'input0'; model 'tiny-relu' accepts exactly one of the inputs "
        "'input' (FP32 [N, 3, 32, 32]) or 'image' (BYTES [N])"
    }


@pytest.mark.parametrize("name", ["tiny-relu", "tiny-sigmoid", "tiny-maxout"])
def test_tensor_path_matches_a_direct_onnxruntime_run(
    client: TestClient, model_repo: Path, name: str
) -> None:
    batch = random_batch(3, seed=7)
    response = client.post(f"/v2/models/{name}/infer", json=tensor_request(batch))
    assert response.status_code == 200
    body = response.json()
    assert "id" not in body
    version = max(int(p.name) for p in (model_repo / name).iterdir())
    assert body["model_version"] == str(version)
    outputs = outputs_of(body)
    assert [o["name"] for o in body["outputs"]] == ["logits", "probabilities"]
    logits, probabilities = run_reference(model_repo / name / str(version) / "model.onnx", batch)
    got_logits = np.array(outputs["logits"]["data"], dtype=np.float64).reshape(3, NUM_CLASSES)
    got_probs = np.array(outputs["probabilities"]["data"], dtype=np.float64).reshape(3, -1)
    assert outputs["probabilities"]["shape"] == [3, NUM_CLASSES]
    assert np.abs(got_logits - logits).max() <= 1e-5
    assert np.abs(got_probs - probabilities).max() <= 1e-6
    assert np.abs(got_probs - softmax64(logits)).max() <= 1e-6
    assert np.abs(got_probs.sum(axis=1) - 1).max() <= 1e-5


def test_nested_and_flat_data_give_identical_outputs(client: TestClient) -> None:
    batch = random_batch(2, seed=11)
    nested = client.post("/v2/models/tiny-tanh/infer", json=tensor_request(batch))
    flat_request = tensor_request(batch)
    flat_request["inputs"][0]["data"] = batch.ravel().tolist()
    flat = client.post("/v2/models/tiny-tanh/infer", json=flat_request)
    assert nested.status_code == flat.status_code == 200
    assert nested.json() == flat.json()


def test_integer_data_is_accepted_as_fp32(client: TestClient, model_repo: Path) -> None:
    batch = np.random.default_rng(2).integers(-2, 3, size=(1, *INPUT_SHAPE))
    response = client.post("/v2/models/tiny-identity/infer", json=tensor_request(batch))
    assert response.status_code == 200
    logits, _ = run_reference(model_repo / "tiny-identity" / "1" / "model.onnx", batch)
    got = np.array(outputs_of(response.json())["logits"]["data"]).reshape(1, -1)
    assert np.abs(got - logits).max() <= 1e-5


def test_integers_beyond_int64_are_still_numbers() -> None:
    values = _json_numbers([2**64, -(2**70), 1, 2.5], [4], 4)
    assert values.dtype == np.float32
    assert values.tolist() == [float(np.float32(2.0**64)), float(np.float32(-(2.0**70))), 1, 2.5]
    for bad in ([2**64, "1", 1, 1], [2**64, True, 1, 1], [2**64, None, 1, 1]):
        with pytest.raises(BadRequest, match="'data' must be an array of numbers"):
            _json_numbers(bad, [4], 4)


def test_numbers_up_to_the_largest_float32_are_accepted() -> None:
    largest = float(np.finfo(np.float32).max)
    halfway = 2.0**128 - 2.0**103  # between the largest float32 and 2**128: rounds to inf
    below_halfway = float(np.nextafter(halfway, 0))
    values = _json_numbers([3.4028235e38, -largest, 1e-50, below_halfway], [4], 4)
    assert values.tolist() == [largest, -largest, 0.0, largest]  # the last rounds down to it
    for beyond in (halfway, -1e39, 1e300, 10**39, -(10**400)):
        with pytest.raises(BadRequest) as raised:
            _json_numbers([1.0, beyond], [2], 2)
        assert raised.value.message == (
            "input 'input' contains values outside the FP32 range ±3.4028235e38; send numbers "
            "within it"
        )


def test_image_input_matches_v1_classify_to_1e6(client: TestClient) -> None:
    images = [png(gradient_rgb(64, 48, seed=1)), jpeg(gradient_rgb(50, 90, seed=2))]
    v1 = client.post(
        "/v1/models/tiny-relu/classify",
        json={"images": [base64.b64encode(i).decode() for i in images]},
        params={"include_probabilities": "true"},
    )
    v2 = client.post("/v2/models/tiny-relu/infer", json=image_request(images, id="img-1"))
    assert v1.status_code == v2.status_code == 200
    body = v2.json()
    assert body["id"] == "img-1" and body["model_version"] == str(v1.json()["version"])
    probabilities = outputs_of(body)["probabilities"]
    assert probabilities["shape"] == [2, NUM_CLASSES]
    got = np.array(probabilities["data"]).reshape(2, NUM_CLASSES)
    expected = np.array([p["probabilities"] for p in v1.json()["predictions"]])
    assert np.abs(got - expected).max() <= 1e-6


def test_image_input_matches_the_reference_preprocessing(
    client: TestClient, model_repo: Path
) -> None:
    image = gradient_rgb(70, 40, seed=4)
    response = client.post("/v2/models/tiny-sigmoid/infer", json=image_request([png(image)]))
    assert response.status_code == 200
    card = card_of(client, "tiny-sigmoid")
    batch = reference_preprocess(image, card)
    logits, probabilities = run_reference(model_repo / "tiny-sigmoid" / "1" / "model.onnx", batch)
    outputs = outputs_of(response.json())
    assert np.abs(np.array(outputs["logits"]["data"]) - logits.ravel()).max() <= 1e-4
    assert np.abs(np.array(outputs["probabilities"]["data"]) - probabilities.ravel()).max() <= 1e-5


def test_image_shape_n_by_1_and_nested_data_are_accepted(client: TestClient) -> None:
    images = [png(gradient_rgb(30, 30, seed=s)) for s in (1, 2)]
    plain = client.post("/v2/models/tiny-relu/infer", json=image_request(images))
    nested_request = image_request(images)
    nested_request["inputs"][0]["shape"] = [2, 1]
    nested_request["inputs"][0]["data"] = [[d] for d in nested_request["inputs"][0]["data"]]
    nested = client.post("/v2/models/tiny-relu/infer", json=nested_request)
    flat_request = image_request(images)
    flat_request["inputs"][0]["shape"] = [2, 1]  # flat data for an [N, 1] shape, row-major
    flat = client.post("/v2/models/tiny-relu/infer", json=flat_request)
    assert plain.status_code == nested.status_code == flat.status_code == 200
    assert plain.json() == nested.json() == flat.json()


def test_image_without_content_type_is_read_as_base64(client: TestClient) -> None:
    image = png(gradient_rgb(40, 40, seed=9))
    with_type = client.post("/v2/models/tiny-relu/infer", json=image_request([image]))
    request = image_request([image])
    del request["inputs"][0]["parameters"]
    without = client.post("/v2/models/tiny-relu/infer", json=request)
    assert with_type.status_code == without.status_code == 200
    assert with_type.json() == without.json()


def test_only_requested_outputs_in_request_order(client: TestClient) -> None:
    batch = random_batch(1, seed=5)
    full = outputs_of(client.post("/v2/models/tiny-relu/infer", json=tensor_request(batch)).json())
    for names in (["probabilities"], ["logits"], ["probabilities", "logits"]):
        request = tensor_request(batch, outputs=[{"name": n} for n in names])
        response = client.post("/v2/models/tiny-relu/infer", json=request)
        assert response.status_code == 200
        body = response.json()
        assert [o["name"] for o in body["outputs"]] == names
        for output in body["outputs"]:
            assert output == full[output["name"]]


def parse_classification(entry: str) -> tuple[np.float32, int, str]:
    value, index, label = entry.split(":", 2)
    number = np.float32(float(value))
    assert value == str(number), f"{value!r} is not the shortest float32 text"
    return number, int(index), label


def test_classification_extension_top_k_strings(client: TestClient, model_repo: Path) -> None:
    batch = random_batch(2, seed=13)
    labels = card_of(client, "tiny-relu").labels
    plain = outputs_of(client.post("/v2/models/tiny-relu/infer", json=tensor_request(batch)).json())
    request = tensor_request(
        batch,
        outputs=[
            {"name": "probabilities", "parameters": {"classification": 3}},
            {"name": "logits", "parameters": {"classification": 2}},
        ],
    )
    response = client.post("/v2/models/tiny-relu/infer", json=request)
    assert response.status_code == 200
    outputs = outputs_of(response.json())
    for name, k in (("probabilities", 3), ("logits", 2)):
        output = outputs[name]
        assert output["datatype"] == "BYTES" and output["shape"] == [2, k]
        assert len(output["data"]) == 2 * k
        values = np.array(plain[name]["data"], dtype=np.float32).reshape(2, NUM_CLASSES)
        for row in range(2):
            order = sorted(range(NUM_CLASSES), key=lambda i, r=row: (-values[r][i], i))[:k]
            entries = [parse_classification(e) for e in output["data"][row * k : (row + 1) * k]]
            assert [index for _, index, _ in entries] == order
            assert [label for _, _, label in entries] == [labels[i] for i in order]
            assert [value for value, _, _ in entries] == [values[row][i] for i in order]
    reference, _ = run_reference(model_repo / "tiny-relu" / "2" / "model.onnx", batch)
    assert outputs["logits"]["data"][0].split(":")[1] == str(int(np.argmax(reference[0])))


def test_classification_k_larger_than_classes_is_clamped(client: TestClient) -> None:
    request = tensor_request(
        random_batch(1), outputs=[{"name": "probabilities", "parameters": {"classification": 50}}]
    )
    response = client.post("/v2/models/tiny-relu/infer", json=request)
    assert response.status_code == 200
    output = response.json()["outputs"][0]
    assert output["shape"] == [1, NUM_CLASSES] and len(output["data"]) == NUM_CLASSES
    assert sorted(parse_classification(e)[1] for e in output["data"]) == list(range(NUM_CLASSES))


def test_classification_matches_v1_top_k(client: TestClient) -> None:
    image = png(gradient_rgb(48, 48, seed=21))
    v1 = client.post(
        "/v1/models/tiny-tanh/classify", content=image, headers={"content-type": "image/png"},
        params={"top_k": 4},
    ).json()  # fmt: skip
    request = image_request(
        [image], outputs=[{"name": "probabilities", "parameters": {"classification": 4}}]
    )
    v2 = client.post("/v2/models/tiny-tanh/infer", json=request).json()
    entries = [parse_classification(e) for e in v2["outputs"][0]["data"]]
    top = v1["predictions"][0]["top_k"]
    assert [(i, label) for _, i, label in entries] == [(t["index"], t["label"]) for t in top]
    assert (
        np.abs(np.array([v for v, _, _ in entries]) - [t["probability"] for t in top]).max() <= 1e-6
    )


def test_version_in_the_path_selects_that_version(client: TestClient, model_repo: Path) -> None:
    batch = random_batch(1, seed=17)
    for version in (1, 2):
        response = client.post(
            f"/v2/models/tiny-relu/versions/{version}/infer", json=tensor_request(batch)
        )
        assert response.status_code == 200
        body = response.json()
        assert body["model_version"] == str(version)
        logits, _ = run_reference(model_repo / "tiny-relu" / str(version) / "model.onnx", batch)
        got = np.array(outputs_of(body)["logits"]["data"]).reshape(1, -1)
        assert np.abs(got - logits).max() <= 1e-5
    one = client.post("/v2/models/tiny-relu/versions/1/infer", json=tensor_request(batch)).json()
    two = client.post("/v2/models/tiny-relu/versions/2/infer", json=tensor_request(batch)).json()
    assert outputs_of(one)["logits"]["data"] != outputs_of(two)["logits"]["data"]


def test_model_name_in_the_body_is_ignored_and_extra_parameters_allowed(
    client: TestClient,
) -> None:
    batch = random_batch(1)
    request = tensor_request(batch, model_name="tiny-relu", parameters={"priority": 1})
    request["inputs"][0]["parameters"] = {"note": "x"}
    response = client.post("/v2/models/tiny-relu/infer", json=request)
    assert response.status_code == 200


def test_unknown_properties_of_inputs_and_outputs_are_ignored(client: TestClient) -> None:
    """The protocol's schema does not forbid other properties on request_input/request_output."""
    batch = random_batch(1)
    plain = client.post(
        "/v2/models/tiny-relu/infer",
        json=tensor_request(batch, outputs=[{"name": "logits"}]),
    ).json()
    request = tensor_request(batch, outputs=[{"name": "logits", "colour": "red"}])
    request["inputs"][0]["colour"] = "red"
    response = client.post("/v2/models/tiny-relu/infer", json=request)
    assert response.status_code == 200
    assert response.json()["outputs"] == plain["outputs"]


def test_a_gzip_body_of_several_members_is_their_concatenation(client: TestClient) -> None:
    request = image_request([png(gradient_rgb(40, 40, seed=3))])
    data = json.dumps(request).encode()
    packed = gzip.compress(data[:100]) + gzip.compress(data[100:])  # RFC 1952: members concatenate
    compressed = client.post(
        "/v2/models/tiny-relu/infer",
        content=packed,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert compressed.status_code == 200
    assert compressed.json() == client.post("/v2/models/tiny-relu/infer", json=request).json()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies(client: TestClient, encoding: str) -> None:
    request = image_request([png(gradient_rgb(40, 40, seed=3))])
    plain = client.post("/v2/models/tiny-relu/infer", json=request)
    data = json.dumps(request).encode()
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    compressed = client.post(
        "/v2/models/tiny-relu/infer",
        content=packed,
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert plain.status_code == compressed.status_code == 200
    assert compressed.json() == plain.json()
