"""/v2 server and model endpoints: health, metadata, versions, readiness, Triton config and
statistics (real counts and cumulative times), not-ready and unknown-model statuses."""

from __future__ import annotations

import time
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import app_held_at_startup, make_settings, running_app
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_images import gradient_rgb, png

TINY = ["tiny-identity", "tiny-maxout", "tiny-relu", "tiny-sigmoid", "tiny-tanh"]
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics"]
STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def tensor_request(batch: int, seed: int = 0) -> dict[str, Any]:
    data = np.random.default_rng(seed).normal(size=(batch, 3, 32, 32)).astype(np.float32)
    return {
        "inputs": [
            {
                "name": "input",
                "shape": [batch, 3, 32, 32],
                "datatype": "FP32",
                "data": data.tolist(),
            }
        ]
    }


def image_request(count: int) -> dict[str, Any]:
    import base64

    images = [base64.b64encode(png(gradient_rgb(40, 40, seed=s))).decode() for s in range(count)]
    return {"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES", "data": images}]}


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json() == {
        "name": "actlab",
        "version": package_version("actlab"),
        "extensions": EXTENSIONS,
    }
    live = client.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def expected_metadata(name: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions,
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


def test_model_metadata_for_every_model_and_version(client: TestClient) -> None:
    for name in TINY:
        versions = ["1", "2"] if name == "tiny-relu" else ["1"]
        response = client.get(f"/v2/models/{name}")
        assert (response.status_code, response.json()) == (200, expected_metadata(name, versions))
    for version in ("1", "2"):
        response = client.get(f"/v2/models/tiny-relu/versions/{version}")
        assert response.status_code == 200
        assert response.json() == expected_metadata("tiny-relu", ["1", "2"])


def test_model_and_version_readiness(client: TestClient) -> None:
    for path in (
        "/v2/models/tiny-relu/ready",
        "/v2/models/tiny-relu/versions/1/ready",
        "/v2/models/tiny-relu/versions/2/ready",
    ):
        response = client.get(path)
        assert (response.status_code, response.json()) == (
            200,
            {"name": "tiny-relu", "ready": True},
        ), path


def test_unknown_models_and_versions_are_404(client: TestClient) -> None:
    loaded = ", ".join(TINY)
    unknown_model = {"error": f"no model named 'nope'; loaded models: {loaded}"}
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/nope/config",
                 "/v2/models/nope/stats", "/v2/models/nope/versions/1",
                 "/v2/models/nope/versions/1/stats"):  # fmt: skip
        response = client.get(path)
        assert (response.status_code, response.json()) == (404, unknown_model), path
    response = client.post("/v2/models/nope/infer", json=tensor_request(1))
    assert (response.status_code, response.json()) == (404, unknown_model)
    missing = {"error": "version 7 of model 'tiny-relu' is not available; available versions: 1, 2"}
    for method, path in (("GET", "/v2/models/tiny-relu/versions/7"),
                         ("GET", "/v2/models/tiny-relu/versions/7/ready"),
                         ("GET", "/v2/models/tiny-relu/versions/7/config"),
                         ("POST", "/v2/models/tiny-relu/versions/7/infer")):  # fmt: skip
        response = client.request(method, path, json=tensor_request(1))
        assert (response.status_code, response.json()) == (404, missing), path
    response = client.get("/v2/models/tiny-relu/versions/7/stats")
    assert response.status_code == 404
    assert response.json() == {
        "error": "model 'tiny-relu' has no version 7; available versions: 1, 2"
    }
    # (as written in the path, as the server reads it): only "1" and "2" name the versions
    for written, read in (("abc", "abc"), ("0", "0"), ("-1", "-1"), ("01", "01"),
                          ("1.0", "1.0"), ("%201", " 1"), ("1%20", "1 "), ("%2B1", "+1"),
                          ("1%0A", "1\n"), ("%EF%BC%91", "\uff11"), ("1_0", "1_0"),
                          ("9" * 5000, "9" * 5000)):  # fmt: skip
        shown = repr(read) if len(read) <= 64 else repr(read[:64]) + "…"
        error = {
            "error": f"model 'tiny-relu' has no version {shown}: versions are whole numbers "
            ">= 1 in ASCII digits, with no sign, spaces or leading zeros; available versions: 1, 2"
        }
        for method, suffix in (("GET", ""), ("GET", "/ready"), ("GET", "/config"),
                               ("GET", "/stats"), ("POST", "/infer")):  # fmt: skip
            path = f"/v2/models/tiny-relu/versions/{written}{suffix}"
            response = client.request(method, path, json=tensor_request(1))
            assert (response.status_code, response.json()) == (404, error), path


def test_unknown_routes_and_methods_render_the_v2_error_shape(client: TestClient) -> None:
    response = client.get("/v2/models/tiny-relu/infer")
    assert (response.status_code, response.json()) == (
        405,
        {"error": "method not allowed on this route; allowed: POST"},
    )
    response = client.get("/v2/nothing/here")
    assert (response.status_code, response.json()) == (404, {"error": "no such route"})


