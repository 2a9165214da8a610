"""POST /v1/models/{name}/classify and POST /v1/classify (the default model)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from service.body_budget import BodyReservation
from service.classify import DEFAULT_TOP_K, Deadline, classify_images
from service.classify_request import (
    MAX_TOP_K,
    ClassifyJSON,
    ClassifyOptions,
    RawPayload,
    decode_payload,
    read_payload,
)
from service.deps import BodyReservationDep, ExecutorDep, MetricsDep, RegistryDep, SettingsDep
from service.imaging import DecodeLimits
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.schemas import ClassifyResponse, ErrorResponse
from service.settings import Settings

router = APIRouter(tags=["classify"])

TopK = Annotated[
    int | None,
    Query(ge=1, le=MAX_TOP_K, description="Classes per image (default 5, clamped)."),
]
IncludeProbabilities = Annotated[
    bool | None, Query(description="Also return the full probability vector per image.")
]
Version = Annotated[
    int | None, Query(ge=1, description="Serve this version instead of the current one.")
]

_PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
                    "include_probabilities": {"type": "boolean"},
                    "version": {"type": "integer", "minimum": 1},
                },
                "required": ["file"],
            },
            "encoding": {"file": {"contentType": "image/jpeg, image/png, image/webp"}},
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {
            "schema": ClassifyJSON.model_json_schema(),
            "example": {"images": [f"data:image/png;base64,{_PNG_1PX}"], "top_k": 3},
        },
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ClassifyResponse,
        "content": {
            "application/json": {
                "example": {
                    "model": "tiny-relu",
                    "version": 2,
                    "predictions": [
                        {
                            "top_k": [
                                {"label": "cat", "index": 3, "probability": 0.71},
                                {"label": "dog", "index": 5, "probability": 0.2},
                            ]
                        }
                    ],
                    "timings_ms": {
                        "decode": 0.21,
                        "preprocess": 0.05,
                        "inference": 0.8,
                        "total": 1.1,
                    },
                }
            }
        },
    },
    400: {
        "model": ErrorResponse,
        "description": "Undecodable, truncated or empty image; bad base64.",
    },
    404: {"model": ErrorResponse, "description": "Unknown model or version."},
    408: {
        "model": ErrorResponse,
        "description": "The body stopped arriving for ACTLAB_BODY_TIMEOUT_S.",
    },
    413: {"model": ErrorResponse, "description": "Body over ACTLAB_MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "Image format or content type not allowed."},
    422: {"model": ErrorResponse, "description": "Invalid fields, too many pixels/frames/images."},
    503: {"model": ErrorResponse, "description": "Not ready or over capacity (Retry-After)."},
    504: {"model": ErrorResponse, "description": "Past ACTLAB_INFERENCE_TIMEOUT_S."},
}


async def classify_request(
    request: Request,
    name: str | None,
    query: ClassifyOptions,
    *,
    registry: ModelRegistry,
    settings: Settings,
    metrics: Metrics,
    executor: Any,
    reservation: BodyReservation,
) -> JSONResponse:
    """Read the body here (async), do everything CPU-bound on the inference executor."""
    payload: RawPayload = await read_payload(
        request,
        settings.max_images_per_request,
        settings.max_body_bytes,
        reservation=reservation,
    )
    limits = DecodeLimits(settings.max_pixels, settings.max_frames)

    def work(deadline: Deadline) -> dict[str, Any]:
        images, body_options = decode_payload(payload, settings.max_images_per_request)
        options = body_options.merged_over(query)
        model = registry.get(name if name is not None else registry.default_name(), options.version)
        result = classify_images(model, images, limits, deadline=deadline)
        metrics.record_timings(model.name, len(images), result.timings)
        return result.as_json(
            top_k=options.top_k or DEFAULT_TOP_K,
            include_probabilities=bool(options.include_probabilities),
        )

    return JSONResponse(await executor.submit(work))


@router.post(
    "/v1/models/{name}/classify",
    summary="Classify images with one model",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=_RESPONSES,
    response_model=None,
)
async def classify_with_model(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    reservation: BodyReservationDep,
    top_k: TopK = None,
    include_probabilities: IncludeProbabilities = None,
    version: Version = None,
) -> JSONResponse:
    """Send images as multipart `file` parts, one raw `image/*` body, or JSON base64 strings.

    Per image: the top-k classes `{label, index, probability}` (softmax, best first) and,
    if asked, the full probability vector; plus the model's name and version and timings.
    """
    query = ClassifyOptions(top_k, include_probabilities, version)
    return await classify_request(
        request, name, query, registry=registry, settings=settings, metrics=metrics,
        executor=executor, reservation=reservation,
    )  # fmt: skip


@router.post(
    "/v1/classify",
    summary="Classify images with the default model",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=_RESPONSES,
    response_model=None,
)
async def classify_default(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    reservation: BodyReservationDep,
    top_k: TopK = None,
    include_probabilities: IncludeProbabilities = None,
    version: Version = None,
) -> JSONResponse:
    """Like `/v1/models/{name}/classify` with `ACTLAB_DEFAULT_MODEL` (unset: the
    alphabetically first loaded model)."""
    query = ClassifyOptions(top_k, include_probabilities, version)
    return await classify_request(
        request, None, query, registry=registry, settings=settings, metrics=metrics,
        executor=executor, reservation=reservation,
    )  # fmt: skip
