"""Activation catalogue and evaluation: /v1/activations (no model needed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from service.activation_api import (
    EVAL_EXAMPLES,
    ActivationInfo,
    ActivationList,
    EvalRequest,
    EvalResponse,
)
from service.activation_eval import activation_info, catalogue_listing, evaluate, find_activation
from service.errors import UnsupportedMediaType

router = APIRouter(tags=["activations"])

_ERRORS: dict[int | str, dict[str, str]] = {404: {"description": "Unknown activation."}}


async def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (``application/json`` or ``application/*+json``).

    FastAPI parses only those as JSON and hands any other body on as bytes, which would be
    reported as "body: Input should be a valid dictionary" instead of the real mistake. A
    dependency runs before body validation errors are reported, so this answers first.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    if maintype != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise UnsupportedMediaType(
            'send the body as JSON with Content-Type: application/json, e.g. {"x": [1.0, 2.0]}',
            code="unsupported_content_type",
        )


@router.get("/v1/activations", summary="List the activation catalogue")
def list_activations() -> ActivationList:
    """Every activation with its formula, parameters (defaults, bounds, choices) and properties."""
    return catalogue_listing()


@router.get("/v1/activations/{name}", summary="Describe one activation", responses=_ERRORS)
def describe_activation(name: str) -> ActivationInfo:
    """Aliases (e.g. ``swish``) and any letter case resolve to the catalogue name."""
    return activation_info(find_activation(name).name)


@router.post(
    "/v1/activations/{name}/eval",
    summary="Evaluate an activation and its derivative",
    responses={
        **_ERRORS,
        415: {"description": "The body is not declared as application/json."},
        422: {"description": "Invalid points or parameters."},
    },
    dependencies=[Depends(require_json)],
)
def evaluate_activation(
    name: str, request: Annotated[EvalRequest, Body(openapi_examples=EVAL_EXAMPLES)]
) -> EvalResponse:
    """``y = f(x)`` and ``dy`` (the derivative) at the given points or over a range.

    Finite input only (NaN/Infinity are a 422), |x| ≤ 1e6, at most 100 000 numbers; a body over
    3 000 000 bytes is a 413, one not sent as ``application/json`` a 415. ``softmax``
    takes a vector or a matrix with ``params.axis``; ``maxout`` takes a flat list (length a
    multiple of k) or a list of groups.
    """
    return evaluate(find_activation(name), request)