@pytest.mark.parametrize("path", ["/v2/", "/v2/health/live/", "/v2/models/tiny-relu/"])
def test_a_trailing_slash_is_a_404_that_says_so_not_a_redirect(
    client: TestClient, path: str
) -> None:
    response = client.get(path, follow_redirects=False)
    assert (response.status_code, response.json()) == (
        404,
        {"error": "no such route; remove the trailing slash (routes never end in one)"},
    )
    assert "location" not in response.headers
    v1 = client.get("/v1/models/", follow_redirects=False)
    assert (v1.status_code, v1.json()["error"]["code"]) == (404, "not_found")
    assert v1.json()["error"]["message"].endswith("(routes never end in one)")
    assert client.get("/v2/nothing/", follow_redirects=False).json() == {"error": "no such route"}


def test_triton_model_config(client: TestClient) -> None:
    expected = {
        "name": "tiny-relu",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [2]}},
        "max_batch_size": 32,
        "input": [
            {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
             "dims": [3, 32, 32], "is_shape_tensor": False, "optional": False},
            {"name": "image", "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [1],
             "reshape": {"shape": []}, "is_shape_tensor": False, "optional": True},
        ],
        "output": [
            {"name": "logits", "data_type": "TYPE_FP32", "dims": [10], "label_filename": "",
             "is_shape_tensor": False},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10],
             "label_filename": "", "is_shape_tensor": False},
        ],
        "instance_group": [{"name": "tiny-relu", "kind": "KIND_CPU", "count": 1}],
        "default_model_filename": "model.onnx",
        "model_transaction_policy": {"decoupled": False},
        "parameters": {},
        "dynamic_batching": {"max_queue_delay_microseconds": 0},  # on by default: 8 / 0 ms
    }  # fmt: skip
    response = client.get("/v2/models/tiny-relu/config")
    assert (response.status_code, response.json()) == (200, expected)
    one = client.get("/v2/models/tiny-relu/versions/1/config").json()
    assert one == expected | {"version_policy": {"specific": {"versions": [1]}}}


def test_config_max_batch_size_is_the_enforced_limit(model_repo: Path) -> None:
    with running_app(make_settings(model_repo, max_images_per_request=2)) as client:
        assert client.get("/v2/models/tiny-tanh/config").json()["max_batch_size"] == 2
        assert client.post("/v2/models/tiny-tanh/infer", json=tensor_request(2)).status_code == 200
        response = client.post("/v2/models/tiny-tanh/infer", json=tensor_request(3))
        assert (response.status_code, response.json()) == (
            400,
            {"error": "input 'input': batch size 3 is not allowed; send 1 to 2"},
        )


def test_config_declares_dynamic_batching_when_it_is_on(model_repo: Path) -> None:
    settings = make_settings(model_repo, batch_max_size=4, batch_max_wait_ms=2.5)
    with running_app(settings) as client:
        config = client.get("/v2/models/tiny-relu/config").json()
        assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2500}
        assert config["max_batch_size"] == 32
        assert client.post("/v2/models/tiny-relu/infer", json=tensor_request(2)).status_code == 200
    with running_app(make_settings(model_repo, batch_max_size=1)) as client:
        assert "dynamic_batching" not in client.get("/v2/models/tiny-relu/config").json()


def zero_stats(name: str, version: str) -> dict[str, Any]:
    zero = {"count": 0, "ns": 0}
    return {
        "name": name,
        "version": version,
        "last_inference": 0,
        "inference_count": 0,
        "execution_count": 0,
        "inference_stats": {stage: zero for stage in (*STAGES, "cache_hit", "cache_miss")},
        "batch_stats": [],
    }


