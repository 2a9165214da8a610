"""The FastAPI application: ``uvicorn service.app:create_app --factory``.

Models load in the lifespan, in a background thread, so ``/health/live`` answers at once and
``/health/ready`` turns 200 when the image decoders and every startup model are warm. SIGHUP
(and optional polling) reloads the repository off the event loop. Middleware, outermost first:
metrics → CORS → API key → body size limit → request decompression (/v1/activations) → body
budget (/v1/activations) → the routes (errors rendered by ``service.errors``). Before the
server accepts connections, one pass through the router builds FastAPI's lazy routing state.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message

from service import activation_api
from service.auth import ApiKeyMiddleware
from service.body_budget import BodyBudget, BodyBudgetMiddleware
from service.content_encoding import DecompressBodyMiddleware
from service.errors import ServiceError, install_error_handlers
from service.head import HeadAsGetMiddleware
from service.imaging import warm_up_decoders
from service.inspection_sessions import InspectionCache
from service.limits import ANSWERED_BY_BODY_LIMITS, BodySizeLimitMiddleware
from service.logs import enable_service_logs
from service.metrics import BatchingCollector, Metrics, MetricsMiddleware, RouteTemplates
from service.openapi_doc import finish_openapi
from service.query_params import reject_unknown_query_parameters
from service.registry import ModelRegistry
from service.reloading import Reloader, install_sighup, poll_repository
from service.routes import ROUTERS
from service.settings import Settings
from service.workers import InferenceExecutor

log = logging.getLogger("actlab.app")

DESCRIPTION = """\
Classify images with ResNet models built on any activation function, evaluate activation
functions, and look inside a model's activations. Errors are
`{"error": {"code": "<stable code>", "message": "<what was wrong and what is allowed>"}}`,
except on the Open Inference Protocol routes (`/v2/...`), whose errors are the protocol's
`{"error": "<what was wrong and what is allowed>"}`. If the server has an API key, send
`Authorization: Bearer <key>` or `X-API-Key: <key>` on every route except `/health/*`,
`/v2/health/*` and these docs.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()
    enable_service_logs()
    app = FastAPI(
        title="actlab",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        # No 307 to the slash-less path: its absolute http:// Location breaks behind a TLS proxy,
        # and clients should call the documented path; the 404 says what to change.
        redirect_slashes=False,
        dependencies=[Depends(reject_unknown_query_parameters)],
    )
    app.state.settings = settings
    app.state.registry = ModelRegistry(settings)
    app.state.metrics = Metrics()
    app.state.executor = None
    app.state.body_budget = BodyBudget(settings.max_body_bytes_in_flight)
    app.state.metrics.body_bytes_in_flight.set_function(lambda: app.state.body_budget.in_use)
    app.state.metrics.registry.register(BatchingCollector(app.state.registry.live_runtimes))
    app.state.inspection_cache = InspectionCache(
        settings.intra_op_threads, settings.inter_op_threads, settings.inspection_cache_bytes
    )
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    _count_rejections(app, app.state.metrics)

    reject = _rejection_counter(app.state.metrics)
    # Routes whose JSON FastAPI parses whole on the event loop: a smaller limit, and their
    # Content-Encoding undone before FastAPI reads them.
    json_routes = {"/v1/activations/": activation_api.MAX_BODY_BYTES}
    # innermost: counts the inflated bytes FastAPI accumulates, not the compressed ones
    app.add_middleware(
        BodyBudgetMiddleware,
        budget=lambda: app.state.body_budget,
        prefixes=json_routes,
        on_reject=reject,
    )
    app.add_middleware(DecompressBodyMiddleware, limits=json_routes, on_reject=reject)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        route_limits=json_routes,
        on_reject=reject,
        body_timeout_s=settings.body_timeout_s,
    )
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, on_reject=reject)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(
        MetricsMiddleware,
        metrics=app.state.metrics,
        template_of=RouteTemplates(lambda: app.openapi()["paths"]),
    )
    app.add_middleware(HeadAsGetMiddleware)
    finish_openapi(app, api_key=bool(settings.api_key))
    return app


def _rejection_counter(metrics: Metrics) -> Callable[[str], None]:
    def count(reason: str) -> None:
        metrics.rejections.labels(reason).inc()

    return count


def _count_rejections(app: FastAPI, metrics: Metrics) -> None:
    """Wrap the installed error handlers so every rendered error counts as a rejection."""

    def reason_of(exc: Exception) -> str | None:
        if isinstance(exc, ANSWERED_BY_BODY_LIMITS) or isinstance(
            exc.__cause__, ANSWERED_BY_BODY_LIMITS
        ):
            return None  # the body limit middleware answers and counts it
        if isinstance(exc, ServiceError):
            return exc.code
        if isinstance(exc, RequestValidationError):
            return "invalid_request"
        if isinstance(exc, ClientDisconnect) or isinstance(exc.__cause__, ClientDisconnect):
            return "client_disconnected"
        if isinstance(exc, StarletteHTTPException):
            return {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return "internal_error"

    Handler = Callable[[Request, Any], Response | Awaitable[Response]]

    def wrap(handler: Handler) -> Handler:
        async def counted(request: Request, exc: Exception) -> Response:
            result = handler(request, exc)
            response = await result if inspect.isawaitable(result) else result
            reason = reason_of(exc)
            if reason is not None:
                metrics.rejections.labels(reason).inc()
            return response

        return counted

    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = wrap(handler)


def _drop_stale_inspections(cache: InspectionCache, registry: ModelRegistry) -> None:
    dropped = cache.retain(registry.live_keys())
    if dropped:
        log.info("dropped %d inspection session(s) of models no longer served", dropped)


def _start_up(reloader: Reloader) -> None:
    """Before ready: the image decoders, then every model, loaded and warm."""
    try:
        warm_up_decoders()
    except Exception:  # a missing codec fails that format's requests, not the startup
        log.exception("warming up the image decoders failed")
    reloader.startup()


async def _build_routing(app: FastAPI) -> None:
    """Route one request for no route through the router, bypassing the middleware (so nothing
    is counted), before the server accepts connections.

    FastAPI builds each route's matching state on the first request that reaches it; an
    unmatched path is compared with every route, so this builds all of it (measured: ~35 ms at
    startup; a fresh process's first classify then took 8–12 ms server-side instead of 16–23)."""
    path = "/.actlab-startup"  # no route has a dot segment
    scope = {"type": "http", "http_version": "1.1", "scheme": "http", "method": "GET",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": []}  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    try:
        await app.router(scope, receive, send)
    except Exception:  # a 404 raised instead of sent: the routes are built all the same
        log.debug("startup routing pass raised", exc_info=True)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    registry: ModelRegistry = app.state.registry
    metrics: Metrics = app.state.metrics
    app.state.executor = InferenceExecutor(settings.max_concurrency, settings.inference_timeout_s)
    reloader = Reloader(registry, metrics)
    app.state.reloader = reloader
    cache: InspectionCache = app.state.inspection_cache
    reloader.after_reload.append(lambda: _drop_stale_inspections(cache, registry))
    loop = asyncio.get_running_loop()
    startup = loop.run_in_executor(None, _start_up, reloader)
    sighup = install_sighup(loop, reloader)
    poller = (
        asyncio.create_task(poll_repository(reloader, settings))
        if settings.reload_poll_s > 0
        else None
    )
    await _build_routing(app)
    try:
        yield
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        with contextlib.suppress(Exception):
            await startup
        await asyncio.to_thread(app.state.executor.shutdown)
