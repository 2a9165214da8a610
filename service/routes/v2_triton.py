"""Triton's model configuration and statistics extensions under /v2 (what perf_analyzer and
tritonclient read): ``/config`` and ``/stats``, for every model or one model or one version."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import RegistryDep, SettingsDep
from service.errors import NotFound
from service.runtime import ModelRuntime
from service.settings import Settings
from service.v2 import docs
from service.v2.metadata import model_config
from service.v2.models import parse_version, resolve_model
from service.v2.state import StatisticsDep

router = APIRouter(tags=["open inference protocol (v2)"])


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
