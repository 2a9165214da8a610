"""HEAD on every GET route (RFC 9110 §9.3.2: a server that supports GET supports HEAD).

FastAPI routes declare GET only, so HEAD would be a 405. This pure ASGI middleware runs a HEAD
request as a GET and sends the GET response's status and headers without the body (the
Content-Length stays the GET body's, as the RFC allows). A route without GET still answers 405.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)
