"""Classify image bytes with one model: decode → preprocess → run → top-k.

``classify_images`` is the one function every classify-like route calls (``/v1/.../classify``,
the analysis helper's compare, the ``/v2`` protocol routes). It is synchronous and CPU-bound: call
it from a worker thread, never on the event loop. A ``Deadline`` stops it between steps and
stops onnxruntime mid-run (``RunOptions.terminate``) when the request's time is up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from service.errors import DeadlineExceeded
from service.imaging import (
    DecodeLimits,
    decode_image,
    draft_size,
    normalisation_table,
    preprocess_into,
)
from service.runtime import ModelRuntime

DEFAULT_TOP_K = 5


class Deadline:
    """A point in time after which the request's work is abandoned (→ 504)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.run_options = ort.RunOptions()

    def expire(self) -> None:
        """Called from another thread when the deadline passes: stops a running inference."""
        self.run_options.terminate = True

    def check(self) -> None:
        if self.run_options.terminate or time.monotonic() > self.expires_at:
            self.run_options.terminate = True
            raise DeadlineExceeded(
                f"the request took longer than the {self.seconds:g} s inference deadline"
            )


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    total_ms: float

    def as_json(self) -> dict[str, float]:
        return {
            "decode": round(self.decode_ms, 3),
            "preprocess": round(self.preprocess_ms, 3),
            "inference": round(self.inference_ms, 3),
            "total": round(self.total_ms, 3),
        }


@dataclass(frozen=True)
class Classification:
    """The outcome for one batch; arrays are [N, num_classes] float32."""

    model: ModelRuntime
    logits: NDArray[np.float32]
    probabilities: NDArray[np.float32]
    timings: Timings

    def top_k(self, k: int) -> list[list[dict[str, object]]]:
        """Per image, the ``k`` most probable classes (clamped to the class count), best first."""
        labels = self.model.card.labels
        k = max(1, min(k, len(labels)))
        ranked = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [
                {"label": labels[i], "index": i, "probability": p}
                for i, p in zip(row.tolist(), probs[row].tolist(), strict=True)
            ]
            for row, probs in zip(ranked, self.probabilities, strict=True)
        ]

    def as_json(self, *, top_k: int = DEFAULT_TOP_K, include_probabilities: bool = False) -> dict:
        predictions: list[dict[str, object]] = [{"top_k": row} for row in self.top_k(top_k)]
        if include_probabilities:
            for prediction, vector in zip(predictions, self.probabilities.tolist(), strict=True):
                prediction["probabilities"] = vector
        return {
            "model": self.model.name,
            "version": self.model.version,
            "predictions": predictions,
            "timings_ms": self.timings.as_json(),
        }


def classify_decoded(
    model: ModelRuntime,
    decoded: Sequence[Image.Image],
    *,
    decode_ms: float,
    deadline: Deadline | None = None,
) -> Classification:
    """Preprocess already decoded images into one batch for ``model`` and run it.

    The images are not modified, so one decode can serve several models (``/v1/compare``);
    ``decode_ms`` is what decoding them cost, reported in the timings."""
    started = time.perf_counter()
    batch, table = _empty_batch(model, len(decoded))
    for slot, image in enumerate(decoded):
        preprocess_into(image, model.card, batch[slot], table)
    preprocess_ms = (time.perf_counter() - started) * 1e3
    return _run_batch(model, batch, decode_ms, preprocess_ms, deadline)


def classify_images(
    model: ModelRuntime,
    images: Sequence[bytes],
    limits: DecodeLimits,
    *,
    deadline: Deadline | None = None,
) -> Classification:
    """Decode and preprocess every image into one batch and run it; errors are ServiceErrors.

    Each image is decoded, written into its batch slot and dropped before the next is decoded,
    so a request holds one full-size decoded image at a time, not one per image (32 images of
    40 MP would otherwise be 4.5 GB)."""
    batch, table = _empty_batch(model, len(images))
    min_size = draft_size(model.card)
    decode_s = preprocess_s = 0.0
    for slot, data in enumerate(images):
        started = time.perf_counter()
        image = decode_image(data, limits, min_size=min_size)
        decoded_at = time.perf_counter()
        preprocess_into(image, model.card, batch[slot], table)
        del image
        decode_s += decoded_at - started
        preprocess_s += time.perf_counter() - decoded_at
        if deadline is not None:
            deadline.check()
    return _run_batch(model, batch, decode_s * 1e3, preprocess_s * 1e3, deadline)


def _empty_batch(model: ModelRuntime, size: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    height, width = model.card.input_size
    batch = np.empty((size, 3, height, width), dtype=np.float32)
    return batch, normalisation_table(model.card)


def _run_batch(
    model: ModelRuntime,
    batch: NDArray[np.float32],
    decode_ms: float,
    preprocess_ms: float,
    deadline: Deadline | None,
) -> Classification:
    if deadline is not None:
        deadline.check()
    started = time.perf_counter()
    logits, probabilities = model.run(batch, deadline.run_options if deadline else None)
    inference_ms = (time.perf_counter() - started) * 1e3
    timings = Timings(
        decode_ms=decode_ms,
        preprocess_ms=preprocess_ms,
        inference_ms=inference_ms,
        total_ms=decode_ms + preprocess_ms + inference_ms,
    )
    return Classification(model, logits, probabilities, timings)
