"""GET /v1/models/{name}/linearity: is the served network one affine map? (service.linearity)"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.classify import Deadline
from service.deps import ExecutorDep, RegistryDep
from service.linearity import MAX_SAMPLES, probe_linearity
from service.linearity_api import LinearityResponse
from service.routes.analysis_docs import ERROR_RESPONSES
from service.routes.classify import Version

router = APIRouter(tags=["inspection"])

Samples = Annotated[
    int, Query(ge=1, le=MAX_SAMPLES, description="Random (x, y, z) triples to test.")
]
Seed = Annotated[int, Query(ge=0, le=2**32 - 1, description="Seed of the random inputs.")]


@router.get(
    "/v1/models/{name}/linearity",
    summary="Test whether a model is one affine map",
    responses={k: v for k, v in ERROR_RESPONSES.items() if k in (404, 422, 503, 504)},
)
async def model_linearity(
    name: str,
    registry: RegistryDep,
    executor: ExecutorDep,
    samples: Samples = 8,
    seed: Seed = 0,
    version: Version = None,
) -> LinearityResponse:
    """Run the model on random inputs x, y, z and on x + y − z and report how far the logits are
    from superposition. A ResNet whose activation is the identity collapses to one affine map,
    however deep (errors ~1e-6); ReLU and every other bending activation do not."""

    def work(deadline: Deadline) -> LinearityResponse:
        model = registry.get(name, version)
        probe = probe_linearity(model, samples=samples, seed=seed, deadline=deadline)
        return LinearityResponse.of(model, probe)

    result: Any = await executor.submit(work)
    return result
