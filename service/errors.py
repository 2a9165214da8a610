"""One error type, one JSON shape.

Every error a client sees is ``{"error": {"code": "<stable_code>", "message": "<safe text>"}}``
with the matching HTTP status (the /v2 Open Inference Protocol routes render the same errors as
``{"error": "<message>"}``, the protocol's shape). Messages are written for the client: they say
what was wrong and what is allowed, and never carry a traceback, a file path, a library version
or the client's own input echoed back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

log = logging.getLogger("actlab.errors")


def quoted(text: str, limit: int = 64) -> str:
    """A client-supplied string for an error message: repr-quoted, at most ``limit`` characters
    of it (then "…"), so a message never grows with the client's input."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


class ServiceError(Exception):
    """Base of every error the service reports to a client."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class InvalidImage(ServiceError):
    status, code = 400, "invalid_image"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class RequestTimeout(ServiceError):
    status, code = 408, "body_timeout"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(ServiceError):
    status, code = 422, "invalid_request"


class Unavailable(ServiceError):
    """Not ready, or over the concurrency limit: the client should retry later."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class DeadlineExceeded(ServiceError):
    status, code = 504, "deadline_exceeded"


CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that went away before the answer: logged and counted as such
(``actlab_requests_total{status="499"}``, rejection reason ``client_disconnected``), never as a
server error. Nothing is sent: there is no one to send it to."""


def invalid_body(exc: ValidationError, *, what: str = "request", status: int = 422) -> ServiceError:
    """A JSON body pydantic rejected, as the client should see it: 400 ``invalid_json`` with the
    parser's reason and position when the bytes are not JSON at all (serde_json's fixed text:
    "EOF while parsing a list at line 1 column 12"), else ``status`` ``invalid_request`` naming
    each bad field (at most 10) and never its value."""
    errors = exc.errors()
    return _not_json(errors) or Unprocessable(
        f"invalid {what}: {_field_problems(errors)}", status=status
    )


def _not_json(errors: Sequence[Any], *, offset: bool = False) -> BadRequest | None:
    """400 ``invalid_json`` if the parser could not read the body at all: its fixed reason, and
    with ``offset`` the character offset FastAPI's json.loads puts last in the location."""
    syntax = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if syntax is None:
        return None
    reason = (syntax.get("ctx") or {}).get("error", "it could not be parsed")
    position = (syntax.get("loc") or (None,))[-1]
    where = f" at character {position}" if offset and isinstance(position, int) else ""
    return BadRequest(f"the request body is not valid JSON: {reason}{where}", code="invalid_json")


def _field_problems(errors: Sequence[Any]) -> str:
    """ "loc: msg" for at most 10 errors: field locations and messages, never the input itself
    (FastAPI's leading "body" location is dropped)."""
    parts = []
    for err in errors[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def error_body(error: ServiceError, *, protocol: str = "v1") -> dict[str, object]:
    if protocol == "v2":
        return {"error": error.message}
    return {"error": {"code": error.code, "message": error.message}}


def _protocol_of(request: Request) -> str:
    return "v2" if request.url.path.startswith("/v2") else "v1"


def render(request: Request, error: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(error, protocol=_protocol_of(request)),
        status_code=error.status,
        headers=error.headers,
    )


def _unparsable_body_message(detail: object) -> str:
    """A 400 raised by FastAPI/Starlette while reading the body (their fixed texts, no input)."""
    if detail == "There was an error parsing the body":  # FastAPI: json.loads raised
        return (
            "the request body could not be parsed as JSON: it is not UTF-8, nests too deeply, "
            "or holds an integer too long to read"
        )
    if isinstance(detail, str) and detail and detail != "Bad Request":
        return f"the request body could not be parsed: {detail.rstrip('.')}"
    return "the request body could not be parsed"


def _route_without_slash_exists(request: Request) -> bool:
    """Whether the path, less its trailing slash, is a route (FastAPI's redirect is off)."""
    path = request.url.path
    if len(path) < 2 or not path.endswith("/"):
        return False
    scope = {**request.scope, "path": path.rstrip("/") or "/"}
    return any(route.matches(scope)[0] != Match.NONE for route in request.app.router.routes)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error (ours, FastAPI validation, Starlette HTTP, unexpected) the same way."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return render(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def _client_disconnected(request: Request, exc: ClientDisconnect) -> Response:
        log.info(
            "client disconnected before its request body was complete: %s %s",
            request.method, request.url.path,
        )  # fmt: skip
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        status = 400 if _protocol_of(request) == "v2" else 422
        problems = Unprocessable(f"invalid request: {_field_problems(errors)}", status=status)
        return render(request, _not_json(errors, offset=True) or problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI reading a JSON body
            return await _client_disconnected(request, exc.__cause__)
        codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, "request failed"
        )
        if exc.status_code == 400:
            message = _unparsable_body_message(exc.detail)
        if exc.status_code == 404 and _route_without_slash_exists(request):
            message = "no such route; remove the trailing slash (routes never end in one)"
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and "Allow" in headers:
            allowed = [m.strip() for m in headers["Allow"].split(",")]
            if "GET" in allowed and "HEAD" not in allowed:  # service.head serves HEAD as GET
                allowed.append("HEAD")
            headers["Allow"] = ", ".join(allowed)
            message = f"{message}; allowed: {headers['Allow']}"
        return render(
            request,
            ServiceError(
                message,
                status=exc.status_code,
                code=codes.get(exc.status_code, "http_error"),
                headers=headers or None,  # e.g. Allow on a 405
            ),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request, ServiceError("internal error; the request was not completed"))
