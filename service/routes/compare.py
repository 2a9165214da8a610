"""POST /v1/compare: one image through every loaded model (or a listed subset), side by side."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from service.analysis_api import CompareEntry, CompareJSON, CompareResponse
from service.classify import (
    DEFAULT_TOP_K,
    Classification,
    Deadline,
    classify_decoded,
)
from service.classify_request import ClassifyOptions, RawPayload, decode_payload, read_payload
from service.deps import BodyReservationDep, ExecutorDep, MetricsDep, RegistryDep, SettingsDep
from service.errors import Unavailable, invalid_body
from service.imaging import DecodeLimits, decode_image, draft_size
from service.routes.analysis_docs import ERROR_RESPONSES, image_request_body
from service.routes.classify import IncludeProbabilities, TopK

router = APIRouter(tags=["compare"])

# Multipart option fields: no 'version', compare uses each model's serving version.
_FIELDS = ("top_k", "include_probabilities")
_REQUEST_BODY = image_request_body(CompareJSON, _FIELDS)

Models = Annotated[
    list[str] | None,
    Query(description="Models to compare, repeated or comma-separated (default: all loaded)."),
]


def _read_body(payload: RawPayload) -> tuple[bytes, ClassifyOptions, list[str]]:
    """(image, options, models named in the body) from any of the three request forms."""
    if payload.json_body is None:
        images, options = decode_payload(payload, 1)
        return images[0], options, []
    try:
        document = CompareJSON.model_validate_json(payload.json_body)
    except ValidationError as exc:
        raise invalid_body(exc) from None
    options = ClassifyOptions(document.top_k, document.include_probabilities)
    return document.image_bytes(), options, document.models or []


def _model_names(*lists: list[str]) -> list[str]:
    """Requested names in order, comma-separated values split, duplicates and blanks dropped."""
    names = [n.strip() for group in lists for item in group for n in item.split(",")]
    return list(dict.fromkeys(n for n in names if n))


@router.post(
    "/v1/compare",
    summary="Classify one image with several models, side by side",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=ERROR_RESPONSES,
)
async def compare_models(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    reservation: BodyReservationDep,
    models: Models = None,
    top_k: TopK = None,
    include_probabilities: IncludeProbabilities = None,
) -> CompareResponse:
    """Each model's name, version, activation, top-k and inference time, and the total time.
    Models come from `?models=` (any body form) or the JSON body's `models`; an unknown name is
    a 404 naming it, checked before anything runs."""
    payload = await read_payload(
        request, 1, settings.max_body_bytes, _FIELDS, reservation=reservation
    )
    query = ClassifyOptions(top_k, include_probabilities)
    limits = DecodeLimits(settings.max_pixels, settings.max_frames)

    def work(deadline: Deadline) -> CompareResponse:
        started = time.perf_counter()
        image, body_options, body_models = _read_body(payload)
        options = body_options.merged_over(query)
        if not registry.startup_done.is_set():
            raise Unavailable("models are still loading; retry shortly", code="not_ready")
        if not registry.ready:
            raise Unavailable("no valid model is loaded", code="not_ready", retry_after=30)
        names = _model_names(models or [], body_models) or registry.names()
        runtimes = [registry.get(name) for name in names]
        # One decode serves every model: at the largest size any of them needs (square sizes).
        min_side = max(draft_size(runtime.card)[0] for runtime in runtimes)
        decode_started = time.perf_counter()
        decoded = [decode_image(image, limits, min_size=(min_side, min_side))]
        decode_ms = (time.perf_counter() - decode_started) * 1e3
        results: list[Classification] = []
        for runtime in runtimes:
            result = classify_decoded(runtime, decoded, decode_ms=decode_ms, deadline=deadline)
            # the shared decode is counted once, with the first model
            metrics.record_timings(runtime.name, 1, result.timings, decode_recorded=bool(results))
            results.append(result)
        k, with_probabilities = options.top_k or DEFAULT_TOP_K, bool(options.include_probabilities)
        entries = [
            CompareEntry.of(r, top_k=k, include_probabilities=with_probabilities) for r in results
        ]
        return CompareResponse(
            results=entries,
            top1_agree=len({e.top_k[0].label for e in entries}) == 1,
            total_ms=round((time.perf_counter() - started) * 1e3, 3),
        )

    result: Any = await executor.submit(work)
    return result
