"""Every error status, its JSON shape, no leaks, and recovery: the next valid request succeeds."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import onnxruntime
import pytest
from conftest import make_settings, running_app
from fastapi.testclient import TestClient
from service_images import animated_gif, encode, gradient_rgb, jpeg, png, png_header_only

GOOD_PNG = png(gradient_rgb(40, 40))
RAW_PNG = {"content-type": "image/png"}
FIVE_FRAMES = animated_gif([(i * 40, 0, 0) for i in range(5)])

# (id, request kwargs for client.request, expected status, expected code)
BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty-body", {"content": b"", "headers": RAW_PNG}, 400, "invalid_image"),
    ("truncated-png", {"content": GOOD_PNG[:70], "headers": RAW_PNG}, 400, "invalid_image"),
    ("truncated-jpeg", {"content": jpeg()[:500], "headers": RAW_PNG}, 400, "invalid_image"),
    ("bad-base64", {"json": {"images": ["not*base64!"]}}, 400, "invalid_base64"),
    ("data-url-not-base64", {"json": {"images": ["data:image/png,abc"]}}, 400, "invalid_base64"),
    ("tiff", {"content": encode(gradient_rgb(), "TIFF"), "headers": RAW_PNG}, 415,
     "unsupported_image_format"),
    ("text-content-type", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_content_type"),
    ("bomb", {"content": png_header_only(100_000, 100_000), "headers": RAW_PNG}, 422,
     "image_too_large"),
    ("frames", {"content": FIVE_FRAMES, "headers": RAW_PNG}, 422, "too_many_frames"),
    ("top-k-zero", {"params": {"top_k": 0}, "content": GOOD_PNG, "headers": RAW_PNG}, 422,
     "invalid_request"),
    ("top-k-text", {"params": {"top_k": "many"}, "content": GOOD_PNG, "headers": RAW_PNG}, 422,
     "invalid_request"),
    ("json-no-images", {"json": {"images": []}}, 422, "invalid_request"),
    ("json-unknown-field", {"json": {"images": ["aa"], "colour": "red"}}, 422, "invalid_request"),
    ("json-broken", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     400, "invalid_json"),
    ("too-many-images", {"json": {"images": [base64.b64encode(GOOD_PNG).decode()] * 4}}, 422,
     "too_many_images"),
    ("multipart-no-file", {"files": [("other", ("a.png", GOOD_PNG, "image/png"))]}, 422,
     "invalid_request"),
    ("multipart-too-many", {"files": [("file", ("a.png", GOOD_PNG, "image/png"))] * 4}, 422,
     "too_many_images"),
    ("multipart-bad-top-k", {"files": [("file", ("a.png", GOOD_PNG, "image/png"))],
                             "data": {"top_k": "-3"}}, 422, "invalid_request"),
    ("body-too-large", {"content": b"\x89PNG" + b"\x00" * 300_000, "headers": RAW_PNG}, 413,
     "payload_too_large"),
]  # fmt: skip


@pytest.fixture(scope="module")
def strict_client(model_repo: Path) -> Any:
    settings = make_settings(
        model_repo, max_frames=4, max_images_per_request=3, max_body_bytes=200_000
    )
    with running_app(settings) as client:
        yield client


def assert_safe_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    text = response.text
    for leak in ("Traceback", 'File "', "/tmp", "site-packages", ".py", onnxruntime.__version__):
        assert leak not in text, f"{leak!r} leaked into {text}"
    return body


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [pytest.param(k, s, c, id=i) for i, k, s, c in BAD_REQUESTS],
)
def test_bad_request_then_a_good_one(
    strict_client: TestClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = strict_client.post("/v1/models/tiny-relu/classify", **kwargs)
    body = assert_safe_error(response, status, code)
    assert body["error"]["message"]
    good = strict_client.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
    assert good.status_code == 200


def test_validation_errors_do_not_echo_the_input(strict_client: TestClient) -> None:
    secret = "SECRET-INPUT-VALUE-1234"
    response = strict_client.post(
        "/v1/models/tiny-relu/classify", params={"top_k": secret}, content=GOOD_PNG,
        headers=RAW_PNG,
    )  # fmt: skip
    assert_safe_error(response, 422, "invalid_request")
    assert secret not in response.text
    response = strict_client.post("/v1/models/tiny-relu/classify", json={"images": [secret + "*"]})
    assert_safe_error(response, 400, "invalid_base64")
    assert secret not in response.text
    response = strict_client.post("/v1/models/tiny-relu/classify", json={"images": 5, "x": secret})
    assert secret not in response.text


def test_unknown_model_route_and_method(strict_client: TestClient) -> None:
    body = assert_safe_error(
        strict_client.post("/v1/models/nope/classify", content=GOOD_PNG, headers=RAW_PNG),
        404,
        "model_not_found",
    )
    assert "nope" in body["error"]["message"] and "tiny-relu" in body["error"]["message"]
    assert_safe_error(strict_client.get("/v1/models/nope"), 404, "model_not_found")
    assert_safe_error(strict_client.get("/v1/nothing-here"), 404, "not_found")
    assert_safe_error(strict_client.get("/v1/models/tiny-relu/classify"), 405, "method_not_allowed")


def test_over_capacity_is_503_with_retry_after(model_repo: Path) -> None:
    with running_app(make_settings(model_repo, max_concurrency=1)) as client:
        limiter = client.app.state.executor.limiter  # type: ignore[attr-defined]
        limiter.acquire()  # another request holds the only slot
        try:
            response = client.post(
                "/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG
            )
            assert_safe_error(response, 503, "over_capacity")
            assert response.headers["retry-after"] == "1"
        finally:
            limiter.release()
        good = client.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
        assert good.status_code == 200
        metrics = client.get("/metrics").text
        assert 'actlab_rejections_total{reason="over_capacity"} 1.0' in metrics


def test_past_the_deadline_is_504(model_repo: Path) -> None:
    with running_app(make_settings(model_repo, inference_timeout_s=1e-6)) as client:
        response = client.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
        body = assert_safe_error(response, 504, "deadline_exceeded")
        assert "deadline" in body["error"]["message"]
        assert client.get("/health/live").status_code == 200


def test_no_valid_model_stays_not_ready_but_live(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    with running_app(make_settings(tmp_path)) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == "30"
        assert ready.json() == {"status": "no_valid_model", "models": [], "skipped": 1}
        response = client.post("/v1/classify", content=GOOD_PNG, headers=RAW_PNG)
        body = assert_safe_error(response, 503, "not_ready")
        assert response.headers["retry-after"] == "30"
        assert json.dumps(body).count("/") == 0  # no path of the broken file


def test_a_skipped_model_is_counted_but_the_valid_ones_keep_the_server_ready(
    model_repo_copy: Path,
) -> None:
    broken = model_repo_copy / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not onnx")
    with running_app(make_settings(model_repo_copy)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["skipped"] == 1 and "broken" not in ready.json()["models"]
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/broken/ready").status_code == 404


def test_internal_errors_are_500_without_details(model_repo: Path) -> None:
    with running_app(make_settings(model_repo)) as client:
        registry = client.app.state.registry  # type: ignore[attr-defined]

        def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internals at /srv/app.py")

        registry.get = explode
        response = client.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "code": "internal_error",
                "message": "internal error; the request was not completed",
            }
        }
