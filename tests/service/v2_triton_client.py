"""Run by test_v2_tritonclient.py in its own process: NVIDIA's own ``tritonclient.http``
talks to the server at argv[1] (the Triton HTTP client, unchanged) and prints what it got as
JSON. Kept out of the pytest process because tritonclient brings gevent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton


def main(url: str, model: str, batch_path: str, image_path: str) -> None:
    client = triton.InferenceServerClient(url=url)
    batch = np.load(batch_path)
    image = Path(image_path).read_bytes()
    out: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": client.get_model_metadata(model),
        "model_config": client.get_model_config(model),
    }

    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    outputs = [
        triton.InferRequestedOutput("logits", binary_data=True),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer(model, [tensor], outputs=outputs, request_id="tc-1")
    out["tensor"] = {
        "response": result.get_response(),
        "logits": result.as_numpy("logits").tolist(),
        "probabilities": result.as_numpy("probabilities").tolist(),
    }

    images = triton.InferInput("image", [1], "BYTES")
    images.set_data_from_numpy(np.array([image], dtype=np.object_), binary_data=True)
    top = triton.InferRequestedOutput("probabilities", binary_data=True, class_count=3)
    result = client.infer(model, [images], outputs=[top])
    out["image_top3"] = [v.decode() for v in result.as_numpy("probabilities").ravel()]
    result = client.infer(
        model,
        [images],
        outputs=[triton.InferRequestedOutput("probabilities")],
        request_compression_algorithm="gzip",
    )
    out["image_probabilities"] = result.as_numpy("probabilities").tolist()

    try:
        client.infer("no-such-model", [tensor])
    except triton.InferenceServerException as exc:
        out["unknown_model_error"] = {"status": exc.status(), "message": exc.message()}
    out["statistics"] = client.get_inference_statistics(model)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])
