"""The OpenAPI document (/openapi.json, /docs) says what the server really sends.

FastAPI documents a 422 ``HTTPValidationError`` (``{"detail": [...]}``) on every route with
parameters, a shape this server never sends, and leaves error responses declared without a
schema bodiless. ``finish_openapi`` gives every 4xx/5xx response the real error shape
(``ErrorResponse`` on /v1, ``{"error": "<message>"}`` on /v2, whose validation errors are 400s;
a health check's 503 keeps its status body) and, when the server has an API key, declares it
so /docs offers "Authorize".
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.v2.docs import SCHEMAS as V2_REQUEST_SCHEMAS

_V1_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_V2_ERROR_NAME = "V2ErrorResponse"
_V2_ERROR = {"$ref": f"#/components/schemas/{_V2_ERROR_NAME}"}
_V2_ERROR_SCHEMA = {
    "title": _V2_ERROR_NAME,
    "type": "object",
    "properties": {"error": {"type": "string", "description": "What was wrong."}},
    "required": ["error"],
    "description": "The Open Inference Protocol's error shape.",
}
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")
_WITHOUT_KEY = ("/health/live", "/health/ready")


def finish_openapi(app: FastAPI, *, api_key: bool) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _real_error_shapes(schema)
            if api_key:
                _declare_api_key(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _real_error_shapes(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[_V2_ERROR_NAME] = _V2_ERROR_SCHEMA
    components.update(V2_REQUEST_SCHEMAS)  # RequestInput, RequestOutput: /v2 infer's $refs
    for path, operations in schema.get("paths", {}).items():
        v2 = path.startswith("/v2")
        for operation in operations.values():
            responses: dict[str, Any] = operation.get("responses", {})
            generated = responses.get("422", {})
            if "HTTPValidationError" in str(generated):
                del responses["422"]
                invalid = {"description": "Invalid parameters, e.g. an unknown query parameter."}
                responses.setdefault("400" if v2 else "422", invalid)
            for status, response in responses.items():
                if status[:1] not in ("4", "5"):
                    continue
                content = response.setdefault("content", {}).setdefault("application/json", {})
                example = content.get("example", {"error": None})
                if "error" in example:  # not a health check's 503, which is a status body
                    content["schema"] = _V2_ERROR if v2 else _V1_ERROR
    if "ValidationError" not in str(schema.get("paths")):
        for name in _FASTAPI_ONLY:
            components.pop(name, None)


def _declare_api_key(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for path, operations in schema.get("paths", {}).items():
        if path.endswith(_WITHOUT_KEY):
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
