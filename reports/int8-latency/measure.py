"""One-off check that onnxruntime runs the INT8 (QDQ) variants with int8 kernels, and how fast.

Builds ImageNet-style resnet18 and resnet50 (ReLU, 1000 classes, seeded random init: latency does
not depend on the weights), exports them through the normal checked path, quantizes them exactly
as ``--quantize int8`` does (calibrated on 32 rendered ``shapes`` images at 224×224, ImageNet
mean/std), then times fp32 vs int8 in onnxruntime (batch 1, median of N runs, 1 and 2 threads,
sessions configured like the service's) and counts the kernels of the optimised graph.

Run: .venv/bin/python reports/int8-latency/measure.py > reports/int8-latency/results.md
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
import torch

from export.data import IMAGENET_MEAN, IMAGENET_STD
from export.pipeline import export_verified
from export.quantize import int8_kernel_counts, quantize_int8, top1_agreement
from export.resnet import build_resnet
from export.shapes import render_shapes
from service.modelcard import INPUT_NAME, LOGITS_NAME
from service.runtime import session_options

RUNS = 30


def latency_ms(model_bytes: bytes, threads: int, image: np.ndarray) -> tuple[float, float]:
    """(median, minimum) ms of a batch-1 run; the minimum is the least disturbed by other load."""
    session = ort.InferenceSession(
        model_bytes, session_options(threads, 1), providers=["CPUExecutionProvider"]
    )
    for _ in range(5):
        session.run([LOGITS_NAME], {INPUT_NAME: image})
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run([LOGITS_NAME], {INPUT_NAME: image})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, min(times) * 1000


def main() -> None:
    torch.set_num_threads(1)
    rendered, _ = render_shapes(4, 224, seed=0)
    mean = np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    images = (rendered.transpose(0, 3, 1, 2).astype(np.float32) / 255 - mean) / std
    images = images.astype(np.float32)
    print("| model | threads | fp32 ms median (min) | int8 ms median (min) | speed-up (min) |")
    print("|---|---|---|---|---|")
    notes = []
    for arch in ("resnet18", "resnet50"):
        model = build_resnet(arch, "relu", num_classes=1000, seed=0).eval()
        graph = export_verified(model, (224, 224), [torch.from_numpy(images[:2])])
        fp32 = graph.proto.SerializeToString()
        int8 = quantize_int8(fp32, images).SerializeToString()
        kernels = int8_kernel_counts(int8)
        agreement = top1_agreement(fp32, int8, images)
        notes.append(
            f"- {arch}: fp32 {len(fp32) / 1e6:.1f} MB, int8 {len(int8) / 1e6:.1f} MB; "
            f"optimised int8 graph runs {kernels}; top-1 agreement on the 32 "
            f"calibration images (random weights, so only a smoke check) {agreement:.2%}"
        )
        for threads in (1, 2):
            a, a_min = latency_ms(fp32, threads, images[:1])
            b, b_min = latency_ms(int8, threads, images[:1])
            print(
                f"| {arch} | {threads} | {a:.1f} ({a_min:.1f}) | {b:.1f} ({b_min:.1f}) "
                f"| {a / b:.2f}× ({a_min / b_min:.2f}×) |",
                flush=True,
            )
    print()
    print("\n".join(notes))
    python = sys.version.split()[0]
    print(f"\nonnxruntime {ort.__version__}, torch {torch.__version__}, Python {python}")


if __name__ == "__main__":
    main()
