"""The body size limit at the ASGI level: what it reads, what it answers, and nothing more."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.errors import Unavailable
from service.limits import BodySizeLimitMiddleware, ConcurrencyLimiter


async def echo_length_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = await Request(scope, receive).body()
    await JSONResponse({"length": len(body)})(scope, receive, send)


def run(
    chunks: list[bytes],
    limit: int,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    path: str = "/v1/classify",
    route_limits: dict[str, int] | None = None,
) -> tuple[int, dict[str, Any], int]:
    """Drive the middleware; returns (status, JSON body, how many times it called receive)."""
    calls = 0
    queue = list(chunks)
    sent: list[dict[str, Any]] = []
    rejected: list[str] = []

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        body = queue.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    middleware = BodySizeLimitMiddleware(
        echo_length_app, limit, route_limits=route_limits, on_reject=rejected.append
    )
    asyncio.run(middleware(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if start["status"] == 413:
        assert rejected == ["payload_too_large"]
    return start["status"], json.loads(body), calls


def test_a_body_within_the_limit_passes_whole() -> None:
    assert run([b"a" * 10, b"b" * 10, b"c" * 5], limit=25) == (200, {"length": 25}, 3)


def test_streaming_stops_at_the_first_chunk_past_the_limit() -> None:
    status, body, calls = run([b"a" * 10] * 10, limit=25)
    assert status == 413
    assert body == {
        "error": {
            "code": "payload_too_large",
            "message": "the request body is over the limit of 25 bytes",
        }
    }
    assert calls == 3  # 30 bytes seen: the 7 remaining chunks were never read


def test_declared_length_over_the_limit_is_rejected_before_reading() -> None:
    status, body, calls = run([b"a" * 10], limit=5, headers=[(b"content-length", b"6")])
    assert (status, body["error"]["code"], calls) == (413, "payload_too_large", 0)


ROUTES = {"/v1/activations/": 25}


def test_a_route_limit_applies_under_its_prefix_only() -> None:
    status, body, calls = run(
        [b"a" * 10] * 10, 1000, path="/v1/activations/relu/eval", route_limits=ROUTES
    )
    assert (status, calls) == (413, 3)
    assert body == {
        "error": {
            "code": "payload_too_large",
            "message": "the request body is over the limit of 25 bytes for "
            "/v1/activations/* routes",
        }
    }
    for path in ("/v1/classify", "/v1/models/m/activations", "/v1/activations"):
        assert run([b"a" * 10] * 10, 1000, path=path, route_limits=ROUTES) == (
            200,
            {"length": 100},
            10,
        )


def test_a_route_limit_rejects_a_declared_length_before_reading() -> None:
    status, body, calls = run(
        [b"a" * 10],
        1000,
        [(b"content-length", b"26")],
        path="/v1/activations/x/eval",
        route_limits=ROUTES,
    )
    assert (status, calls) == (413, 0)
    assert body["error"]["message"].endswith("limit of 25 bytes for /v1/activations/* routes")


def test_the_smaller_of_the_global_and_the_route_limit_applies() -> None:
    status, body, _ = run(
        [b"a" * 10] * 3, 15, path="/v1/activations/relu/eval", route_limits=ROUTES
    )
    assert status == 413
    assert body["error"]["message"] == "the request body is over the limit of 15 bytes"
    nested = {"/v1/": 50, "/v1/activations/": 25, "/v1/activations/relu/": 40}
    status, body, _ = run(
        [b"a" * 10] * 3, 1000, path="/v1/activations/relu/eval", route_limits=nested
    )
    assert status == 413
    assert body["error"]["message"].endswith("limit of 25 bytes for /v1/activations/* routes")
    assert run([b"a" * 10] * 3, 1000, path="/v2/x", route_limits=nested)[0] == 200


STALLS = None
"""A piece that never arrives (the client stopped sending)."""


def run_paced(
    pieces: list[tuple[float, bytes | None]],
    body_timeout_s: float,
    *,
    app: Any = echo_length_app,
    disconnect_after_s: float = 0.0,
) -> tuple[int, dict[str, str], dict[str, Any], list[str]]:
    """Drive the middleware with pieces (pause before it, body or ``STALLS``) and a timeout;
    after the last piece ``receive`` waits ``disconnect_after_s``, then says the client left.
    Returns (status, response headers, JSON body, rejection reasons)."""
    queue = list(pieces)
    sent: list[dict[str, Any]] = []
    rejected: list[str] = []

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.sleep(disconnect_after_s)
            return {"type": "http.disconnect"}
        pause, body = queue.pop(0)
        await asyncio.sleep(pause)
        if body is STALLS:
            await asyncio.Event().wait()
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/classify", "headers": []}
    middleware = BodySizeLimitMiddleware(
        app, 1000, on_reject=rejected.append, body_timeout_s=body_timeout_s
    )
    asyncio.run(middleware(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {bytes(k).decode(): bytes(v).decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, json.loads(body), rejected


def test_a_body_that_stops_arriving_is_cut_off_with_408_and_closed() -> None:
    status, headers, body, rejected = run_paced([(0.0, b"a" * 10), (0.0, STALLS)], 0.05)
    assert (status, headers["connection"], rejected) == (408, "close", ["body_timeout"])
    assert body == {
        "error": {
            "code": "body_timeout",
            "message": "the request body stopped arriving: nothing came for 0.05 s after 10 "
            "bytes (ACTLAB_BODY_TIMEOUT_S); send the whole body without pausing that long",
        }
    }
    status, _, body, _ = run_paced([(0.0, STALLS)], 0.05)  # not even a first byte
    assert (status, body["error"]["code"]) == (408, "body_timeout")
    assert "after 0 bytes" in body["error"]["message"]


def test_the_timeout_bounds_each_pause_not_the_whole_body() -> None:
    pieces: list[tuple[float, bytes | None]] = [(0.1, b"a" * 10)] * 6  # 0.6 s in all
    assert run_paced(pieces, 0.3)[::2] == (200, {"length": 60})


async def read_then_wait_for_disconnect_app(scope: Any, receive: Any, send: Any) -> None:
    body = await Request(scope, receive).body()
    after = await receive()  # what a streaming response does: wait until the client leaves
    await JSONResponse({"length": len(body), "then": after["type"]})(scope, receive, send)


def test_waiting_for_a_disconnect_after_the_body_is_not_timed_out() -> None:
    status, _, body, rejected = run_paced(
        [(0.0, b"abc")], 0.05, app=read_then_wait_for_disconnect_app, disconnect_after_s=0.3
    )
    assert (status, body, rejected) == (200, {"length": 3, "then": "http.disconnect"}, [])


def test_concurrency_limiter_fails_fast_and_recovers() -> None:
    limiter = ConcurrencyLimiter(2)
    limiter.acquire()
    limiter.acquire()
    with pytest.raises(Unavailable) as info:
        limiter.acquire()
    assert info.value.status == 503 and info.value.headers == {"Retry-After": "1"}
    assert info.value.code == "over_capacity"
    limiter.release()
    limiter.acquire()
    assert limiter.in_use == 2
