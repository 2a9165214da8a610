"""Typed dependencies for routes: env → Settings → app.state → ``Annotated[..., Depends()]``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ExecutorDep = Annotated[InferenceExecutor, Depends(get_executor)]
