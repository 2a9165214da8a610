"""POST /v1/compare: one image through several models, checked against classify and onnxruntime."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_settings, running_app
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image

from service.app import create_app
from service.modelcard import MODEL_FILENAME, ModelCard
from service.settings import Settings

ALL_MODELS = ["tiny-identity", "tiny-maxout", "tiny-relu", "tiny-sigmoid", "tiny-tanh"]
SERVED_VERSION = {"tiny-relu": 2}
ACTIVATION = {
    "tiny-identity": "identity",
    "tiny-maxout": "maxout",
    "tiny-relu": "relu",
    "tiny-sigmoid": "sigmoid",
    "tiny-tanh": "tanh",
}


@pytest.fixture(scope="module")
def client(model_repo: Path) -> Iterator[TestClient]:
    with running_app(make_settings(model_repo, intra_op_threads=1)) as test_client:
        assert test_client.get("/health/ready").status_code == 200
        yield test_client


def pixels(seed: int = 0) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=(36, 36, 3), dtype=np.uint8)


def png_bytes(values: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def direct_probabilities(repo: Path, name: str, values: NDArray[np.uint8]) -> NDArray[np.float32]:
    """onnxruntime on the file, input built by hand (36×36 → centre crop 32, card mean/std)."""
    path = repo / name / str(SERVED_VERSION.get(name, 1)) / MODEL_FILENAME
    proto = onnx.load(str(path))
    card = ModelCard.from_metadata({p.key: p.value for p in proto.metadata_props})
    crop = values[2:34, 2:34].astype(np.float64) / 255.0
    batch = ((crop - np.array(card.mean)) / np.array(card.std)).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": batch.astype(np.float32)})
    result: NDArray[np.float32] = probabilities[0]
    return result


def compare(client: TestClient, data: bytes, query: str = "") -> dict[str, Any]:
    response = client.post(
        f"/v1/compare{query}", content=data, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def inference_count(client: TestClient, model: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'^actlab_inferences_total{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def histogram_count(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf"^{name}_count (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


# --------------------------------------------------------------------------- results


def test_compare_runs_every_loaded_model(client: TestClient, model_repo: Path) -> None:
    values = pixels()
    body = compare(client, png_bytes(values), "?top_k=3")
    assert [r["model"] for r in body["results"]] == ALL_MODELS
    best = set()
    for result in body["results"]:
        name = result["model"]
        assert result["version"] == SERVED_VERSION.get(name, 1)
        assert result["activation"] == ACTIVATION[name]
        assert result["architecture"] == "resnet8"
        assert result["activation_params"] == ({"k": 2} if name == "tiny-maxout" else {})
        probabilities = direct_probabilities(model_repo, name, values)
        top = np.argsort(-probabilities, kind="stable")[:3]
        assert [e["index"] for e in result["top_k"]] == top.tolist()
        assert [e["label"] for e in result["top_k"]] == [f"digit-{i}" for i in top]
        assert [e["probability"] for e in result["top_k"]] == pytest.approx(
            probabilities[top].tolist(), rel=1e-5, abs=1e-7
        )
        assert result["probabilities"] is None
        assert result["inference_ms"] == result["timings_ms"]["inference"]
        assert result["inference_ms"] >= 0
        best.add(result["top_k"][0]["label"])
    assert body["top1_agree"] is (len(best) == 1)
    assert body["total_ms"] >= sum(r["inference_ms"] for r in body["results"])


def test_compare_matches_classify_per_model(client: TestClient) -> None:
    data = png_bytes(pixels(4))
    body = compare(client, data, "?top_k=10&include_probabilities=true")
    for result in body["results"]:
        classified = client.post(
            f"/v1/models/{result['model']}/classify?top_k=10&include_probabilities=true",
            content=data,
            headers={"content-type": "image/png"},
        ).json()
        assert classified["version"] == result["version"]
        assert result["top_k"] == classified["predictions"][0]["top_k"]
        assert result["probabilities"] == classified["predictions"][0]["probabilities"]
        assert sum(result["probabilities"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?models=tiny-tanh,tiny-relu", ["tiny-tanh", "tiny-relu"]),
        ("?models=tiny-sigmoid&models=tiny-identity", ["tiny-sigmoid", "tiny-identity"]),
        ("?models=tiny-relu&models=tiny-relu,%20tiny-maxout", ["tiny-relu", "tiny-maxout"]),
        ("?models=", ALL_MODELS),
    ],
)
def test_models_subset_in_the_query(client: TestClient, query: str, expected: list[str]) -> None:
    body = compare(client, png_bytes(pixels()), query)
    assert [r["model"] for r in body["results"]] == expected


def test_json_body_with_models(client: TestClient) -> None:
    encoded = base64.b64encode(png_bytes(pixels())).decode()
    response = client.post(
        "/v1/compare",
        json={
            "images": [f"data:image/png;base64,{encoded}"],
            "models": ["tiny-maxout"],
            "top_k": 1,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["model"] for r in body["results"]] == ["tiny-maxout"]
    assert len(body["results"][0]["top_k"]) == 1
    assert body["top1_agree"] is True


def test_multipart_with_models_in_the_query(client: TestClient) -> None:
    data = png_bytes(pixels(2))
    response = client.post(
        "/v1/compare?models=tiny-relu,tiny-tanh",
        files={"file": ("x.png", data, "image/png")},
        data={"top_k": "2"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["model"] for r in body["results"]] == ["tiny-relu", "tiny-tanh"]
    assert all(len(r["top_k"]) == 2 for r in body["results"])
    raw = compare(client, data, "?models=tiny-relu,tiny-tanh&top_k=2")
    assert [r["top_k"] for r in raw["results"]] == [r["top_k"] for r in body["results"]]


def test_top_k_is_clamped_to_the_class_count(client: TestClient) -> None:
    body = compare(client, png_bytes(pixels()), "?models=tiny-relu&top_k=50")
    assert len(body["results"][0]["top_k"]) == 10


# --------------------------------------------------------------------------- rejections


def test_unknown_model_is_404_naming_it_and_nothing_runs(client: TestClient) -> None:
    compare(client, png_bytes(pixels()), "?models=tiny-relu")
    before = inference_count(client, "tiny-relu")
    assert before >= 1  # the counter is found and counts compare's inferences
    response = client.post(
        "/v1/compare?models=tiny-relu,ghost-model",
        content=png_bytes(pixels()),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["message"].startswith("no model named 'ghost-model'; loaded models: ")
    assert inference_count(client, "tiny-relu") == before
    encoded = base64.b64encode(png_bytes(pixels())).decode()
    in_body = client.post("/v1/compare", json={"images": [encoded], "models": ["ghost-model"]})
    assert in_body.status_code == 404
    assert "'ghost-model'" in in_body.json()["error"]["message"]


def test_two_images_are_422(client: TestClient) -> None:
    encoded = base64.b64encode(png_bytes(pixels())).decode()
    response = client.post("/v1/compare", json={"images": [encoded, encoded]})
    assert response.status_code == 422
    assert response.json() == {
        "error": {"code": "too_many_images", "message": "compare takes exactly one image; got 2"}
    }


@pytest.mark.parametrize(
    "body",
    [{"images": []}, {"images": ["aGk="], "version": 1}, {"images": ["aGk="], "models": "x"}],
    ids=["no-image", "version-field", "models-not-a-list"],
)
def test_invalid_json_fields_are_422(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/compare", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("invalid request: ")


def test_version_in_multipart_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/compare",
        files={"file": ("x.png", png_bytes(pixels()), "image/png")},
        data={"version": "1"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_request",
        "message": "unexpected form field 'version'; allowed: file, top_k, include_probabilities",
    }


def test_two_file_parts_are_too_many_images(client: TestClient) -> None:
    data = png_bytes(pixels())
    response = client.post(
        "/v1/compare",
        files=[("file", ("a.png", data, "image/png")), ("file", ("b.png", data, "image/png"))],
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "too_many_images",
        "message": "too many images: send at most 1 'file' part",
    }


def test_too_many_fields_lists_only_the_fields_compare_accepts(client: TestClient) -> None:
    response = client.post(
        "/v1/compare",
        files={"file": ("x.png", png_bytes(pixels()), "image/png")},
        data={"top_k": "3", "include_probabilities": "true", "version": "1", "foo": "x"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "too_many_fields",
        "message": "too many form fields: besides the 'file' part, send only "
        "top_k, include_probabilities, each at most once",
    }


def test_multipart_top_k_has_the_query_bound(client: TestClient) -> None:
    image = {"file": ("x.png", png_bytes(pixels()), "image/png")}
    in_form = client.post("/v1/compare", files=image, data={"top_k": "1000000000"})
    in_query = client.post("/v1/compare?top_k=1000000000", files=image)
    problem = "top_k: Input should be less than or equal to 100000"
    assert in_form.json()["error"]["message"] == f"invalid request: {problem}"
    assert in_query.json()["error"]["message"] == f"invalid request: query.{problem}"
    assert in_form.status_code == in_query.status_code == 422


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (png_bytes(pixels())[:200], "image/png", 400, "invalid_image"),
        (b"", "image/png", 400, "invalid_image"),
        (b"II*\x00 a TIFF header", "image/tiff", 415, "unsupported_image_format"),
        (png_bytes(pixels()), "application/octet-stream", 415, "unsupported_content_type"),
    ],
    ids=["truncated", "empty", "tiff", "octet-stream"],
)
def test_bad_images_are_4xx(
    client: TestClient, data: bytes, content_type: str, status: int, code: str
) -> None:
    response = client.post("/v1/compare", content=data, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert compare(client, png_bytes(pixels()), "?models=tiny-relu")["results"]


def test_bad_base64_is_400(client: TestClient) -> None:
    response = client.post("/v1/compare", json={"images": ["not*base64"]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_base64"


def test_no_valid_model_is_503(tmp_path: Path) -> None:
    app = create_app(Settings(models_dir=tmp_path, intra_op_threads=1))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while not app.state.registry.startup_done.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = client.post(
            "/v1/compare", content=png_bytes(pixels()), headers={"content-type": "image/png"}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        assert response.json() == {
            "error": {"code": "not_ready", "message": "no valid model is loaded"}
        }


def test_one_decode_serves_every_model(client: TestClient) -> None:
    """The image is decoded once for the whole comparison, preprocessed once per model."""
    decodes = histogram_count(client, "actlab_decode_seconds")
    preprocesses = histogram_count(client, "actlab_preprocess_seconds")
    body = compare(client, png_bytes(pixels(3)))
    assert len(body["results"]) == len(ALL_MODELS)
    assert histogram_count(client, "actlab_decode_seconds") == decodes + 1
    assert histogram_count(client, "actlab_preprocess_seconds") == preprocesses + len(ALL_MODELS)
    shared = {r["timings_ms"]["decode"] for r in body["results"]}
    assert len(shared) == 1  # every model reports the one decode it used
