"""In-process measurements: (a) the limit, (b) the service pipeline, (e) PyTorch eager, INT8.

Every measurement calls the code it names: (a) ``session.run`` of a session built with the
service's own options (``ModelRuntime.load``) on ready tensors; (b) ``service.classify.
classify_images`` on JPEG bytes (decode, preprocess, run: exactly the service's path); the decode
comparison calls ``service.imaging`` against the naive reference's own ``preprocess``.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.stats import ResourceMonitor, Result, percentiles
from service.classify import classify_images
from service.imaging import DecodeLimits, decode_image, draft_size, preprocess
from service.modelcard import INPUT_NAME, LOGITS_NAME, PROBABILITIES_NAME
from service.runtime import ModelRuntime
from service.settings import Settings


def measure(
    call: Callable[[], object],
    *,
    key: str,
    group: str,
    label: str,
    runs: int,
    batch: int = 1,
    warmup: int = 2,
    note: str = "",
) -> Result:
    """Time ``runs`` sequential calls after ``warmup``; throughput counts ``batch`` images each."""
    for _ in range(warmup):
        call()
    latencies = []
    with ResourceMonitor(os.getpid()) as monitor:
        started = time.perf_counter()
        for _ in range(runs):
            t0 = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
    p50, p95, p99 = percentiles(latencies)
    return Result(
        key=key, group=group, label=label, requests=runs, concurrency=1, batch=batch,
        p50_ms=p50, p95_ms=p95, p99_ms=p99, throughput=runs * batch / wall,
        cpu_percent=monitor.cpu_percent, peak_rss_mb=monitor.peak_rss_mb, note=note,
    )  # fmt: skip


def load_runtime(path: Path, name: str, settings: Settings | None = None) -> ModelRuntime:
    """The model exactly as the service loads it (same session options, warmed)."""
    settings = settings or Settings()
    runtime = ModelRuntime.load(
        path, name=name, version=1, digest="-",
        intra_op_threads=settings.intra_op_threads, inter_op_threads=settings.inter_op_threads,
    )  # fmt: skip
    runtime.warm_up(settings.warmup_runs)
    return runtime


def ready_tensor(runtime: ModelRuntime, jpeg: bytes, batch: int) -> np.ndarray:
    image = decode_image(jpeg, DecodeLimits(), min_size=draft_size(runtime.card))
    return np.repeat(preprocess(image, runtime.card), batch, axis=0)


def session_results(
    runtime: ModelRuntime, jpeg: bytes, batch_sizes: tuple[int, ...], runs: int, *,
    group: str, prefix: str, label: str,
) -> list[Result]:  # fmt: skip
    """``session.run`` on ready tensors at each batch size (the limit when ``group`` is 'a')."""
    results = []
    for batch in batch_sizes:
        tensor = ready_tensor(runtime, jpeg, batch)

        def call(t: np.ndarray = tensor) -> object:
            return runtime.session.run([LOGITS_NAME, PROBABILITIES_NAME], {INPUT_NAME: t})

        results.append(
            measure(call, key=f"{prefix}-b{batch}", group=group, label=f"{label}, batch {batch}",
                    runs=max(3, runs // batch), batch=batch)
        )  # fmt: skip
    return results


def parallel_session_result(path: Path, name: str, jpeg: bytes, runs: int, callers: int) -> Result:
    """(a) the other way to fill the cores: ``callers`` threads each running batch 1 on a
    single-intra-op-thread session (no synchronisation between threads inside one run)."""
    runtime = load_runtime(path, name, Settings(intra_op_threads=1))
    tensor = ready_tensor(runtime, jpeg, 1)
    feeds = {INPUT_NAME: tensor}
    per_caller = max(2, runs // callers)
    latencies: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        mine = []
        for _ in range(per_caller):
            t0 = time.perf_counter()
            runtime.session.run([LOGITS_NAME, PROBABILITIES_NAME], feeds)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    for _ in range(2):
        runtime.session.run([LOGITS_NAME, PROBABILITIES_NAME], feeds)
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    with ResourceMonitor(os.getpid()) as monitor:
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    p50, p95, p99 = percentiles(latencies)
    return Result(
        key="a-parallel", group="a",
        label=f"(a) session.run, batch 1, {callers} parallel callers × 1 intra-op thread",
        requests=len(latencies), concurrency=callers, batch=1, p50_ms=p50, p95_ms=p95,
        p99_ms=p99, throughput=len(latencies) / wall, cpu_percent=monitor.cpu_percent,
        peak_rss_mb=monitor.peak_rss_mb,
    )  # fmt: skip


def pipeline_results(
    runtime: ModelRuntime, photos: list[bytes], small: list[bytes], runs: int, photo_mp: float
) -> list[Result]:
    """(b): decode + preprocess + run, one image per call, exactly as the service does it."""
    limits = DecodeLimits()
    results = []
    for key, label, images in (
        ("b-photo", f"(b) service pipeline in-process, {photo_mp:.1f} MP JPEG", photos),
        ("b-224", "(b) service pipeline in-process, 224×224 JPEG", small),
    ):
        counter = iter(range(10**9))

        def call(images: list[bytes] = images, counter: object = counter) -> object:
            data = images[next(counter) % len(images)]  # type: ignore[call-overload]
            return classify_images(runtime, [data], limits)

        results.append(measure(call, key=key, group="b", label=label, runs=runs))
    return results


def decode_results(
    runtime: ModelRuntime, photos: list[bytes], runs: int, mp: float
) -> list[Result]:
    """Decode + preprocess only: the service's reduced-scale path vs the naive full decode."""
    import bench.naive_service as naive  # builds its session from BENCH_NAIVE_MODEL

    card = runtime.card
    limits = DecodeLimits()
    min_size = draft_size(card)
    counter = iter(range(10**9))

    def service_path() -> object:
        data = photos[next(counter) % len(photos)]
        return preprocess(decode_image(data, limits, min_size=min_size), card)

    def naive_decode() -> object:
        data = photos[next(counter) % len(photos)]
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return naive.preprocess(image)

    def naive_decode_only() -> object:
        data = photos[next(counter) % len(photos)]
        return Image.open(io.BytesIO(data)).convert("RGB")

    def scaled_decode(scale: int) -> Callable[[], object]:
        def call() -> object:
            image = Image.open(io.BytesIO(photos[next(counter) % len(photos)]))
            image.draft("RGB", (image.width // scale, image.height // scale))
            image.load()
            return image

        return call

    scaled = [
        measure(scaled_decode(s), key=f"decode-1/{s}", group="decode",
                label=f"JPEG decode only at 1/{s} scale (DCT scaling), {mp:.1f} MP", runs=runs)
        for s in (2, 4, 8)
    ]  # fmt: skip

    return [
        measure(service_path, key="decode-service", group="decode",
                label=f"service decode + preprocess, {mp:.1f} MP", runs=runs),
        measure(naive_decode, key="decode-naive", group="decode",
                label=f"naive full decode + preprocess, {mp:.1f} MP", runs=runs),
        measure(naive_decode_only, key="decode-naive-only", group="decode",
                label=f"naive full decode only (no resize), {mp:.1f} MP", runs=runs),
        *scaled,
    ]  # fmt: skip


def torch_results(
    weights: Path, arch: str, num_classes: int, tensor_1: np.ndarray, batches: tuple[int, ...],
    runs: int,
) -> list[Result]:  # fmt: skip
    """(e): PyTorch eager inference of the same network and weights."""
    import torch

    from export.resnet import build_resnet

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = build_resnet(arch, "relu", num_classes=num_classes)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    results = []
    for batch in batches:
        x = torch.from_numpy(np.repeat(tensor_1, batch, axis=0))

        def call(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        results.append(
            measure(call, key=f"e-b{batch}", group="e", label=f"(e) PyTorch eager, batch {batch}",
                    runs=max(3, runs // batch), batch=batch, note=f"torch {torch.__version__}")
        )  # fmt: skip
    return results


def torch_parity(
    weights: Path, arch: str, num_classes: int, runtime: ModelRuntime, x: np.ndarray
) -> float:
    """max |torch logits − onnxruntime logits| on ``x``: shows (e) runs the same network."""
    import torch

    from export.resnet import build_resnet

    model = build_resnet(arch, "relu", num_classes=num_classes)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = runtime.session.run([LOGITS_NAME], {INPUT_NAME: x})[0]
    return float(np.max(np.abs(expected - got)))
