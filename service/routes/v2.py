"""Open Inference Protocol (KServe v2): health, server and model metadata, readiness, Triton's
model configuration and statistics. Inference is in ``service.routes.v2_infer``. Errors are
``{"error": "<message>"}`` (``service.errors`` renders every /v2 path that way)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from fastapi import APIRouter

from service.deps import RegistryDep, SettingsDep
from service.errors import NotFound, Unavailable
from service.routes import v2_infer
from service.runtime import ModelRuntime
from service.settings import Settings
from service.v2 import docs
from service.v2.metadata import model_config, model_metadata, server_metadata
from service.v2.models import parse_version, resolve_model
from service.v2.state import StatisticsDep

router = APIRouter(tags=["open inference protocol (v2)"])
_READY = {"name": "tiny-relu", "ready": True}
router.include_router(v2_infer.router)


def _server_version() -> str:
    try:
        return package_version("actlab")
    except PackageNotFoundError:
        return "0"


@router.get(
    "/v2",
    summary="Server metadata: name, version, protocol extensions",
    responses=docs.responses(docs.SERVER),
)
async def server() -> dict[str, object]:
    return server_metadata(_server_version())


@router.get("/v2/health/live", summary="Server liveness", responses=docs.responses({"live": True}))
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/v2/health/ready",
    summary="Server readiness: every startup model is warm (else 503)",
    responses=docs.responses({"ready": True}, 503),
)
async def ready(registry: RegistryDep) -> dict[str, bool]:
    if registry.ready:
        return {"ready": True}
    if not registry.startup_done.is_set():
        raise Unavailable("models are still loading; retry shortly", code="not_ready")
    raise Unavailable("no valid model is loaded", code="not_ready", retry_after=30)


@router.get(
    "/v2/models/stats",
    summary="Inference statistics of every served model",
    responses=docs.responses(docs.STATS),
)
def all_stats(registry: RegistryDep, statistics: StatisticsDep) -> dict[str, object]:
    keys = []
    for name, model in sorted(registry.serving().items()):
        versions = set(statistics.recorded_versions(name)) | {model.version}
        keys += [(name, v) for v in sorted(versions)]
    return {"model_stats": statistics.model_stats(keys)}


@router.get(
    "/v2/models/{name}",
    summary="Model metadata (serving version)",
    responses=docs.responses(docs.METADATA, 404, 503),
)
def metadata(name: str, registry: RegistryDep) -> dict[str, object]:
    return model_metadata(resolve_model(registry, name, None), registry.available_versions(name))


@router.get(
    "/v2/models/{name}/versions/{version}",
    summary="Model metadata (one version)",
    responses=docs.responses(docs.METADATA, 404, 503),
)
def version_metadata(name: str, version: str, registry: RegistryDep) -> dict[str, object]:
    model = resolve_model(registry, name, version)
    return model_metadata(model, registry.available_versions(name))


@router.get(
    "/v2/models/{name}/ready",
    summary="Model readiness",
    responses=docs.responses(_READY, 404, 503),
)
def model_ready(name: str, registry: RegistryDep) -> dict[str, object]:
    return {"name": resolve_model(registry, name, None).name, "ready": True}


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model version readiness (a non-serving version is loaded on first use)",
    responses=docs.responses(_READY, 404, 503),
)
def version_ready(name: str, version: str, registry: RegistryDep) -> dict[str, object]:
    return {"name": resolve_model(registry, name, version).name, "ready": True}


def _config(model: ModelRuntime, settings: Settings) -> dict[str, object]:
    batching = settings.batch_max_size > 1
    delay_us = round(settings.batch_max_wait_ms * 1000) if batching else None
    return model_config(model, settings.max_images_per_request, delay_us)


@router.get(
    "/v2/models/{name}/config",
    summary="Triton model configuration",
    responses=docs.responses(docs.CONFIG, 404, 503),
)
def config(name: str, registry: RegistryDep, settings: SettingsDep) -> dict[str, object]:
    return _config(resolve_model(registry, name, None), settings)


@router.get(
    "/v2/models/{name}/versions/{version}/config",
    summary="Triton model configuration (one version)",
    responses=docs.responses(docs.CONFIG, 404, 503),
)
def version_config(
    name: str, version: str, registry: RegistryDep, settings: SettingsDep
) -> dict[str, object]:
    return _config(resolve_model(registry, name, version), settings)


@router.get(
    "/v2/models/{name}/stats",
    summary="Inference statistics of one model",
    responses=docs.responses(docs.STATS, 404, 503),
)
def stats(name: str, registry: RegistryDep, statistics: StatisticsDep) -> dict[str, object]:
    serving = resolve_model(registry, name, None)
    versions = sorted(set(statistics.recorded_versions(name)) | {serving.version})
    return {"model_stats": statistics.model_stats((name, v) for v in versions)}


@router.get(
    "/v2/models/{name}/versions/{version}/stats",
    summary="Statistics of one version",
    responses=docs.responses(docs.STATS, 404, 503),
)
def version_stats(
    name: str, version: str, registry: RegistryDep, statistics: StatisticsDep
) -> dict[str, object]:
    resolve_model(registry, name, None)
    number = parse_version(registry, name, version)
    known = set(registry.available_versions(name)) | set(statistics.recorded_versions(name))
    if number not in known:
        raise NotFound(
            f"model {name!r} has no version {number}; available versions: "
            f"{', '.join(str(v) for v in sorted(known))}",
            code="version_not_found",
        )
    return {"model_stats": statistics.model_stats([(name, number)])}
