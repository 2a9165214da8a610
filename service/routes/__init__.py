"""Every router the app serves. Add a router with a one-line edit to ``ROUTERS``."""

from __future__ import annotations

from fastapi import APIRouter

from service.routes import (
    activations,
    classify,
    compare,
    health,
    inspect,
    linearity,
    metrics,
    models,
    v2,
)

ROUTERS: list[APIRouter] = [
    health.router,
    models.router,
    classify.router,
    metrics.router,
    activations.router,
    inspect.router,
    linearity.router,
    compare.router,
    v2.router,
]
