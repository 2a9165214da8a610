"""Activation catalogue and evaluation: /v1/activations (no model needed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from service.activation_api import (
    EVAL_EXAMPLES,
    ActivationInfo,
    ActivationList,
    EvalRequest,
    EvalResponse,
)
from service.activation_eval import activation_info, catalogue_listing, evaluate, find_activation

router = APIRouter(tags=["activations"])

_ERRORS: dict[int | str, dict[str, str]] = {404: {"description": "Unknown activation."}}


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
    responses={**_ERRORS, 422: {"description": "Invalid points or parameters."}},
)
def evaluate_activation(
    name: str, request: Annotated[EvalRequest, Body(openapi_examples=EVAL_EXAMPLES)]
) -> EvalResponse:
    """``y = f(x)`` and ``dy`` (the derivative) at the given points or over a range.

    Finite input only (NaN/Infinity are a 422), |x| ≤ 1e6, at most 100 000 numbers. ``softmax``
    takes a vector or a matrix with ``params.axis``; ``maxout`` takes a flat list (length a
    multiple of k) or a list of groups.
    """
    return evaluate(find_activation(name), request)
