"""A process-wide budget for the bytes of request bodies held in memory at once.

The body size limit bounds one request; this bounds them all together, so memory does not grow
with the number of clients uploading at the same time. Image routes read their body through a
``BodyReservation``: a declared ``Content-Length`` is reserved before the first byte is read, a
body without one (chunked) a chunk at a time as it arrives, and a compressed body's inflated
bytes as they are inflated. A reservation that does not fit is a 503 with ``Retry-After``
(code ``over_body_capacity``), like the inference concurrency limit; everything a request
reserved is released when its handling ends, whatever the outcome (``deps.body_reservation``).

The budget counts the bytes read from the wire and inflated, not every transient copy made while
parsing them; work past its deadline may keep its body briefly after the request's 504 (such
work is bounded by ``ACTLAB_MAX_CONCURRENCY``). The JSON routes FastAPI parses whole before any
dependency runs (``/v1/activations/*``) are counted by ``BodyBudgetMiddleware`` instead: each
chunk as it arrives, decompressed, until the response is sent.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError, Unavailable
from service.limits import content_length, send_error


class BodyBudget:
    """A non-blocking byte counter shared by every request (thread-safe: inflation runs in
    worker threads); ``reserve`` fails fast with 503 instead of waiting."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the body budget must be at least 1 byte, got {limit}")
        self.limit = limit
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def reserve(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cannot reserve a negative number of bytes ({size})")
        with self._lock:
            if self._in_use + size > self.limit:
                raise Unavailable(
                    f"the server is at its limit of {self.limit} bytes of request bodies held "
                    "at once; retry shortly",
                    code="over_body_capacity",
                )
            self._in_use += size

    def release(self, size: int) -> None:
        with self._lock:
            if size < 0 or size > self._in_use:
                raise ValueError(f"cannot release {size} bytes: {self._in_use} are reserved")
            self._in_use -= size


class BodyReservation:
    """One request's share of the budget: grows as its body is read, released all at once.

    Once released it is closed: work that outlived its request (a 504, a cancelled task still
    inflating in a thread) can reserve nothing more, so nothing is left reserved behind it.
    """

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self._held = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def add(self, size: int) -> None:
        """Reserve ``size`` more bytes (503 if the budget cannot hold them)."""
        with self._lock:
            if self._closed:
                raise ServiceError("the request has ended; its body is no longer read")
            self.budget.reserve(size)
            self._held += size

    def give_back(self, size: int) -> None:
        """Release ``size`` bytes this request no longer holds (e.g. a body once inflated)."""
        with self._lock:
            if size > self._held:
                raise ValueError(f"cannot give back {size} bytes: this request holds {self._held}")
            self.budget.release(size)
            self._held -= size

    def release(self) -> None:
        """Release everything and close; safe to call more than once."""
        with self._lock:
            self.budget.release(self._held)
            self._held = 0
            self._closed = True


async def reserved_stream(
    request: Request, reservation: BodyReservation
) -> AsyncGenerator[bytes, None]:
    """``request.stream()`` with every byte reserved before it is handed on: the declared
    length up front, then whatever arrives beyond what is reserved."""
    reserved = content_length(request.scope) or 0
    reservation.add(reserved)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > reserved:
            reservation.add(received - reserved)
            reserved = received
        yield chunk


async def read_reserved(request: Request, reservation: BodyReservation) -> bytes:
    """The whole body (``request.body()``), reserved as it is read."""
    chunks = [chunk async for chunk in reserved_stream(request, reservation)]
    return b"".join(chunks)


class BodyBudgetMiddleware:
    """Counts the bodies of requests under ``prefixes`` in the budget, for routes whose body the
    framework reads before a dependency could reserve it. Pure ASGI: each ``http.request`` chunk
    is reserved as the application receives it; a chunk that does not fit stops the read, and
    the request is answered 503 ``over_body_capacity`` (what the application was about to answer
    is swallowed). Everything is released once the application returns, whatever the outcome."""

    def __init__(
        self,
        app: ASGIApp,
        budget: Callable[[], BodyBudget],
        prefixes: Iterable[str],
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.budget = budget  # looked up per request: the app's budget, whatever it is then
        self.prefixes = tuple(prefixes)
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        reservation = BodyReservation(self.budget())
        refused: Unavailable | None = None
        response_started = False

        async def counted_receive() -> Message:
            nonlocal refused
            if refused is not None:
                raise refused
            message = await receive()
            if message["type"] == "http.request":
                try:
                    reservation.add(len(message.get("body", b"")))
                except Unavailable as exc:
                    refused = exc
                    raise
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused is not None:
                return  # the 503 below replaces the application's answer to a cut-off body
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if refused is None:
                raise
        finally:
            reservation.release()
        if refused is not None and not response_started:
            if self.on_reject is not None:
                self.on_reject(refused.code)
            await send_error(scope, receive, send, refused)
