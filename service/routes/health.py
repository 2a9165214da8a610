"""Liveness and readiness: answered on the event loop at once, never behind inference work."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import RegistryDep

router = APIRouter(tags=["health"])


@router.get(
    "/health/live",
    summary="Liveness: the process answers",
    responses={200: {"content": {"application/json": {"example": {"status": "live"}}}}},
)
async def live() -> JSONResponse:
    return JSONResponse({"status": "live"})


@router.get(
    "/health/ready",
    summary="Readiness: startup loading is done and at least one model serves",
    description=(
        "200 once every startup model has been loaded and warmed or skipped, and at least one "
        "serves. A model file that fails verification is skipped (logged, counted in "
        "`skipped`), not a reason to take the server out of rotation: the valid models serve."
    ),
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"status": "ready", "models": ["tiny-relu"], "skipped": 0}
                }
            }
        },
        503: {
            "description": "Still loading, or no valid model (with Retry-After).",
            "content": {
                "application/json": {"example": {"status": "loading", "models": [], "skipped": 0}}
            },
        },
    },
)
async def ready(registry: RegistryDep) -> JSONResponse:
    if registry.ready:
        return JSONResponse(
            {"status": "ready", "models": registry.names(), "skipped": len(registry.skipped)}
        )
    loading = not registry.startup_done.is_set()
    return JSONResponse(
        {
            "status": "loading" if loading else "no_valid_model",
            "models": registry.names(),
            "skipped": len(registry.skipped),
        },
        status_code=503,
        headers={"Retry-After": "1" if loading else "30"},
    )
