"""Typed dependencies for routes: env → Settings → app.state → ``Annotated[..., Depends()]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from service.body_budget import BodyBudget, BodyReservation
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings
from service.workers import InferenceExecutor


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_executor(request: Request) -> InferenceExecutor:
    return request.app.state.executor


def get_body_budget(request: Request) -> BodyBudget:
    return request.app.state.body_budget


async def body_reservation(request: Request) -> AsyncIterator[BodyReservation]:
    """This request's share of the body budget, released when the route is done with it
    (answer, error, client gone or deadline)."""
    reservation = BodyReservation(get_body_budget(request))
    try:
        yield reservation
    finally:
        reservation.release()


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ExecutorDep = Annotated[InferenceExecutor, Depends(get_executor)]
# scope="function": released as soon as the route returns or raises, before the answer is sent.
BodyReservationDep = Annotated[BodyReservation, Depends(body_reservation, scope="function")]
