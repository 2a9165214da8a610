"""Service fixtures: the app under TestClient (lifespan running) on the tiny model repository."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def wait_until_started(client: TestClient, timeout_s: float = 60.0) -> None:
    """Wait for startup loading to finish (ready or definitively not ready)."""
    registry = client.app.state.registry  # type: ignore[attr-defined]
    if not registry.startup_done.wait(timeout_s):
        raise AssertionError("startup model loading did not finish")


@contextmanager
def running_app(settings: Settings) -> Iterator[TestClient]:
    """A TestClient with the lifespan running and startup loading finished."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_until_started(client)
        yield client


def app_held_at_startup(settings: Settings) -> tuple[FastAPI, threading.Event]:
    """An app whose startup model loading waits until the returned event is set (≤ 30 s)."""
    app = create_app(settings)
    registry = app.state.registry
    gate = threading.Event()
    original = registry.load_startup_models

    def held_startup() -> object:
        gate.wait(30)
        return original()

    registry.load_startup_models = held_startup
    return app, gate


def make_settings(models_dir: Path, **overrides: Any) -> Settings:
    return Settings(models_dir=models_dir, warmup_runs=1, **overrides)


@pytest.fixture(scope="module")
def client(model_repo: Path) -> Iterator[TestClient]:
    """The service on the shared tiny repository with default limits (module-scoped)."""
    with running_app(make_settings(model_repo)) as test_client:
        yield test_client
