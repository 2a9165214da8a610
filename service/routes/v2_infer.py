"""POST /v2/models/{name}[/versions/{version}]/infer: JSON or binary-extension bodies."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.body_budget import BodyReservation, read_reserved
from service.classify import Deadline
from service.deps import BodyReservationDep, ExecutorDep, MetricsDep, RegistryDep, SettingsDep
from service.imaging import DecodeLimits
from service.v2 import docs
from service.v2.binary import HEADER_LENGTH, OCTET_STREAM
from service.v2.infer import InferBody, InferContext, InferResult, infer
from service.v2.models import resolve_model
from service.v2.state import StatisticsDep

router = APIRouter(tags=["open inference protocol (v2)"])


def _response(result: InferResult) -> Response:
    if not result.binary:
        return Response(result.header, media_type="application/json")
    return Response(
        result.header + b"".join(result.tails),
        media_type=OCTET_STREAM,
        headers={HEADER_LENGTH: str(len(result.header))},
    )


async def _infer(
    request: Request,
    name: str,
    version: str | None,
    *,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    statistics: StatisticsDep,
    reservation: BodyReservation,
) -> Response:
    received = time.perf_counter_ns()
    body = InferBody(
        await read_reserved(request, reservation),
        header_length=request.headers.get(HEADER_LENGTH),
        content_encoding=request.headers.get("content-encoding"),
    )
    context = InferContext(
        limits=DecodeLimits(settings.max_pixels, settings.max_frames),
        max_batch_size=settings.max_images_per_request,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        statistics=statistics,
        on_inflated=reservation.add,
    )
    submitted = time.perf_counter_ns()

    def work(deadline: Deadline) -> InferResult:
        queued = time.perf_counter_ns() - submitted
        model = resolve_model(registry, name, version)
        return infer(model, body, context, deadline, received_ns=received, queued_ns=queued)

    return _response(await executor.submit(work))


@router.post(
    "/v2/models/{name}/infer",
    summary="Inference (serving version)",
    description=docs.INFER_DESCRIPTION,
    openapi_extra=docs.INFER_OPENAPI,
    response_class=Response,
    responses=docs.infer_responses(400, 404, 408, 413, 415, 422, 503, 504),
)
async def infer_serving(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    statistics: StatisticsDep,
    reservation: BodyReservationDep,
) -> Response:
    return await _infer(
        request, name, None, registry=registry, settings=settings, metrics=metrics,
        executor=executor, statistics=statistics, reservation=reservation,
    )  # fmt: skip


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference (one version)",
    description=docs.INFER_DESCRIPTION,
    openapi_extra=docs.INFER_OPENAPI,
    response_class=Response,
    responses=docs.infer_responses(400, 404, 408, 413, 415, 422, 503, 504),
)
async def infer_version(
    name: str,
    version: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    statistics: StatisticsDep,
    reservation: BodyReservationDep,
) -> Response:
    return await _infer(
        request, name, version, registry=registry, settings=settings, metrics=metrics,
        executor=executor, statistics=statistics, reservation=reservation,
    )  # fmt: skip
