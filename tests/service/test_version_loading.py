"""Versions loaded on demand: one load per version, no lock held while loading, reloads win."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from service.errors import NotFound
from service.registry import ModelRegistry
from service.repository import ModelFile
from service.runtime import ModelLoadError, ModelRuntime
from service.settings import Settings

MakeModel = Callable[..., Any]


def _registry(models_dir: Path) -> ModelRegistry:
    registry = ModelRegistry(Settings(models_dir=models_dir, warmup_runs=0))
    registry.load_startup_models()
    return registry


class GatedLoads:
    """Replaces ``registry._load``: counts loads per version and holds ``gated`` ones at a gate."""

    def __init__(self, registry: ModelRegistry, gated: int, fail: bool = False) -> None:
        self.real = registry._load
        self.gated, self.fail = gated, fail
        self.calls: list[int] = []
        self.entered, self.gate = threading.Event(), threading.Event()

    def __call__(self, model_file: ModelFile) -> ModelRuntime:
        self.calls.append(model_file.version)
        if model_file.version == self.gated:
            self.entered.set()
            assert self.gate.wait(30), "the test never opened the gate"
            if self.fail:
                raise ModelLoadError("the file is not a model")
        return self.real(model_file)


@contextmanager
def calling(function: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """Runs ``function`` in a thread; the dict gets its ``result`` or ``error`` once joined."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = function()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    out["thread"] = thread
    yield out
    thread.join(30)
    assert not thread.is_alive(), "the call never returned"


@pytest.fixture
def three_versions(model_repo_copy: Path, make_model: MakeModel) -> Path:
    make_model(model_repo_copy, "tiny-relu", "relu", 3, seed=3)  # serves 3; 1 and 2 on demand
    return model_repo_copy


def test_a_load_in_progress_does_not_hold_up_a_cached_version(three_versions: Path) -> None:
    registry = _registry(three_versions)
    cached = registry.get("tiny-relu", 1)
    loads = registry._load = GatedLoads(registry, gated=2)  # type: ignore[method-assign]
    with calling(lambda: registry.get("tiny-relu", 2)) as loading:
        assert loads.entered.wait(30)
        with calling(lambda: registry.get("tiny-relu", 1)) as other:
            pass  # joined while version 2 is still held at the gate
        assert other["result"] is cached and loading["thread"].is_alive()
        loads.gate.set()
    assert loading["result"].version == 2 and loads.calls == [2]


def test_concurrent_requests_for_one_version_share_one_load(three_versions: Path) -> None:
    registry = _registry(three_versions)
    loads = registry._load = GatedLoads(registry, gated=2)  # type: ignore[method-assign]
    with calling(lambda: registry.get("tiny-relu", 2)) as leader:
        assert loads.entered.wait(30)
        with calling(lambda: registry.get("tiny-relu", 2)) as follower:
            loads.gate.set()
    assert follower["result"] is leader["result"] and loads.calls == [2]
    assert registry.get("tiny-relu", 2) is leader["result"]  # and it is cached


def test_a_failed_load_fails_every_waiter_and_the_version_is_withdrawn(
    three_versions: Path,
) -> None:
    registry = _registry(three_versions)
    loads = registry._load = GatedLoads(registry, gated=2, fail=True)  # type: ignore[method-assign]
    with calling(lambda: registry.get("tiny-relu", 2)) as leader:
        assert loads.entered.wait(30)
        with calling(lambda: registry.get("tiny-relu", 2)) as follower:
            loads.gate.set()
    for call in (leader, follower):
        assert isinstance(call["error"], NotFound)
        assert "cannot be served (the file is not a model)" in str(call["error"])
    assert registry.available_versions("tiny-relu") == (1, 3) and loads.calls == [2]
    with pytest.raises(NotFound, match="version 2 of model 'tiny-relu' is not available"):
        registry.get("tiny-relu", 2)
    assert registry._extra.building == 0


def test_a_load_that_a_reload_overtakes_is_served_but_not_kept(three_versions: Path) -> None:
    registry = _registry(three_versions)
    loads = registry._load = GatedLoads(registry, gated=2)  # type: ignore[method-assign]
    with calling(lambda: registry.get("tiny-relu", 2)) as loading:
        assert loads.entered.wait(30)
        registry.reload()  # may have found a different repository: the load is stale
        loads.gate.set()
    assert loading["result"].version == 2
    assert ("tiny-relu", 2) not in registry._extra
    again = registry.get("tiny-relu", 2)
    assert again is not loading["result"] and loads.calls == [2, 2]
