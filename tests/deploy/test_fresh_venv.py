"""The api image's dependency set is enough: a fresh venv with `pip install .` (no extras) serves
classify from models/, and torch is nowhere in it.

The project is installed from a copy of exactly what the Dockerfile's api build stage copies,
so this is the slim image's install, minus Docker.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from deploy_helpers import (
    REPO,
    free_port,
    published_models,
    read_dockerfile,
    start_replica,
    stop_process,
    wait_for_http,
)
from PIL import Image

from service.modelcard import LOGITS_NAME, ModelCard

pytestmark = [pytest.mark.network, pytest.mark.slow]

MODELS_DIR = REPO / "models"
PIP_TIMEOUT_S = 540


def api_build_sources() -> list[str]:
    """What the api build stage copies into the image before `pip install .`."""
    stage = read_dockerfile().stage("api-build")
    return [p for c in stage.all("COPY") if "from" not in c.options() for p in c.positional()[:-1]]


def card_of(model_path: Path) -> ModelCard:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)


def reference_probabilities(model_path: Path, card: ModelCard, image: Image.Image) -> np.ndarray:
    """Plain PIL resize/crop, float64 normalise, raw onnxruntime, float64 softmax."""
    height, width = card.input_size
    if card.resize_policy == "stretch":
        prepared = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float64)
    else:
        w, h = image.size
        short = card.resize_size
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        resized = np.asarray(image.resize(size, Image.Resampling.BILINEAR), np.float64)
        top, left = round((size[1] - height) / 2.0), round((size[0] - width) / 2.0)
        prepared = resized[top : top + height, left : left + width]
    batch = ((prepared / 255.0 - np.array(card.mean)) / np.array(card.std)).transpose(2, 0, 1)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([LOGITS_NAME], {"input": batch[None].astype(np.float32)})
    z = logits[0].astype(np.float64) - logits[0].max()
    return np.exp(z) / np.exp(z).sum()


def gradient_png() -> tuple[bytes, Image.Image]:
    y, x = np.mgrid[0:60, 0:75]
    pixels = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), image


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh-venv")
    source = root / "src"
    source.mkdir()
    for relative in api_build_sources():
        origin = REPO / relative
        if origin.is_dir():
            shutil.copytree(origin, source / relative, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / relative)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        env=env,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return venv


def test_fresh_install_has_no_torch_and_no_export_code(fresh_venv: Path) -> None:
    python = str(fresh_venv / "bin/python")
    probe = (
        "import importlib.util, json; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None "
        "for m in ('torch', 'onnxscript', 'sklearn', 'export', 'service.app', 'onnxruntime')}))"
    )
    found = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd="/"
    )
    assert json.loads(found.stdout) == {
        "torch": False,
        "onnxscript": False,
        "sklearn": False,
        "export": False,
        "service.app": True,
        "onnxruntime": True,
    }
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert "actlab" in names
    assert not names & {"torch", "nvidia-cudnn-cu12", "triton", "onnxscript", "scikit-learn"}
    check = subprocess.run(
        [python, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout


def test_fresh_install_serves_classify_from_models(fresh_venv: Path, tmp_path: Path) -> None:
    models = published_models(MODELS_DIR)
    if not models:
        pytest.fail("models/ holds no published model; build the defaults with `make models`")
    port = free_port()
    process = start_replica(
        str(fresh_venv / "bin/python"), port, MODELS_DIR, tmp_path / "replica.log"
    )
    png, image = gradient_png()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(
            f"{base}/health/ready",
            timeout_s=120,
            process=process,
            log_path=tmp_path / "replica.log",
        )
        ready = httpx.get(f"{base}/health/ready", timeout=10).json()
        assert sorted(ready["models"]) == sorted(models)
        for name, model_path in models.items():
            reply = httpx.post(
                f"{base}/v1/models/{name}/classify",
                params={"include_probabilities": "true", "top_k": "3"},
                files={"file": ("gradient.png", png, "image/png")},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            card = card_of(model_path)
            assert (body["model"], body["version"]) == (name, card.version)
            expected = reference_probabilities(model_path, card, image)
            (prediction,) = body["predictions"]
            np.testing.assert_allclose(prediction["probabilities"], expected, atol=1e-4)
            best = np.argsort(-expected, kind="stable")[:3]
            assert [p["index"] for p in prediction["top_k"]] == best.tolist()
            assert [p["label"] for p in prediction["top_k"]] == [card.labels[i] for i in best]
    finally:
        stop_process(process)
