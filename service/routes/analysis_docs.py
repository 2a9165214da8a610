"""OpenAPI pieces shared by the inspection and compare routes (request body forms, errors)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.schemas import ErrorResponse

_PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


_FORM_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "top_k": {"type": "integer", "minimum": 1},
    "version": {"type": "integer", "minimum": 1},
    "include_probabilities": {"type": "boolean"},
}


def image_request_body(json_model: type[BaseModel], fields: tuple[str, ...]) -> dict[str, Any]:
    """One image as multipart ``file`` plus the option ``fields``, a raw ``image/*`` body, or
    JSON (``json_model``)."""
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    properties |= {f: _FORM_FIELD_SCHEMAS[f] for f in fields}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": properties, "required": ["file"]},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": json_model.model_json_schema(),
                "example": {"images": [f"data:image/png;base64,{_PNG_1PX}"], "top_k": 3},
            },
        },
    }


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Undecodable, truncated or empty image; bad base64."),
    404: _error("Unknown model or version (the message names it)."),
    408: _error("The body stopped arriving for ACTLAB_BODY_TIMEOUT_S."),
    413: _error("Body over ACTLAB_MAX_BODY_BYTES."),
    415: _error("Image format or content type not allowed."),
    422: _error("Invalid fields, more than one image, too many pixels or frames."),
    503: _error("Not ready or over capacity (Retry-After)."),
    504: _error("Past ACTLAB_INFERENCE_TIMEOUT_S."),
}