def inferences_metric(client: TestClient, model: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "actlab_inferences_total" and sample.labels == {"model": model}:
                return sample.value
    return 0.0


def test_statistics_count_real_inferences_and_accumulate_time(model_repo: Path) -> None:
    with running_app(make_settings(model_repo)) as client:
        response = client.get("/v2/models/tiny-relu/stats")
        assert response.json() == {"model_stats": [zero_stats("tiny-relu", "2")]}
        started_ms = time.time_ns() // 1_000_000
        assert client.post("/v2/models/tiny-relu/infer", json=tensor_request(2)).status_code == 200
        assert client.post("/v2/models/tiny-relu/infer", json=image_request(3)).status_code == 200
        one = client.post("/v2/models/tiny-relu/versions/1/infer", json=tensor_request(1))
        assert one.status_code == 200
        bad = tensor_request(1)
        bad["inputs"][0]["shape"] = [1, 3, 31, 32]
        assert client.post("/v2/models/tiny-relu/infer", json=bad).status_code == 400
        finished_ms = time.time_ns() // 1_000_000

        stats = client.get("/v2/models/tiny-relu/stats").json()["model_stats"]
        assert [(s["name"], s["version"]) for s in stats] == [
            ("tiny-relu", "1"),
            ("tiny-relu", "2"),
        ]
        v1, v2 = stats
        assert (v2["inference_count"], v2["execution_count"]) == (5, 2)
        assert (v1["inference_count"], v1["execution_count"]) == (1, 1)
        assert started_ms <= v2["last_inference"] <= finished_ms
        inference = v2["inference_stats"]
        assert inference["fail"]["count"] == 1 and inference["fail"]["ns"] > 0
        for stage in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            assert inference[stage]["count"] == 2, stage
        for stage in ("success", "compute_input", "compute_infer", "compute_output"):
            assert inference[stage]["ns"] > 0, stage
        parts = sum(inference[s]["ns"] for s in ("queue", "compute_input", "compute_infer",
                                                 "compute_output"))  # fmt: skip
        assert parts <= inference["success"]["ns"]
        assert [b["batch_size"] for b in v2["batch_stats"]] == [2, 3]
        for batch in v2["batch_stats"]:
            assert all(batch[s]["count"] == 1 for s in ("compute_input", "compute_infer",
                                                        "compute_output"))  # fmt: skip
        assert inferences_metric(client, "tiny-relu") == 3.0

        before = inference["success"]["ns"]
        assert client.post("/v2/models/tiny-relu/infer", json=tensor_request(1)).status_code == 200
        after = client.get("/v2/models/tiny-relu/versions/2/stats").json()["model_stats"]
        assert len(after) == 1 and after[0]["version"] == "2"
        assert after[0]["inference_stats"]["success"]["count"] == 3
        assert after[0]["inference_stats"]["success"]["ns"] > before
        assert after[0]["inference_count"] == 6

        everything = client.get("/v2/models/stats").json()["model_stats"]
        keys = [(s["name"], s["version"]) for s in everything]
        assert keys == [("tiny-identity", "1"), ("tiny-maxout", "1"), ("tiny-relu", "1"),
                        ("tiny-relu", "2"), ("tiny-sigmoid", "1"), ("tiny-tanh", "1")]  # fmt: skip
        assert everything[0] == zero_stats("tiny-identity", "1")


def test_not_ready_while_models_load(model_repo: Path) -> None:
    app, gate = app_held_at_startup(make_settings(model_repo))
    registry = app.state.registry
    loading = {"error": "models are still loading; retry shortly"}
    with TestClient(app) as client:
        try:
            assert client.get("/v2/health/live").json() == {"live": True}
            for method, path in (("GET", "/v2/health/ready"), ("GET", "/v2/models/tiny-relu"),
                                 ("GET", "/v2/models/tiny-relu/ready"),
                                 ("POST", "/v2/models/tiny-relu/infer")):  # fmt: skip
                response = client.request(method, path, json=tensor_request(1))
                assert (response.status_code, response.json()) == (503, loading), path
                assert response.headers["retry-after"] == "1"
        finally:
            gate.set()
        assert registry.startup_done.wait(60)
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/tiny-relu/ready").status_code == 200


def test_no_valid_model_is_503_ready_and_404_models(tmp_path: Path) -> None:
    with running_app(make_settings(tmp_path)) as client:
        response = client.get("/v2/health/ready")
        assert (response.status_code, response.json()) == (
            503,
            {"error": "no valid model is loaded"},
        )
        assert client.get("/v2/health/live").status_code == 200
        response = client.get("/v2/models/tiny-relu/ready")
        assert (response.status_code, response.json()) == (
            404,
            {"error": "no model named 'tiny-relu'; loaded models: none"},
        )
        assert client.get("/v2/models/stats").json() == {"model_stats": []}


def test_api_key_protects_v2_except_health(model_repo: Path) -> None:
    with running_app(make_settings(model_repo, api_key="s3cret")) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        response = client.get("/v2")
        assert response.status_code == 401
        assert response.json() == {
            "error": "an API key is required: send 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>'"
        }
        assert client.get("/v2", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_openapi_documents_every_v2_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    v2 = {path: ops for path, ops in spec["paths"].items() if path.startswith("/v2")}
    assert sorted(v2) == sorted([
        "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/stats",
        "/v2/models/{name}", "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/config", "/v2/models/{name}/versions/{version}/config",
        "/v2/models/{name}/stats", "/v2/models/{name}/versions/{version}/stats",
        "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer",
    ])  # fmt: skip
    infer = v2["/v2/models/{name}/infer"]["post"]
    content = infer["requestBody"]["content"]
    assert set(content) == {"application/json", "application/octet-stream"}
    assert content["application/json"]["example"]["inputs"][0]["name"] == "image"
    assert {"200", "400", "404", "503"} <= set(infer["responses"])
    assert infer["responses"]["404"]["content"]["application/json"]["example"] == {
        "error": "no model named 'x'; loaded models: tiny-relu"
    }
