"""Request ``Content-Encoding`` (gzip or deflate; Triton clients send it) on /v1 and /v2, bounded:
the decompressed body may not exceed the same byte limit as an uncompressed one.

The image routes and /v2 undo it in their own body readers (``decode_content``); routes whose
JSON body FastAPI parses (/v1/activations) get it undone by ``DecompressBodyMiddleware`` first.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BadRequest, PayloadTooLarge, ServiceError, UnsupportedMediaType, quoted
from service.limits import header, send_error

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
INFLATE_STEP = 1 << 18  # 256 KiB: how far inflation runs ahead of its count


def decode_content(
    body: bytes,
    encoding: str | None,
    max_bytes: int,
    on_inflated: Callable[[int], None] | None = None,
) -> bytes:
    """``body`` with ``encoding`` undone, at most ``max_bytes`` of it; ``on_inflated(n)`` is
    called for every step of at most ``INFLATE_STEP`` inflated bytes (to count them as they
    appear: it may raise to stop the inflation)."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in _WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {quoted(name)} is not supported; send gzip, deflate or identity",
            code="unsupported_content_encoding",
        )
    # gzip allows several members one after another (RFC 1952 §2.2): their data concatenates.
    parts: list[bytes] = []
    total, remaining = 0, body
    while True:
        inflater = zlib.decompressobj(_WBITS[name])
        while True:
            step = min(INFLATE_STEP, max_bytes - total + 1)
            try:
                data = inflater.decompress(remaining, step)
            except zlib.error:
                raise BadRequest(f"the body is not valid {name} data") from None
            total += len(data)
            if total > max_bytes:
                raise PayloadTooLarge(
                    f"the decompressed request body is over the limit of {max_bytes} bytes"
                )
            if on_inflated is not None and data:
                on_inflated(len(data))
            parts.append(data)
            remaining = inflater.unconsumed_tail
            # Only a full step may leave more: zlib stops short at the end of its input or stream.
            if inflater.eof or len(data) < step:
                break
        if not inflater.eof:
            raise BadRequest(f"the {name} body is truncated")
        remaining = inflater.unused_data
        if not remaining:
            return b"".join(parts)
        if name != "gzip":
            raise BadRequest(
                f"the body has {len(remaining)} bytes after the end of its deflate stream"
            )


class DecompressBodyMiddleware:
    """For paths under a prefix of ``limits``: a body sent with a Content-Encoding is read whole
    (the body size limit outside this middleware bounds it), inflated off the event loop to at
    most the prefix's limit, and handed on as a plain body; an encoding other than gzip, deflate
    or identity is a 415, bad or truncated data a 400, too much decompressed data a 413."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Mapping[str, int],
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.limits = dict(limits)
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        limit = next((v for prefix, v in self.limits.items() if path.startswith(prefix)), None)
        encoding = None if limit is None else header(scope, b"content-encoding")
        if limit is None or encoding is None or encoding.strip().lower() == "identity":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the route reports it as it always does
                await self.app(scope, _replay(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            body = await asyncio.to_thread(decode_content, b"".join(chunks), encoding, limit)
        except ServiceError as error:
            if self.on_reject is not None:
                self.on_reject(error.code)
            await send_error(scope, receive, send, error)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _REPLACED]
        headers.append((b"content-length", str(len(body)).encode()))
        plain = {"type": "http.request", "body": body, "more_body": False}
        await self.app({**scope, "headers": headers}, _replay(plain, receive), send)


_REPLACED = (b"content-encoding", b"content-length", b"transfer-encoding")


def _replay(first: Message, receive: Receive) -> Receive:
    """``first``, then whatever the connection sends next (a disconnect)."""
    pending = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
