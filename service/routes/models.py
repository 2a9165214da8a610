"""The served models: list them, and describe one (card, versions, input spec, labels)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import RegistryDep
from service.errors import NotFound
from service.registry import ModelRegistry
from service.runtime import ModelRuntime
from service.schemas import ErrorResponse, InputSpecOut, ModelDetail, ModelList, ModelSummary

router = APIRouter(tags=["models"])

Version = Annotated[
    int | None, Query(ge=1, description="Describe this version instead of the current one.")
]

_SUMMARY_EXAMPLE = {
    "name": "tiny-relu",
    "version": 2,
    "versions": [1, 2],
    "architecture": "resnet8",
    "activation": "relu",
    "num_classes": 10,
    "dataset": "cifar10",
    "val_accuracy": 0.71,
}
_LIST_EXAMPLE = {"models": [_SUMMARY_EXAMPLE], "default_model": "tiny-relu"}
_DETAIL_EXAMPLE = {
    "name": "tiny-relu",
    "version": 2,
    "versions": [1, 2],
    "sha256": "67bf8afd7064ad9df71a5b04ae3c9f228121615831d39d7c6537080f699a7b05",
    "input": {
        "name": "input",
        "shape": ["batch", 3, 32, 32],
        "dtype": "float32",
        "resize_policy": "shorter_side_then_center_crop",
        "resize_size": 36,
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.247, 0.2435, 0.2616],
    },
    "labels": ["airplane", "automobile", "bird", "..."],
    "card": {"name": "tiny-relu", "version": 2, "architecture": "resnet8", "...": "..."},
}


def _example(body: object) -> dict[str, object]:
    return {"content": {"application/json": {"example": body}}}


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


@router.get(
    "/v1/models", summary="List the served models", responses={200: _example(_LIST_EXAMPLE)}
)
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
    responses={
        200: _example(_DETAIL_EXAMPLE),
        404: {"model": ErrorResponse, "description": "Unknown model or version."},
        422: {"model": ErrorResponse, "description": "version is not an integer ≥ 1."},
    },
)
def describe_model(name: str, registry: RegistryDep, version: Version = None) -> ModelDetail:
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
