"""Optional API key on every route except health checks and the API docs.

Accepted as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; compared in constant time.
Pure ASGI middleware, so routers added later (activations, inspection, /v2) are covered too.
CORS preflight requests (OPTIONS) pass, so browsers can learn that the header is allowed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized
from service.limits import send_error

OPEN_PATHS = frozenset(
    {
        "/health/live",
        "/health/ready",
        "/v2/health/live",
        "/v2/health/ready",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
    return None


class ApiKeyMiddleware:
    def __init__(
        self, app: ASGIApp, api_key: str, on_reject: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.key = api_key.encode()
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        key = presented_key(scope.get("headers", []))
        if key is None or not hmac.compare_digest(key, self.key):
            if self.on_reject is not None:
                self.on_reject(Unauthorized.code)
            message = (
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                if key is None
                else "the API key is not valid"
            )
            error = Unauthorized(message, headers={"WWW-Authenticate": "Bearer"})
            await send_error(scope, receive, send, error)
            return
        await self.app(scope, receive, send)
