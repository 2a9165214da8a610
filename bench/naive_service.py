"""The naive reference service (d): FastAPI + onnxruntime the way most tutorials write it.

Deliberately typical, not deliberately bad: an ``async def`` route that awaits the upload, decodes
the full image with Pillow, resizes/crops/normalises with per-request numpy arithmetic, and calls
``session.run`` on the event loop with default session options; softmax and top-5 in numpy.

    BENCH_NAIVE_MODEL=path/to/model.onnx uvicorn bench.naive_service:app
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, UploadFile
from PIL import Image

MODEL_PATH = os.environ.get("BENCH_NAIVE_MODEL", "model.onnx")

app = FastAPI()
session = ort.InferenceSession(MODEL_PATH)
meta = session.get_modelmeta().custom_metadata_map
labels = json.loads(meta["labels"]) if "labels" in meta else []
input_name = session.get_inputs()[0].name
size = int(session.get_inputs()[0].shape[2])

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(image: Image.Image) -> np.ndarray:
    resize = round(size * 256 / 224)
    width, height = image.size
    scale = resize / min(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.array(image).astype(np.float32) / 255.0
    array = (array - MEAN) / STD
    array = array.transpose(2, 0, 1)
    return np.expand_dims(array, axis=0).astype(np.float32)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008
    contents = await file.read()
    image = Image.open(io.BytesIO(contents)).convert("RGB")
    tensor = preprocess(image)
    outputs = session.run(None, {input_name: tensor})
    logits = outputs[0][0]
    exp = np.exp(logits - np.max(logits))
    probabilities = exp / exp.sum()
    top5 = np.argsort(probabilities)[::-1][:5]
    return {
        "predictions": [
            {
                "label": labels[i] if i < len(labels) else str(i),
                "probability": float(probabilities[i]),
            }
            for i in top5
        ]
    }
