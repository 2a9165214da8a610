"""Memory held by models loaded on demand: byte budgets, nothing kept alive, pages given back."""

from __future__ import annotations

import gc
import platform
import time
import weakref
from pathlib import Path

import onnx
import pytest

from service import memory
from service.inspection_sessions import InspectionCache, InspectionSession, with_extra_outputs
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.reloading import Reloader
from service.runtime import ModelRuntime
from service.settings import Settings


def _registry(models_dir: Path, **overrides: object) -> ModelRegistry:
    registry = ModelRegistry(Settings(models_dir=models_dir, warmup_runs=0, **overrides))
    registry.load_startup_models()
    return registry


def _size(runtime: ModelRuntime) -> int:
    return runtime.path.stat().st_size


def _gone(ref: weakref.ref[object]) -> bool:
    gc.collect()
    return ref() is None


def test_extra_outputs_are_appended_on_the_wire(model_repo: Path) -> None:
    path = model_repo / "tiny-relu" / "1" / "model.onnx"
    data = path.read_bytes()
    original = onnx.load_model_from_string(data)
    relus = [n.output[0] for n in original.graph.node if n.op_type == "Relu"][:2]
    assert len(relus) == 2
    assert with_extra_outputs(data, []) is data
    extended = onnx.load_model_from_string(with_extra_outputs(data, relus))
    assert [o.name for o in extended.graph.output] == [
        *(o.name for o in original.graph.output),
        *relus,
    ]
    # Everything else is the model as it was: same nodes, weights and card.
    assert extended.graph.node == original.graph.node
    assert extended.graph.initializer == original.graph.initializer
    assert extended.metadata_props == original.metadata_props


def test_inspection_sessions_stay_within_the_byte_budget(model_repo: Path) -> None:
    registry = _registry(model_repo)
    relu, tanh, sigmoid = (registry.get(n) for n in ("tiny-relu", "tiny-tanh", "tiny-sigmoid"))
    largest = max(_size(r) for r in (relu, tanh, sigmoid))
    assert 3 * min(_size(r) for r in (relu, tanh, sigmoid)) > 2 * largest
    cache = InspectionCache(1, 1, budget_bytes=2 * largest)
    first = cache.get(relu)
    second = cache.get(tanh)
    assert cache.get(relu) is first  # now tanh is the least recently used
    dropped = weakref.ref(second)
    del second
    cache.get(sigmoid)
    assert len(cache) == 2 and cache.size_bytes <= cache.budget_bytes
    assert cache.get(relu) is first
    assert _gone(dropped)  # the evicted session's memory is freed, not merely forgotten


def test_the_latest_inspection_session_stays_even_over_budget(model_repo: Path) -> None:
    registry = _registry(model_repo)
    cache = InspectionCache(1, 1, budget_bytes=0)
    cache.get(registry.get("tiny-relu"))
    latest = cache.get(registry.get("tiny-tanh"))
    assert len(cache) == 1 and cache.get(registry.get("tiny-tanh")) is latest


def test_an_inspection_session_does_not_keep_its_runtime_alive(model_repo: Path) -> None:
    """An evicted or reloaded model's serving session must not live on inside the cache."""
    path = model_repo / "tiny-relu" / "1" / "model.onnx"
    served = _registry(model_repo).get("tiny-relu", 1)
    runtime = ModelRuntime.load(
        path, name="tiny-relu", version=1, digest=served.digest, intra_op_threads=1
    )
    cache = InspectionCache(1, 1, budget_bytes=10**9)
    session = cache.get(runtime)
    assert isinstance(session, InspectionSession) and session.size_bytes == path.stat().st_size
    ref = weakref.ref(runtime)
    del runtime
    assert _gone(ref)
    assert len(cache) == 1


def test_other_versions_stay_within_the_byte_budget(
    model_repo_copy: Path, make_model: object
) -> None:
    for version in (3, 4):  # tiny-relu serves 4; versions 1, 2 and 3 load on demand
        make_model(model_repo_copy, "tiny-relu", "relu", version, seed=version)  # type: ignore[operator]
    sizes = [
        (model_repo_copy / "tiny-relu" / str(v) / "model.onnx").stat().st_size for v in (1, 2, 3)
    ]
    assert 3 * min(sizes) > 2 * max(sizes)
    registry = _registry(model_repo_copy, version_cache_bytes=2 * max(sizes))
    assert registry.get("tiny-relu").version == 4
    one, two = registry.get("tiny-relu", 1), registry.get("tiny-relu", 2)
    assert registry.get("tiny-relu", 1) is one  # both fit; 2 is now the least recently used
    dropped = weakref.ref(two)
    del two
    three = registry.get("tiny-relu", 3)
    assert registry.get("tiny-relu", 1) is one and registry.get("tiny-relu", 3) is three
    assert _gone(dropped)
    again = registry.get("tiny-relu", 2)  # loaded again, on demand, and served
    assert again.version == 2


def test_with_no_version_budget_only_the_latest_other_version_stays(
    model_repo_copy: Path,
) -> None:
    registry = _registry(model_repo_copy, version_cache_bytes=0, model_versions="tiny-relu=2")
    one = registry.get("tiny-relu", 1)
    assert registry.get("tiny-relu", 1) is one
    assert registry.get("tiny-relu", 2) is registry.get("tiny-relu")  # the served one


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_memory_is_given_back_with_glibc() -> None:
    assert memory._malloc_trim() is not None
    assert isinstance(memory.release_free_memory(), bool)


def test_reloads_and_evictions_give_memory_back(
    model_repo_copy: Path, make_model: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr("service.reloading.release_free_memory", lambda: calls.append("reload"))
    # versions and inspection sessions evict through service.load_once_cache
    monkeypatch.setattr(
        "service.load_once_cache.release_free_memory", lambda: calls.append("evict")
    )
    make_model(model_repo_copy, "tiny-relu", "relu", 3, seed=3)  # type: ignore[operator]
    registry = _registry(model_repo_copy, version_cache_bytes=0)
    registry.get("tiny-relu", 1)
    cache = InspectionCache(1, 1, budget_bytes=0)
    cache.get(registry.get("tiny-relu"))
    assert calls == []  # nothing was evicted yet
    registry.get("tiny-relu", 2)
    assert calls == ["evict"]  # version 1 made room for version 2
    cache.get(registry.get("tiny-tanh"))
    assert calls == ["evict", "evict"]  # tiny-relu's inspection session for tiny-tanh's

    reloader = Reloader(registry, Metrics())
    reloader.request_reload()
    deadline = time.monotonic() + 60
    while reloader._worker is not None:
        assert time.monotonic() < deadline, "the reload did not finish"
        time.sleep(0.02)
    assert calls == ["evict", "evict", "reload"]
