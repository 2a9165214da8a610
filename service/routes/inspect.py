"""POST /v1/models/{name}/activations: every activation site's statistics for one image."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.analysis_api import InspectionResponse
from service.classify import DEFAULT_TOP_K, Deadline
from service.classify_request import (
    MULTIPART_FIELDS,
    ClassifyJSON,
    ClassifyOptions,
    decode_payload,
    read_payload,
)
from service.deps import BodyReservationDep, ExecutorDep, MetricsDep, RegistryDep, SettingsDep
from service.imaging import DecodeLimits
from service.inspect import inspect_image
from service.inspection_sessions import InspectionCache
from service.routes.analysis_docs import ERROR_RESPONSES, image_request_body
from service.routes.classify import IncludeProbabilities, TopK, Version

router = APIRouter(tags=["inspection"])

# Every multipart option field: read_payload's default, MULTIPART_FIELDS, applies here.
_REQUEST_BODY = image_request_body(ClassifyJSON, MULTIPART_FIELDS)


async def get_inspection_cache(request: Request) -> InspectionCache:
    """The app's inspection cache (created with the app; the reloader prunes it)."""
    cache: InspectionCache = request.app.state.inspection_cache
    return cache


InspectionCacheDep = Annotated[InspectionCache, Depends(get_inspection_cache)]


@router.post(
    "/v1/models/{name}/activations",
    summary="Inspect a model's activations on one image",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=ERROR_RESPONSES,
)
async def inspect_model(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    reservation: BodyReservationDep,
    cache: InspectionCacheDep,
    top_k: TopK = None,
    include_probabilities: IncludeProbabilities = None,
    version: Version = None,
) -> InspectionResponse:
    """Send one image (multipart `file`, raw `image/*` body, or JSON base64) and get, for every
    activation site in graph order, mean, std, min, max, the fraction ≤ 0 (dead ReLU units) and
    the fraction saturated (bounded activations), plus the model's top-k classes."""
    payload = await read_payload(request, 1, settings.max_body_bytes, reservation=reservation)
    query = ClassifyOptions(top_k, include_probabilities, version)
    limits = DecodeLimits(settings.max_pixels, settings.max_frames)

    def work(deadline: Deadline) -> InspectionResponse:
        images, body_options = decode_payload(payload, 1)
        options = body_options.merged_over(query)
        model = registry.get(name, options.version)
        inspection = inspect_image(model, cache, images[0], limits, deadline=deadline)
        metrics.record_timings(model.name, 1, inspection.classification.timings)
        return InspectionResponse.of(
            inspection,
            top_k=options.top_k or DEFAULT_TOP_K,
            include_probabilities=bool(options.include_probabilities),
        )

    result: Any = await executor.submit(work)
    return result
