"""POST /v1/models/{name}/activations against a direct onnxruntime computation done here.

The direct computation is written independently of ``service.inspect``: the site tensors are
exposed with ONNX shape inference, the input is built by hand from a 36×36 image (the tiny cards
resize the shorter side to 36 and centre-crop 32, so preprocessing is a plain 2-pixel crop), and
the statistics are plain numpy.
"""

from __future__ import annotations

import base64
import hashlib
import io
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

from service.modelcard import MODEL_FILENAME, ModelCard

MODELS = ["tiny-relu", "tiny-sigmoid", "tiny-tanh", "tiny-identity", "tiny-maxout"]
BOUNDS = {"tiny-sigmoid": (0.0, 1.0), "tiny-tanh": (-1.0, 1.0)}
SERVED_VERSION = {"tiny-relu": 2}  # the latest version; the others have only version 1


@pytest.fixture(scope="module")
def client(model_repo: Path) -> Iterator[TestClient]:
    with running_app(make_settings(model_repo, intra_op_threads=1)) as test_client:
        assert test_client.get("/health/ready").status_code == 200
        yield test_client


def noise_pixels(seed: int = 0) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=(36, 36, 3), dtype=np.uint8)


def checkerboard_pixels() -> NDArray[np.uint8]:
    board = (np.indices((36, 36)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return np.stack([board] * 3, axis=-1)


def png_bytes(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def model_path(repo: Path, name: str, version: int = 1) -> Path:
    return repo / name / str(version) / MODEL_FILENAME


def read_card(path: Path) -> ModelCard:
    model = onnx.load(str(path))
    return ModelCard.from_metadata({p.key: p.value for p in model.metadata_props})


def direct_run(path: Path, pixels: NDArray[np.uint8]) -> tuple[ModelCard, dict[str, Any]]:
    """Every site tensor and the probabilities, computed here without the service."""
    card = read_card(path)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    by_name = {vi.name: vi for vi in inferred.graph.value_info}
    for site in card.activation_sites:
        inferred.graph.output.append(by_name[site.tensor])
    session = ort.InferenceSession(inferred.SerializeToString(), providers=["CPUExecutionProvider"])
    crop = pixels[2:34, 2:34].astype(np.float64) / 255.0
    normalised = (crop - np.array(card.mean)) / np.array(card.std)
    batch = normalised.transpose(2, 0, 1)[None].astype(np.float32)
    names = ["probabilities"] + [s.tensor for s in card.activation_sites]
    outputs = dict(zip(names, session.run(names, {"input": batch}), strict=True))
    return card, outputs


def expected_stats(values: NDArray[np.float32], bounds: tuple[float, float] | None) -> dict:
    v = values[0].astype(np.float64)
    saturated = None
    if bounds is not None:
        low, high = bounds
        margin = 0.01 * (high - low)
        saturated = float(((v <= low + margin) | (v >= high - margin)).sum() / v.size)
    channels = v.reshape(v.shape[0], -1)
    return {
        "shape": list(v.shape),
        "mean": float(v.sum() / v.size),
        "std": float(np.sqrt(((v - v.mean()) ** 2).sum() / v.size)),
        "min": float(v.min()),
        "max": float(v.max()),
        "fraction_nonpositive": float((v <= 0).sum() / v.size),
        "fraction_channels_nonpositive": float((channels <= 0).all(axis=1).sum() / v.shape[0]),
        "fraction_saturated": saturated,
    }


def inspect(client: TestClient, name: str, data: bytes, query: str = "") -> dict[str, Any]:
    response = client.post(
        f"/v1/models/{name}/activations{query}",
        content=data,
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post_noise(client: TestClient, path: str) -> Any:
    """POST a noise PNG to ``path`` (the response, whatever its status)."""
    return client.post(
        path, content=png_bytes(noise_pixels()), headers={"content-type": "image/png"}
    )


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("image", ["noise", "checkerboard"])
def test_site_statistics_match_direct_onnxruntime(
    client: TestClient, model_repo: Path, name: str, image: str
) -> None:
    pixels = noise_pixels() if image == "noise" else checkerboard_pixels()
    version = SERVED_VERSION.get(name, 1)
    card, outputs = direct_run(model_path(model_repo, name, version), pixels)
    body = inspect(client, name, png_bytes(pixels), "?top_k=3")
    bounds = BOUNDS.get(name)
    assert body["model"] == name and body["version"] == version
    assert body["activation"] == card.activation
    assert body["activation_params"] == card.activation_params
    assert body["saturation_bounds"] == (list(bounds) if bounds else None)
    assert [s["name"] for s in body["sites"]] == [s.name for s in card.activation_sites]
    assert len(body["sites"]) == 7
    for got, site in zip(body["sites"], card.activation_sites, strict=True):
        want = expected_stats(outputs[site.tensor], bounds)
        assert got["tensor"] == site.tensor
        assert got["shape"] == want["shape"]
        for key in ("mean", "std", "min", "max"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (site.name, key)
        size = int(np.prod(want["shape"]))
        for key in ("fraction_nonpositive", "fraction_saturated"):
            if want[key] is None:
                assert got[key] is None
            else:
                assert got[key] == pytest.approx(want[key], abs=1.5 / size), (site.name, key)
        assert got["fraction_channels_nonpositive"] == want["fraction_channels_nonpositive"]
    probabilities = outputs["probabilities"][0]
    top = np.argsort(-probabilities, kind="stable")[:3]
    assert [e["index"] for e in body["classification"]["top_k"]] == top.tolist()
    assert [e["label"] for e in body["classification"]["top_k"]] == [card.labels[i] for i in top]
    got_p = [e["probability"] for e in body["classification"]["top_k"]]
    assert got_p == pytest.approx(probabilities[top].tolist(), rel=1e-5, abs=1e-7)


def test_sites_are_in_graph_order(model_repo: Path) -> None:
    path = model_path(model_repo, "tiny-relu")
    card = read_card(path)
    producer = {
        out: index for index, node in enumerate(onnx.load(str(path)).graph.node)
        for out in node.output
    }  # fmt: skip
    positions = [producer[s.tensor] for s in card.activation_sites]
    assert positions == sorted(positions)
    assert [s.name for s in card.activation_sites][:3] == ["act1", "layer1.0.act1", "layer1.0.act2"]


def test_relu_shows_dead_units(client: TestClient) -> None:
    body = inspect(client, "tiny-relu", png_bytes(noise_pixels(3)))
    for site in body["sites"]:
        assert site["fraction_nonpositive"] > 0.05, site["name"]
        assert site["min"] == 0.0
        assert site["fraction_saturated"] is None
    assert body["saturation_bounds"] is None


def test_sigmoid_saturation_is_meaningful(client: TestClient) -> None:
    """A high-contrast image drives the first sigmoid into saturation; every value in (0, 1)."""
    body = inspect(client, "tiny-sigmoid", png_bytes(checkerboard_pixels()))
    first = body["sites"][0]
    assert first["fraction_saturated"] > 0.01
    for site in body["sites"]:
        assert 0.0 <= site["fraction_saturated"] <= 1.0
        assert 0.0 < site["min"] <= site["max"] < 1.0
        assert site["fraction_nonpositive"] == 0.0  # a sigmoid never outputs ≤ 0 here
    tanh = inspect(client, "tiny-tanh", png_bytes(checkerboard_pixels()))
    assert tanh["sites"][0]["fraction_saturated"] > 0.05
    assert -1.0 <= tanh["sites"][0]["min"] < 0.0 < tanh["sites"][0]["max"] <= 1.0


def test_identity_and_maxout_have_no_saturation(client: TestClient) -> None:
    for name in ("tiny-identity", "tiny-maxout"):
        body = inspect(client, name, png_bytes(noise_pixels()))
        assert body["saturation_bounds"] is None
        assert all(site["fraction_saturated"] is None for site in body["sites"])
        assert body["sites"][0]["min"] < 0.0


def test_inspection_agrees_with_classify(client: TestClient) -> None:
    data = png_bytes(noise_pixels(5))
    inspected = inspect(client, "tiny-relu", data, "?include_probabilities=true")
    classified = client.post(
        "/v1/models/tiny-relu/classify?include_probabilities=true",
        content=data,
        headers={"content-type": "image/png"},
    ).json()
    assert inspected["version"] == classified["version"] == 2
    assert inspected["classification"]["top_k"] == classified["predictions"][0]["top_k"]
    assert inspected["classification"]["probabilities"] == pytest.approx(
        classified["predictions"][0]["probabilities"], rel=1e-6, abs=1e-8
    )
    assert sum(inspected["classification"]["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_every_input_form_gives_the_same_numbers(client: TestClient) -> None:
    data = png_bytes(noise_pixels(7))
    raw = inspect(client, "tiny-tanh", data)
    multipart = client.post(
        "/v1/models/tiny-tanh/activations", files={"file": ("x.png", data, "image/png")}
    )
    encoded = base64.b64encode(data).decode()
    as_json = client.post("/v1/models/tiny-tanh/activations", json={"images": [encoded]})
    data_url = client.post(
        "/v1/models/tiny-tanh/activations",
        json={"images": [f"data:image/png;base64,{encoded}"], "top_k": 2},
    )
    for response in (multipart, as_json, data_url):
        assert response.status_code == 200, response.text
        assert response.json()["sites"] == raw["sites"]
    assert len(data_url.json()["classification"]["top_k"]) == 2
    assert len(raw["classification"]["top_k"]) == 5


def test_jpeg_input_is_inspected(client: TestClient) -> None:
    body = inspect(client, "tiny-relu", jpeg_bytes(noise_pixels(2)))
    assert len(body["sites"]) == 7


def test_version_can_be_chosen(client: TestClient, model_repo: Path) -> None:
    data = png_bytes(noise_pixels())
    latest = inspect(client, "tiny-relu", data)
    first = inspect(client, "tiny-relu", data, "?version=1")
    assert (latest["version"], first["version"]) == (2, 1)
    assert latest["sites"][0]["mean"] != first["sites"][0]["mean"]
    _, outputs = direct_run(model_path(model_repo, "tiny-relu", 1), noise_pixels())
    want = expected_stats(outputs["site:act1"], None)
    assert first["sites"][0]["mean"] == pytest.approx(want["mean"], rel=1e-5)


def test_inspection_session_is_built_once_per_model(client: TestClient) -> None:
    data = png_bytes(noise_pixels())
    inspect(client, "tiny-identity", data)
    cache = client.app.state.inspection_cache  # type: ignore[attr-defined]
    session = cache.get(client.app.state.registry.get("tiny-identity"))  # type: ignore[attr-defined]
    inspect(client, "tiny-identity", data)
    assert cache.get(client.app.state.registry.get("tiny-identity")) is session  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- rejections


def _error(response: Any) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    return error


def test_unknown_model_is_404(client: TestClient) -> None:
    response = post_noise(client, "/v1/models/no-such-model/activations")
    assert response.status_code == 404
    error = _error(response)
    assert error["code"] == "model_not_found"
    assert error["message"].startswith("no model named 'no-such-model'; loaded models: ")
    assert "tiny-relu" in error["message"]


def test_unknown_version_is_404(client: TestClient) -> None:
    response = post_noise(client, "/v1/models/tiny-relu/activations?version=9")
    assert response.status_code == 404
    assert _error(response)["code"] == "version_not_found"


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"", "image/png", 400, "invalid_image"),
        (png_bytes(noise_pixels())[:300], "image/png", 400, "invalid_image"),
        (jpeg_bytes(noise_pixels())[:400], "image/jpeg", 400, "invalid_image"),
        (b"GIF89a" + b"\x00" * 4, "image/gif", 400, "invalid_image"),
        (b"%PDF-1.7 not an image", "image/png", 415, "unsupported_image_format"),
        (png_bytes(noise_pixels()), "text/plain", 415, "unsupported_content_type"),
    ],
    ids=["empty", "truncated-png", "truncated-jpeg", "bad-gif-header", "pdf", "text-plain"],
)
def test_bad_images_are_4xx(
    client: TestClient, data: bytes, content_type: str, status: int, code: str
) -> None:
    response = client.post(
        "/v1/models/tiny-relu/activations", content=data, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert _error(response)["code"] == code
    assert "Traceback" not in response.text
    assert inspect(client, "tiny-relu", png_bytes(noise_pixels()))["model"] == "tiny-relu"


def test_bad_base64_is_400(client: TestClient) -> None:
    response = client.post("/v1/models/tiny-relu/activations", json={"images": ["@@not base64@@"]})
    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_base64"


def test_more_than_one_image_is_422(client: TestClient) -> None:
    data = png_bytes(noise_pixels())
    encoded = base64.b64encode(data).decode()
    as_json = client.post("/v1/models/tiny-relu/activations", json={"images": [encoded, encoded]})
    assert as_json.status_code == 422
    assert as_json.json() == {
        "error": {"code": "too_many_images", "message": "2 images in one request; the limit is 1"}
    }
    multipart = client.post(
        "/v1/models/tiny-relu/activations",
        files=[("file", ("a.png", data, "image/png")), ("file", ("b.png", data, "image/png"))],
    )
    assert multipart.status_code == 422
    assert _error(multipart)["code"] == "too_many_images"


def test_bad_options_are_422(client: TestClient) -> None:
    data = png_bytes(noise_pixels())
    response = client.post(
        "/v1/models/tiny-relu/activations?top_k=0",
        content=data,
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 422
    assert _error(response)["code"] == "invalid_request"


def _republish_with_card(source: Path, target_dir: Path, **changes: Any) -> None:
    model = onnx.load(str(source))
    card = ModelCard.from_metadata({p.key: p.value for p in model.metadata_props})
    card = card.model_copy(update=changes)
    del model.metadata_props[:]
    for key, value in card.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    target_dir.mkdir(parents=True)
    data = model.SerializeToString()
    (target_dir / MODEL_FILENAME).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (target_dir / (MODEL_FILENAME + ".sha256")).write_text(f"{digest}  {MODEL_FILENAME}\n")


def test_model_without_sites_is_422_not_inspectable(model_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    _republish_with_card(
        model_path(model_repo, "tiny-relu"), repo / "bare" / "1", name="bare", activation_sites=[]
    )
    with running_app(make_settings(repo, intra_op_threads=1)) as client:
        assert client.get("/health/ready").status_code == 200
        response = post_noise(client, "/v1/models/bare/activations")
        assert response.status_code == 422
        assert response.json() == {
            "error": {
                "code": "model_not_inspectable",
                "message": "model 'bare' version 1 lists no activation sites in its card; "
                "re-export it with a current exporter to inspect it",
            }
        }
        classify = post_noise(client, "/v1/models/bare/classify")
        assert classify.status_code == 200


def test_card_sites_missing_from_the_graph_are_422_naming_them(
    model_repo: Path, tmp_path: Path
) -> None:
    source = model_path(model_repo, "tiny-relu")
    card = ModelCard.from_metadata({p.key: p.value for p in onnx.load(str(source)).metadata_props})
    ghost = card.activation_sites[0].model_copy(update={"name": "ghost", "tensor": "no-such"})
    repo = tmp_path / "models"
    _republish_with_card(
        source,
        repo / "ghostly" / "1",
        name="ghostly",
        activation_sites=[*card.activation_sites, ghost],
    )
    with running_app(make_settings(repo, intra_op_threads=1)) as client:
        assert client.get("/health/ready").status_code == 200
        for _ in range(2):  # a failed build is not cached as a success, nor does it stick
            response = post_noise(client, "/v1/models/ghostly/activations")
            assert response.status_code == 422
            assert response.json() == {
                "error": {
                    "code": "model_not_inspectable",
                    "message": "model 'ghostly' version 1: the card's activation sites ghost "
                    "are not in its graph",
                }
            }
        assert len(client.app.state.inspection_cache) == 0  # type: ignore[attr-defined]


def test_openapi_documents_inspection_and_compare(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/v1/models/{name}/activations", "/v1/compare"):
        operation = schema["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        assert set(content) == {"multipart/form-data", "image/*", "application/json"}
        assert content["application/json"]["example"]["images"][0].startswith("data:image/png")
        assert {"400", "404", "413", "415", "422", "503", "504"} <= set(operation["responses"])
    components = schema["components"]["schemas"]
    assert components["InspectionResponse"]["examples"][0]["sites"][0]["name"] == "act1"
    assert components["CompareResponse"]["examples"][0]["results"][0]["model"] == (
        "resnet20-relu-digits"
    )
