"""The app as a whole: health, models, metrics, API key, CORS, OpenAPI docs, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import app_held_at_startup, make_settings, running_app
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_images import gradient_rgb, png

from service.modelcard import ModelCard
from service.repository import sha256_of

GOOD_PNG = png(gradient_rgb(40, 40))
RAW_PNG = {"content-type": "image/png"}
TINY = ["tiny-identity", "tiny-maxout", "tiny-relu", "tiny-sigmoid", "tiny-tanh"]


def test_ready_is_503_until_startup_models_are_warm(model_repo: Path) -> None:
    app, gate = app_held_at_startup(make_settings(model_repo))
    registry = app.state.registry
    with TestClient(app) as client:
        assert client.get("/health/live").json() == {"status": "live"}
        loading = client.get("/health/ready")
        assert loading.status_code == 503
        assert loading.headers["retry-after"] == "1"
        assert loading.json() == {"status": "loading", "models": [], "skipped": 0}
        early = client.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        gate.set()
        assert registry.startup_done.wait(60)
        ready = client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (
            200,
            {"status": "ready", "models": TINY, "skipped": 0},
        )


def test_models_list(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["default_model"] == "tiny-identity"
    assert [m["name"] for m in body["models"]] == TINY
    relu = next(m for m in body["models"] if m["name"] == "tiny-relu")
    assert relu == {
        "name": "tiny-relu",
        "version": 2,
        "versions": [1, 2],
        "architecture": "resnet8",
        "activation": "relu",
        "num_classes": 10,
        "dataset": relu["dataset"],
        "val_accuracy": None,
    }


def test_model_detail_is_the_card_from_the_onnx_file(client: TestClient, model_repo: Path) -> None:
    import onnx

    path = model_repo / "tiny-relu" / "2" / "model.onnx"
    metadata = {
        p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
    }
    card = ModelCard.from_metadata(metadata)
    body = client.get("/v1/models/tiny-relu").json()
    assert body["name"] == "tiny-relu" and body["version"] == 2 and body["versions"] == [1, 2]
    assert body["sha256"] == sha256_of(path)
    assert body["labels"] == card.labels
    assert ModelCard.model_validate(body["card"]) == card
    assert body["input"] == {
        "name": "input",
        "shape": ["batch", 3, *card.input_size],
        "dtype": "float32",
        "resize_policy": card.resize_policy,
        "resize_size": card.resize_size,
        "mean": list(card.mean),
        "std": list(card.std),
    }
    assert client.get("/v1/models/tiny-relu?version=1").json()["version"] == 1


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_requests_inferences_timings_and_rejections(model_repo: Path) -> None:
    with running_app(make_settings(model_repo)) as client:
        for _ in range(3):
            client.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
        client.post(
            "/v1/models/tiny-tanh/classify",
            files=[("file", ("a.png", GOOD_PNG, "image/png"))] * 2,
        )
        client.post("/v1/models/nope/classify", content=GOOD_PNG, headers=RAW_PNG)
        client.post("/v1/models/tiny-relu/classify", content=b"", headers=RAW_PNG)
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        s = _samples(response.text)
        route = "/v1/models/{name}/classify"

        def requests(status: str) -> float:
            key = (
                "actlab_requests_total",
                (("method", "POST"), ("route", route), ("status", status)),
            )
            return s.get(key, 0.0)

        assert (requests("200"), requests("404"), requests("400")) == (4.0, 1.0, 1.0)
        assert s[("actlab_inferences_total", (("model", "tiny-relu"),))] == 3.0
        assert s[("actlab_inferences_total", (("model", "tiny-tanh"),))] == 1.0
        assert s[("actlab_images_total", (("model", "tiny-tanh"),))] == 2.0
        assert s[("actlab_decode_seconds_count", ())] == 5.0
        assert s[("actlab_preprocess_seconds_count", ())] == 5.0
        assert s[("actlab_inference_seconds_count", (("model", "tiny-relu"),))] == 3.0
        assert s[("actlab_request_seconds_count", (("route", route),))] == 6.0
        assert s[("actlab_rejections_total", (("reason", "model_not_found"),))] == 1.0
        assert s[("actlab_rejections_total", (("reason", "invalid_image"),))] == 1.0
        assert s[("actlab_requests_in_flight", ())] == 1.0  # this /metrics request
        assert s[("actlab_models_loaded", ())] == 5.0
        # batching is on by default; these requests came one at a time: one run each
        relu = (("model", "tiny-relu"), ("version", "2"))
        tanh = (("model", "tiny-tanh"), ("version", "1"))
        assert s[("actlab_batched_runs_total", relu)] == 3.0
        assert s[("actlab_batched_images_total", relu)] == 3.0
        assert s[("actlab_batched_runs_total", tanh)] == 1.0
        assert s[("actlab_batched_images_total", tanh)] == 2.0
        assert s[("actlab_body_bytes_in_flight", ())] == 0.0  # every body was released
        # the startup routing pass (service.app._build_routing) is not a client request
        counted = {dict(labels)["route"] for name, labels in s if name == "actlab_requests_total"}
        assert counted == {route}
        assert ("actlab_rejections_total", (("reason", "not_found"),)) not in s


def test_the_body_bytes_gauge_shows_bodies_being_read(model_repo: Path) -> None:
    with running_app(make_settings(model_repo)) as client:
        budget = client.app.state.body_budget  # type: ignore[attr-defined]
        budget.reserve(12345)  # as a request part-way through its upload would
        s = _samples(client.get("/metrics").text)
        assert s[("actlab_body_bytes_in_flight", ())] == 12345.0
        budget.release(12345)


def test_metrics_registry_is_per_app(model_repo: Path) -> None:
    with running_app(make_settings(model_repo)) as first:
        first.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
        with running_app(make_settings(model_repo)) as second:
            s = _samples(second.get("/metrics").text)
            assert ("actlab_inferences_total", (("model", "tiny-relu"),)) not in s


def test_metrics_label_middleware_rejections_with_their_route(model_repo: Path) -> None:
    """A 413 on Content-Length and a 401 never reach the router; they still count per route."""
    settings = make_settings(model_repo, max_body_bytes=1000, api_key="k3y")
    key = {"X-API-Key": "k3y"}
    with running_app(settings) as client:
        too_big = {**RAW_PNG, **key, "content-length": "5000"}
        for path in ("/v1/models/tiny-relu/classify", "/v2/models/tiny-relu/infer", "/v9/nope"):
            assert client.post(path, content=b"x" * 5000, headers=too_big).status_code == 413
        assert client.get("/v2/models/stats").status_code == 401
        assert client.get("/v2/models/tiny-relu/versions/1/ready").status_code == 401
        s = _samples(client.get("/metrics", headers=key).text)

    def requests(method: str, route: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return s.get(("actlab_requests_total", labels), 0.0)

    assert requests("POST", "/v1/models/{name}/classify", "413") == 1.0
    assert requests("POST", "/v2/models/{name}/infer", "413") == 1.0
    assert requests("POST", "unmatched", "413") == 1.0
    assert requests("GET", "/v2/models/stats", "401") == 1.0  # not "/v2/models/{name}"
    assert requests("GET", "/v2/models/{name}/versions/{version}/ready", "401") == 1.0


@pytest.fixture(scope="module")
def keyed_client(model_repo: Path) -> TestClient:
    settings = make_settings(model_repo, api_key="k3y", cors_origins="https://app.example")
    with running_app(settings) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/tiny-relu/classify"),
        ("POST", "/v1/classify"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/tiny-relu"),
        ("GET", "/metrics"),
        ("GET", "/v1/activations"),
        ("GET", "/v1/nothing-here"),
    ],
)
def test_api_key_is_required_on_every_non_health_route(
    keyed_client: TestClient, method: str, path: str
) -> None:
    missing = keyed_client.request(method, path)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = keyed_client.request(method, path, headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["error"]["message"]) == (
        401,
        "the API key is not valid",
    )
    assert "k3y" not in wrong.text


def test_api_key_accepted_as_bearer_or_header(keyed_client: TestClient) -> None:
    for headers in ({"Authorization": "Bearer k3y"}, {"X-API-Key": "k3y"}):
        response = keyed_client.post(
            "/v1/models/tiny-relu/classify", content=GOOD_PNG, headers={**RAW_PNG, **headers}
        )
        assert response.status_code == 200
    assert keyed_client.get("/health/live").status_code == 200
    assert keyed_client.get("/health/ready").status_code == 200


def test_openapi_declares_the_api_key(keyed_client: TestClient) -> None:
    spec = keyed_client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    classify = spec["paths"]["/v1/classify"]["post"]
    assert classify["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in spec["paths"]["/health/live"]["get"]


def test_cors_from_settings(keyed_client: TestClient) -> None:
    preflight = keyed_client.options(
        "/v1/classify",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = keyed_client.options(
        "/v1/classify",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
    simple = keyed_client.get(
        "/v1/models", headers={"Origin": "https://app.example", "X-API-Key": "k3y"}
    )
    assert simple.headers["access-control-allow-origin"] == "https://app.example"


def test_openapi_docs_have_examples_for_every_endpoint(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    missing = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not _has_example(operation, spec["components"]["schemas"], set()):
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_openapi_error_responses_have_the_shape_the_server_sends(client: TestClient) -> None:
    """No FastAPI HTTPValidationError ({"detail": ...}): this server never sends it."""
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(spec)
    shapes = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45" and "/health/" not in path:
                    schema = response["content"]["application/json"]["schema"]["$ref"]
                    shapes[f"{method} {path} {status}"] = schema.rsplit("/", 1)[-1]
    assert {k for k, v in shapes.items() if v != "ErrorResponse" and " /v1/" in k} == set()
    assert {k for k, v in shapes.items() if v != "V2ErrorResponse" and " /v2/" in k} == set()
    assert shapes["get /v1/activations/{name} 422"] == "ErrorResponse"
    assert shapes["get /v2/models/{name} 400"] == "V2ErrorResponse"
    assert (
        client.get("/v1/models/tiny-relu?x=1").json()["error"]["code"] == "unknown_query_parameter"
    )
    assert set(client.get("/v2/models/tiny-relu?x=1").json()) == {"error"}


def _has_example(node: object, schemas: dict[str, object], seen: set[str]) -> bool:
    """An explicit example in the operation, or in a schema it references (as Swagger shows)."""
    if isinstance(node, dict):
        if "example" in node or "examples" in node:
            return True
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            if _has_example(schemas[ref.rsplit("/", 1)[-1]], schemas, seen):
                return True
        return any(_has_example(value, schemas, seen) for value in node.values())
    if isinstance(node, list):
        return any(_has_example(value, schemas, seen) for value in node)
    return False


DECODER_MODULES = [
    "PIL.BmpImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.JpegImagePlugin",
    "PIL.PngImagePlugin",
    "PIL.WebPImagePlugin",
    "PIL._webp",
]


@pytest.fixture(scope="module")
def fresh_process_at_ready(model_repo: Path) -> dict[str, object]:
    """What a fresh interpreter has imported once the service is ready (no request served)."""
    code = (
        "import json, sys\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        "from fastapi.testclient import TestClient\n"
        f"app = create_app(Settings(models_dir={str(model_repo)!r}))\n"
        "with TestClient(app) as client:\n"
        "    app.state.registry.startup_done.wait(60)\n"
        "    assert client.get('/health/ready').status_code == 200\n"
        f"    decoders = [name for name in {DECODER_MODULES!r} if name in sys.modules]\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'decoders': decoders}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_the_service_never_imports_torch(fresh_process_at_ready: dict[str, object]) -> None:
    assert fresh_process_at_ready["torch"] is False


def test_every_image_decoder_is_loaded_before_ready(
    fresh_process_at_ready: dict[str, object],
) -> None:
    # Pillow loads plugins and codec libraries on first use: ≈30 ms on a first WebP request.
    assert fresh_process_at_ready["decoders"] == DECODER_MODULES
