"""The served models: list them, and describe one (card, versions, input spec, labels)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import RegistryDep
from service.errors import NotFound
from service.registry import ModelRegistry
from service.runtime import ModelRuntime
from service.schemas import ErrorResponse, InputSpecOut, ModelDetail, ModelList, ModelSummary

router = APIRouter(tags=["models"])


def _summary(registry: ModelRegistry, model: ModelRuntime) -> ModelSummary:
    card = model.card
    return ModelSummary(
        name=model.name,
        version=model.version,
        versions=list(registry.available_versions(model.name)),
        architecture=card.architecture,
        activation=card.activation,
        num_classes=card.num_classes,
        dataset=card.dataset,
        val_accuracy=card.val_accuracy,
    )


@router.get("/v1/models", summary="List the served models")
def list_models(registry: RegistryDep) -> ModelList:
    """Each model's served version, the versions in the repository, and its headline facts."""
    serving = registry.serving()
    default = None
    if registry.ready:
        try:
            default = registry.default_name()
        except NotFound:
            default = None
    return ModelList(
        models=[_summary(registry, serving[name]) for name in sorted(serving)],
        default_model=default,
    )


@router.get(
    "/v1/models/{name}",
    summary="Describe one model",
    responses={404: {"model": ErrorResponse, "description": "Unknown model or version."}},
)
def describe_model(name: str, registry: RegistryDep, version: int | None = None) -> ModelDetail:
    """The full model card, the versions available, the input spec and the labels."""
    model = registry.get(name, version)
    card = model.card
    height, width = card.input_size
    return ModelDetail(
        name=model.name,
        version=model.version,
        versions=list(registry.available_versions(name)),
        sha256=model.digest,
        input=InputSpecOut(
            name=model.input_spec.name,
            shape=["batch", 3, height, width],
            dtype="float32",
            resize_policy=card.resize_policy,
            resize_size=card.resize_size,
            mean=card.mean,
            std=card.std,
        ),
        labels=list(card.labels),
        card=card,
    )
