"""Request limits: body size (enforced while the body streams) and in-flight inference work.

``BodySizeLimitMiddleware`` (pure ASGI) rejects a ``Content-Length`` over the limit before
reading anything, and otherwise counts the bytes of every body chunk (chunked transfer included)
as the application reads them; the moment the count passes the limit it stops reading, swallows
whatever the application was about to answer and sends 413. It never reads past the limit. Routes
whose bodies are parsed whole on the event loop (JSON) can get a smaller limit by path prefix.
It also bounds the pace: a body that stalls for ``body_timeout_s`` (before its first chunk or
between two) is cut off the same way with a 408, so a client that declares a large body and
stops sending cannot hold a connection, or what the body budget reserved for it, forever.

``ConcurrencyLimiter`` admits at most ``max_concurrency`` inference requests at once; the next one
is rejected at once with 503 + ``Retry-After`` instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import (
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unavailable,
    error_body,
)


def protocol_of_path(path: str) -> str:
    return "v2" if path.startswith("/v2") else "v1"


async def send_error(scope: Scope, receive: Receive, send: Send, error: ServiceError) -> None:
    """Render a ``ServiceError`` from ASGI middleware, in the same shape as the app's handlers."""
    protocol = protocol_of_path(scope.get("path", ""))
    response = JSONResponse(error_body(error, protocol=protocol), error.status, error.headers)
    await response(scope, receive, send)


class BodyLimitExceeded(PayloadTooLarge):
    """Raised into the application from ``receive``; the middleware answers (and counts) it."""


class BodyTimedOut(RequestTimeout):
    """Raised into the application from ``receive``; the middleware answers (and counts) it."""


ANSWERED_BY_BODY_LIMITS = (BodyLimitExceeded, BodyTimedOut)


class BodySizeLimitMiddleware:
    """``max_body_bytes`` for every request; ``route_limits`` maps a path prefix to a smaller one.

    A request under several limits gets the smallest of them (the global one included). Waiting
    for the next chunk of an unfinished body is bounded by ``body_timeout_s``; once the body is
    complete, ``receive`` (which then waits for the client to disconnect) is not.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        route_limits: Mapping[str, int] | None = None,
        on_reject: Callable[[str], None] | None = None,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.route_limits = dict(route_limits or {})
        self.on_reject = on_reject
        self.body_timeout_s = body_timeout_s

    def limit_for(self, path: str) -> tuple[int, str | None]:
        """(limit, the prefix it comes from, or None for the global limit) for a request path."""
        limit, prefix = self.limit, None
        for route, route_limit in self.route_limits.items():
            if path.startswith(route) and route_limit < limit:
                limit, prefix = route_limit, route
        return limit, prefix

    def _too_large(self, limit: int, prefix: str | None) -> PayloadTooLarge:
        if self.on_reject is not None:
            self.on_reject(PayloadTooLarge.code)
        where = "" if prefix is None else f" for {prefix}* routes"
        return PayloadTooLarge(f"the request body is over the limit of {limit} bytes{where}")

    def _timed_out(self, received: int) -> RequestTimeout:
        if self.on_reject is not None:
            self.on_reject(RequestTimeout.code)
        # The unread rest of the body makes the connection unusable: close it with the answer.
        return RequestTimeout(
            f"the request body stopped arriving: nothing came for {self.body_timeout_s:g} s "
            f"after {received} bytes (ACTLAB_BODY_TIMEOUT_S); send the whole body without "
            "pausing that long",
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, prefix = self.limit_for(scope.get("path", ""))
        declared = content_length(scope)
        if declared is not None and declared > limit:
            await send_error(scope, receive, send, self._too_large(limit, prefix))
            return
        received = 0
        body_complete = False
        cut_off: ServiceError | None = None  # what the client gets instead of the app's answer
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, body_complete, cut_off
            if isinstance(cut_off, RequestTimeout):
                raise BodyTimedOut("the request body stopped arriving")
            if cut_off is not None:
                raise BodyLimitExceeded("the request body is over the limit")
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                cut_off = self._timed_out(received)
                raise BodyTimedOut("the request body stopped arriving") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > limit:
                    cut_off = self._too_large(limit, prefix)
                    raise BodyLimitExceeded("the request body is over the limit")
            else:
                body_complete = True  # http.disconnect: nothing more will arrive
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if cut_off is not None:
                return  # the application's answer to a cut-off body is replaced by the error
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if cut_off is None:
                raise
        if cut_off is not None and not response_started:
            await send_error(scope, receive, send, cut_off)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the request header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def content_length(scope: Scope) -> int | None:
    """The declared ``Content-Length``, or None when absent or not a plain decimal number."""
    value = (header(scope, b"content-length") or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


class ConcurrencyLimiter:
    """A non-blocking counting gate: ``acquire`` fails fast with 503 when all slots are taken."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def acquire(self) -> None:
        with self._lock:
            if self._in_use >= self.limit:
                raise Unavailable(
                    f"the server is at its limit of {self.limit} concurrent inference requests; "
                    "retry shortly",
                    code="over_capacity",
                )
            self._in_use += 1

    def release(self) -> None:
        with self._lock:
            self._in_use -= 1
