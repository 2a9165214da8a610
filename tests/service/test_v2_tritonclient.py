"""NVIDIA's tritonclient (HTTP), unchanged, against a real uvicorn on 127.0.0.1: health,
metadata, config, binary tensor inference, BYTES images with class_count, a gzip request body,
errors, statistics."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_images import gradient_rgb, png
from service_reference import run_reference

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("v2_triton_client.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tritonclient_http_works_unchanged(model_repo: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ACTLAB_MODELS_DIR": str(model_repo), "ACTLAB_WARMUP_RUNS": "1"}
    log = (tmp_path / "uvicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)

        batch = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
        np.save(tmp_path / "batch.npy", batch)
        image = png(gradient_rgb(48, 40, seed=3))
        (tmp_path / "image.png").write_bytes(image)
        done = subprocess.run(
            [sys.executable, str(CLIENT), f"127.0.0.1:{port}", "tiny-relu",
             str(tmp_path / "batch.npy"), str(tmp_path / "image.png")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        v1 = httpx.post(
            f"{base}/v1/models/tiny-relu/classify",
            json={"images": [base64.b64encode(image).decode()], "top_k": 3},
            params={"include_probabilities": "true"},
            timeout=30,
        ).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
    assert got["server_metadata"]["name"] == "actlab"
    assert "binary_tensor_data" in got["server_metadata"]["extensions"]
    assert got["model_metadata"]["platform"] == "onnx_onnxv1"
    assert got["model_metadata"]["versions"] == ["1", "2"]
    assert got["model_config"]["max_batch_size"] == 32
    assert got["model_config"]["input"][0]["dims"] == [3, 32, 32]

    response = got["tensor"]["response"]
    assert response["id"] == "tc-1" and response["model_version"] == "2"
    logits, probabilities = run_reference(model_repo / "tiny-relu" / "2" / "model.onnx", batch)
    assert np.abs(np.array(got["tensor"]["logits"]) - logits).max() <= 1e-5
    assert np.abs(np.array(got["tensor"]["probabilities"]) - probabilities).max() <= 1e-6

    expected = np.array(v1["predictions"][0]["probabilities"])
    assert np.abs(np.array(got["image_probabilities"])[0] - expected).max() <= 1e-6
    entries = [entry.split(":") for entry in got["image_top3"]]
    top = v1["predictions"][0]["top_k"]
    assert [(int(i), label) for _, i, label in entries] == [(t["index"], t["label"]) for t in top]

    assert got["unknown_model_error"]["status"] == "404"
    assert got["unknown_model_error"]["message"].startswith("no model named 'no-such-model'")
    (stats,) = got["statistics"]["model_stats"]
    assert (stats["name"], stats["version"]) == ("tiny-relu", "2")
    assert stats["inference_count"] == 4 and stats["execution_count"] == 3
