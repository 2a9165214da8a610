"""Open Inference Protocol (KServe v2): health, server and model metadata, readiness, Triton's
model configuration and statistics (``service.routes.v2_triton``) and inference
(``service.routes.v2_infer``) are included here. Errors are
``{"error": "<message>"}`` (``service.errors`` renders every /v2 path that way)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from fastapi import APIRouter

from service.deps import RegistryDep
from service.errors import Unavailable
from service.routes import v2_infer, v2_triton
from service.v2 import docs
from service.v2.metadata import model_metadata, server_metadata
from service.v2.models import resolve_model

router = APIRouter(tags=["open inference protocol (v2)"])
_READY = {"name": "tiny-relu", "ready": True}
router.include_router(v2_triton.router)  # before /v2/models/{name}: "/v2/models/stats" first
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
