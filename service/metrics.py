"""Prometheus metrics, one registry per app (never the process-global one).

``MetricsMiddleware`` (pure ASGI, outermost) counts every request by route template, method and
status and tracks requests in flight; routes record decode/preprocess/inference timings and
inferences per model; error handlers record rejections by reason (the error code).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from service.classify import Timings
    from service.runtime import ModelRuntime

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "actlab_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "actlab_requests_in_flight", "HTTP requests in progress.", registry=r
        )
        self.request_seconds = Histogram(
            "actlab_request_seconds", "Total time per HTTP request.", ["route"],
            buckets=_SLOW, registry=r,
        )  # fmt: skip
        self.inferences = Counter(
            "actlab_inferences", "Inference batches run, per model.", ["model"], registry=r
        )
        self.images = Counter(
            "actlab_images", "Images classified, per model.", ["model"], registry=r
        )
        self.decode_seconds = Histogram(
            "actlab_decode_seconds",
            "Image decode time per image (a request with several images observes their mean "
            "once per image).",
            buckets=_FAST, registry=r,
        )  # fmt: skip
        self.preprocess_seconds = Histogram(
            "actlab_preprocess_seconds",
            "Resize/crop/normalise time per image (a request with several images observes their "
            "mean once per image).",
            buckets=_FAST, registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "actlab_inference_seconds", "onnxruntime run time per batch.", ["model"],
            buckets=_SLOW, registry=r,
        )  # fmt: skip
        self.classify_seconds = Histogram(
            "actlab_classify_seconds", "Decode + preprocess + inference per classify request.",
            ["model"], buckets=_SLOW, registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "actlab_rejections", "Rejected requests by reason (the error code).", ["reason"],
            registry=r,
        )  # fmt: skip
        self.models_loaded = Gauge("actlab_models_loaded", "Models being served.", registry=r)
        self.body_bytes_in_flight = Gauge(
            "actlab_body_bytes_in_flight",
            "Bytes of request bodies held in memory now, read and inflated (at most "
            "ACTLAB_MAX_BODY_BYTES_IN_FLIGHT; over it, requests get 503 over_body_capacity).",
            registry=r,
        )
        self.reloads = Counter(
            "actlab_reloads", "Repository reloads by outcome.", ["outcome"], registry=r
        )

    def record_timings(
        self, model: str, images: int, timings: Timings, *, decode_recorded: bool = False
    ) -> None:
        """``record_classify`` from a classification's timings (ms); ``decode_recorded``: the
        decode was shared with a run recorded before (``/v1/compare``)."""
        self.record_classify(
            model,
            images,
            None if decode_recorded else timings.decode_ms / 1e3,
            timings.preprocess_ms / 1e3,
            timings.inference_ms / 1e3,
        )

    def record_classify(
        self,
        model: str,
        images: int,
        decode_s: float | None,
        preprocess_s: float,
        inference_s: float,
    ) -> None:
        """One run of ``model``; ``decode_s`` None: the images' decode was recorded already
        (``/v1/compare`` decodes once for every model)."""
        self.inferences.labels(model).inc()
        self.images.labels(model).inc(images)
        self.inference_seconds.labels(model).observe(inference_s)
        self.classify_seconds.labels(model).observe((decode_s or 0.0) + preprocess_s + inference_s)
        per_image = max(images, 1)
        for _ in range(images):
            if decode_s is not None:
                self.decode_seconds.observe(decode_s / per_image)
            self.preprocess_seconds.observe(preprocess_s / per_image)


class RouteTemplates:
    """Path → route template, for requests answered before routing sets ``scope["route"]``.

    A 413 on ``Content-Length`` or a 401 is sent by a middleware, so the router never sees the
    request; without this it would be counted as ``route="unmatched"``. The templates are the
    app's OpenAPI paths (``paths()``, read once on first use), tried in declaration order like the
    router; a path matching none of them stays ``unmatched``.
    """

    def __init__(self, paths: Callable[[], Iterable[str]]) -> None:
        self._paths = paths
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def __call__(self, path: str) -> str | None:
        if self._compiled is None:
            self._compiled = [(compile_path(t)[0], t) for t in self._paths()]
        return next((t for pattern, t in self._compiled if pattern.match(path)), None)


class MetricsMiddleware:
    def __init__(
        self, app: ASGIApp, metrics: Metrics, template_of: Callable[[str], str | None] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.template_of = template_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            template = self._template(scope)
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        routed = getattr(scope.get("route"), "path", None)
        if routed:
            return str(routed)
        matched = self.template_of(scope["path"]) if self.template_of is not None else None
        return matched or "unmatched"


class BatchingCollector(Collector):
    """Dynamic batching at scrape time, per served model version: onnxruntime runs made and the
    images they held (images ÷ runs = the mean batch). Read from each runtime's batcher, so the
    counters start again at 0 when a reload brings a new version (a new series)."""

    def __init__(self, runtimes: Callable[[], Iterable[ModelRuntime]]) -> None:
        self.runtimes = runtimes

    def collect(self) -> Iterator[CounterMetricFamily]:
        runs = CounterMetricFamily(
            "actlab_batched_runs",
            "onnxruntime runs made by dynamic batching, per served model version (one run "
            "serves one or more requests).",
            labels=["model", "version"],
        )
        images = CounterMetricFamily(
            "actlab_batched_images",
            "Images in those runs; ÷ actlab_batched_runs_total = the mean batch size.",
            labels=["model", "version"],
        )
        for runtime in self.runtimes():
            batcher = runtime.batcher
            if batcher is not None:
                labels = [runtime.name, str(runtime.version)]
                runs.add_metric(labels, batcher.batches_run)
                images.add_metric(labels, batcher.images_run)
        yield runs
        yield images
