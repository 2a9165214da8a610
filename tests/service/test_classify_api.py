"""POST /v1/classify and /v1/models/{name}/classify: encodings, numbers, options, versions."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_images import gradient_rgb, halves, jpeg, jpeg_with_orientation, png
from service_reference import reference_preprocess, run_reference, softmax64

from service.modelcard import ModelCard
from service.schemas import ClassifyResponse


def card_of(client: TestClient, name: str) -> ModelCard:
    return ModelCard.model_validate(client.get(f"/v1/models/{name}").json()["card"])


def expected_probabilities(
    repo: Path, name: str, version: int, images: list[Image.Image], card: ModelCard
) -> tuple[np.ndarray, np.ndarray]:
    batch = np.concatenate([reference_preprocess(image.convert("RGB"), card) for image in images])
    logits, probabilities = run_reference(repo / name / str(version) / "model.onnx", batch)
    return softmax64(logits), probabilities


def test_multipart_batch_matches_a_direct_onnxruntime_run(
    client: TestClient, model_repo: Path
) -> None:
    images = [gradient_rgb(64, 48, seed=1), gradient_rgb(40, 90, seed=2), gradient_rgb(33, 33)]
    files = [("file", (f"{i}.png", png(image), "image/png")) for i, image in enumerate(images)]
    response = client.post(
        "/v1/models/tiny-relu/classify", files=files, params={"include_probabilities": "true"}
    )
    assert response.status_code == 200
    body = response.json()
    ClassifyResponse.model_validate(body)
    assert body["model"] == "tiny-relu" and body["version"] == 2
    assert set(body["timings_ms"]) == {"decode", "preprocess", "inference", "total"}
    card = card_of(client, "tiny-relu")
    softmax, graph_probabilities = expected_probabilities(model_repo, "tiny-relu", 2, images, card)
    assert len(body["predictions"]) == 3
    for row, prediction in enumerate(body["predictions"]):
        vector = np.array(prediction["probabilities"])
        assert abs(vector.sum() - 1.0) <= 1e-5
        assert np.abs(vector - softmax[row]).max() <= 1e-5
        assert np.abs(vector - graph_probabilities[row]).max() <= 1e-5
        order = np.argsort(-softmax[row], kind="stable")[:5]
        assert [entry["index"] for entry in prediction["top_k"]] == order.tolist()
        assert [entry["label"] for entry in prediction["top_k"]] == [card.labels[i] for i in order]
        probabilities = [entry["probability"] for entry in prediction["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert np.allclose(probabilities, softmax[row][order], atol=1e-5)


def test_raw_body_json_base64_and_data_url_agree_with_multipart(client: TestClient) -> None:
    data = jpeg(gradient_rgb(80, 60, seed=5))
    encoded = base64.b64encode(data).decode()
    responses = [
        client.post(
            "/v1/models/tiny-tanh/classify", files=[("file", ("x.jpg", data, "image/jpeg"))]
        ),
        client.post(
            "/v1/models/tiny-tanh/classify", content=data, headers={"content-type": "image/jpeg"}
        ),
        client.post("/v1/models/tiny-tanh/classify", json={"images": [encoded]}),
        client.post(
            "/v1/models/tiny-tanh/classify",
            json={"images": [f"data:image/jpeg;base64,{encoded}"]},
        ),
        client.post(  # URL-safe alphabet, no padding, line breaks
            "/v1/models/tiny-tanh/classify",
            json={
                "images": [
                    base64.urlsafe_b64encode(data).decode().rstrip("=")[:40]
                    + "\n"
                    + base64.urlsafe_b64encode(data).decode().rstrip("=")[40:]
                ]
            },
        ),
    ]
    assert [r.status_code for r in responses] == [200] * 5
    tops = [r.json()["predictions"][0]["top_k"] for r in responses]
    assert all(top == tops[0] for top in tops)


def test_content_type_does_not_decide_the_format(client: TestClient) -> None:
    data = png(gradient_rgb(50, 50))
    response = client.post(
        "/v1/models/tiny-relu/classify", content=data, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200


def test_top_k_default_clamp_and_body_over_query(client: TestClient) -> None:
    data = png(gradient_rgb())
    headers = {"content-type": "image/png"}
    default = client.post("/v1/models/tiny-relu/classify", content=data, headers=headers)
    assert len(default.json()["predictions"][0]["top_k"]) == 5
    assert "probabilities" not in default.json()["predictions"][0]
    clamped = client.post(
        "/v1/models/tiny-relu/classify?top_k=50", content=data, headers=headers
    ).json()
    assert len(clamped["predictions"][0]["top_k"]) == 10
    assert sorted(e["index"] for e in clamped["predictions"][0]["top_k"]) == list(range(10))
    encoded = base64.b64encode(data).decode()
    body_wins = client.post(
        "/v1/models/tiny-relu/classify?top_k=4", json={"images": [encoded], "top_k": 2}
    ).json()
    assert len(body_wins["predictions"][0]["top_k"]) == 2
    multipart = client.post(
        "/v1/models/tiny-relu/classify",
        files=[("file", ("a.png", data, "image/png"))],
        data={"top_k": "3", "include_probabilities": "true"},
    ).json()
    assert len(multipart["predictions"][0]["top_k"]) == 3
    assert len(multipart["predictions"][0]["probabilities"]) == 10


def test_version_pin_per_request(client: TestClient, model_repo: Path) -> None:
    image = gradient_rgb(48, 48, seed=9)
    data = png(image)
    headers = {"content-type": "image/png"}
    v1 = client.post(
        "/v1/models/tiny-relu/classify?version=1&include_probabilities=true",
        content=data,
        headers=headers,
    )
    v2 = client.post(
        "/v1/models/tiny-relu/classify?include_probabilities=true", content=data, headers=headers
    )
    assert (v1.status_code, v1.json()["version"]) == (200, 1)
    assert v2.json()["version"] == 2
    card = card_of(client, "tiny-relu")
    for version, response in ((1, v1), (2, v2)):
        softmax, _ = expected_probabilities(model_repo, "tiny-relu", version, [image], card)
        got = np.array(response.json()["predictions"][0]["probabilities"])
        assert np.abs(got - softmax[0]).max() <= 1e-5
    missing = client.post("/v1/models/tiny-relu/classify?version=7", content=data, headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "code": "version_not_found",
            "message": "version 7 of model 'tiny-relu' is not available; available versions: 1, 2",
        }
    }


def test_default_model_is_the_alphabetically_first_when_unset(client: TestClient) -> None:
    data = png(gradient_rgb())
    response = client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert response.json()["model"] == "tiny-identity"
    assert client.get("/v1/models").json()["default_model"] == "tiny-identity"


def test_configured_default_model(model_repo: Path) -> None:
    from conftest import make_settings, running_app

    with running_app(make_settings(model_repo, default_model="tiny-sigmoid")) as client:
        data = png(gradient_rgb())
        response = client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
        assert response.json()["model"] == "tiny-sigmoid"


def test_exif_rotation_changes_what_the_model_sees(client: TestClient, model_repo: Path) -> None:
    source = halves(64, 32, (255, 0, 0), (0, 0, 255))
    rotated = jpeg_with_orientation(source, 6)
    response = client.post(
        "/v1/models/tiny-relu/classify?include_probabilities=true",
        content=rotated,
        headers={"content-type": "image/jpeg"},
    )
    upright = Image.open(io.BytesIO(rotated)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    card = card_of(client, "tiny-relu")
    softmax, _ = expected_probabilities(model_repo, "tiny-relu", 2, [upright], card)
    got = np.array(response.json()["predictions"][0]["probabilities"])
    assert np.abs(got - softmax[0]).max() <= 1e-5


@pytest.mark.parametrize(
    "name", ["tiny-relu", "tiny-sigmoid", "tiny-tanh", "tiny-identity", "tiny-maxout"]
)
def test_every_tiny_model_classifies_with_a_softmax(client: TestClient, name: str) -> None:
    data = png(gradient_rgb(seed=11))
    response = client.post(
        f"/v1/models/{name}/classify?include_probabilities=true&top_k=10",
        content=data,
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    vector = np.array(prediction["probabilities"])
    assert vector.shape == (10,) and (vector >= 0).all()
    assert abs(vector.sum() - 1.0) <= 1e-5
    assert [e["probability"] for e in prediction["top_k"]] == sorted(vector.tolist(), reverse=True)
