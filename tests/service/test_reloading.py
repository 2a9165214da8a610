"""Reload by polling the repository, and reload requests coalescing on one thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import onnxruntime as ort
import pytest
from conftest import make_settings, running_app
from service_images import gradient_rgb, png

from service.inspection_sessions import InspectionCache, InspectionSession
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.reloading import Reloader
from service.runtime import ModelRuntime
from service.settings import Settings


def test_polling_picks_up_a_new_version(model_repo_copy: Path, make_model: object) -> None:
    with running_app(make_settings(model_repo_copy, reload_poll_s=0.2)) as client:
        assert client.get("/v1/models/tiny-tanh").json()["version"] == 1
        make_model(model_repo_copy, "tiny-tanh", "tanh", 2, seed=3)  # type: ignore[operator]
        deadline = time.monotonic() + 60
        while client.get("/v1/models/tiny-tanh").json()["version"] != 2:
            assert time.monotonic() < deadline, "the poller did not pick up version 2"
            time.sleep(0.1)
        response = client.post(
            "/v1/models/tiny-tanh/classify",
            content=png(gradient_rgb()),
            headers={"content-type": "image/png"},
        )
        assert (response.status_code, response.json()["version"]) == (200, 2)
        assert client.get("/v1/models/tiny-tanh").json()["versions"] == [1, 2]


def test_reload_requests_coalesce(model_repo: Path) -> None:
    registry = ModelRegistry(Settings(models_dir=model_repo, warmup_runs=0))
    registry.load_startup_models()
    calls = 0
    entered = threading.Event()
    release = threading.Event()
    original = registry.reload

    def slow_reload() -> object:
        nonlocal calls
        calls += 1
        entered.set()
        release.wait(30)
        return original()

    registry.reload = slow_reload  # type: ignore[method-assign]
    reloader = Reloader(registry, Metrics())
    reloader.request_reload()
    assert entered.wait(30)
    for _ in range(5):  # arrive while the first reload runs: one more pass, not five
        reloader.request_reload()
    release.set()
    deadline = time.monotonic() + 30
    while reloader._worker is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert calls == 2


def test_a_reload_drops_the_inspection_session_of_the_superseded_version(
    model_repo_copy: Path, make_model: object
) -> None:
    with running_app(make_settings(model_repo_copy)) as client:
        app = client.app
        response = client.post(
            "/v1/models/tiny-tanh/activations",
            content=png(gradient_rgb()),
            headers={"content-type": "image/png"},
        )
        assert (response.status_code, response.json()["version"]) == (200, 1)
        cache = app.state.inspection_cache  # type: ignore[attr-defined]
        old = app.state.registry.get("tiny-tanh")  # type: ignore[attr-defined]
        assert len(cache) == 1
        make_model(model_repo_copy, "tiny-tanh", "tanh", 2, seed=3)  # type: ignore[operator]
        reloader = app.state.reloader  # type: ignore[attr-defined]
        reloader.request_reload()
        deadline = time.monotonic() + 60
        while reloader._worker is not None:  # the pass, and its after-reload steps, are done
            assert time.monotonic() < deadline, "the reload did not finish"
            time.sleep(0.02)
        assert app.state.registry.get("tiny-tanh").version == 2  # type: ignore[attr-defined]
        assert len(cache) == 0  # version 1's inspection session is gone with it
        assert old.version == 1
        again = client.post(
            "/v1/models/tiny-tanh/activations",
            content=png(gradient_rgb()),
            headers={"content-type": "image/png"},
        )
        assert (again.status_code, again.json()["version"]) == (200, 2)
        assert len(cache) == 1


def test_inspection_sessions_of_served_models_survive_a_reload(model_repo_copy: Path) -> None:
    with running_app(make_settings(model_repo_copy)) as client:
        app = client.app
        for name in ("tiny-tanh", "tiny-relu"):
            response = client.post(
                f"/v1/models/{name}/activations",
                content=png(gradient_rgb()),
                headers={"content-type": "image/png"},
            )
            assert response.status_code == 200
        cache = app.state.inspection_cache  # type: ignore[attr-defined]
        reloader = app.state.reloader  # type: ignore[attr-defined]
        reloader.request_reload()
        deadline = time.monotonic() + 60
        while reloader._worker is not None:
            assert time.monotonic() < deadline, "the reload did not finish"
            time.sleep(0.02)
        assert len(cache) == 2


def test_an_inspection_built_across_a_reload_serves_its_request_but_is_not_cached(
    model_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request holding the superseded runtime finishes, and its session does not linger."""
    registry = ModelRegistry(make_settings(model_repo, intra_op_threads=1))
    registry.load_startup_models()
    superseded, served = registry.get("tiny-tanh"), registry.get("tiny-relu")
    cache = InspectionCache(intra_op_threads=1, inter_op_threads=1, budget_bytes=10**9)
    live_after_reload = {(served.name, served.version, served.digest)}

    class ReloadDuringBuild(InspectionSession):
        def __init__(self, runtime: ModelRuntime, options: ort.SessionOptions) -> None:
            if runtime is superseded:
                cache.retain(live_after_reload)  # the reload's after-step runs mid-build
            super().__init__(runtime, options)

    monkeypatch.setattr("service.inspection_sessions.InspectionSession", ReloadDuringBuild)
    session = cache.get(superseded)
    assert session.key == (superseded.name, superseded.version, superseded.digest)  # served
    assert len(cache) == 0  # but the superseded model's session is not kept

    kept = cache.get(served)  # a live model built after the reload is cached as before
    assert len(cache) == 1
    assert cache.get(served) is kept
    monkeypatch.undo()
    again = cache.get(superseded)  # no reload overtakes this build: cached like any other
    assert again is not session and len(cache) == 2
