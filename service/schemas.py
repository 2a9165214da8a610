"""Response shapes of the model and classify routes, for tests and the OpenAPI docs."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.modelcard import ModelCard


class ErrorDetail(BaseModel):
    code: str = Field(examples=["model_not_found"])
    message: str = Field(examples=["no model named 'x'; loaded models: tiny-relu"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class InputSpecOut(BaseModel):
    name: str = Field(examples=["input"])
    shape: list[int | str] = Field(examples=[["batch", 3, 32, 32]])
    dtype: str = Field(examples=["float32"])
    resize_policy: str
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ModelSummary(BaseModel):
    name: str = Field(examples=["tiny-relu"])
    version: int = Field(examples=[2])
    versions: list[int] = Field(
        description="Versions present in the repository.", examples=[[1, 2]]
    )
    architecture: str = Field(examples=["resnet8"])
    activation: str = Field(examples=["relu"])
    num_classes: int = Field(examples=[10])
    dataset: str
    val_accuracy: float | None


class ModelList(BaseModel):
    models: list[ModelSummary]
    default_model: str | None = Field(description="The model POST /v1/classify uses.")


class ModelDetail(BaseModel):
    name: str
    version: int
    versions: list[int]
    sha256: str
    input: InputSpecOut
    labels: list[str]
    card: ModelCard


class ClassEntry(BaseModel):
    label: str = Field(examples=["cat"])
    index: int = Field(examples=[3])
    probability: float = Field(examples=[0.91])


class Prediction(BaseModel):
    top_k: list[ClassEntry]
    probabilities: list[float] | None = Field(
        default=None, description="Full softmax vector, when include_probabilities is true."
    )


class TimingsOut(BaseModel):
    decode: float
    preprocess: float
    inference: float
    total: float


class ClassifyResponse(BaseModel):
    model: str = Field(examples=["tiny-relu"])
    version: int = Field(examples=[2])
    predictions: list[Prediction] = Field(description="One per image, in request order.")
    timings_ms: TimingsOut = Field(description="Milliseconds for the whole batch.")
