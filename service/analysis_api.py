"""Response models of model inspection (``/v1/models/{name}/activations``) and ``/v1/compare``.

The routes build these from ``service.inspect.Inspection`` and ``service.classify.Classification``
so the OpenAPI docs show exactly what is sent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.classify import Classification
from service.classify_request import MAX_TOP_K, decode_base64
from service.errors import Unprocessable
from service.inspect import Inspection, SiteStats
from service.schemas import ClassEntry, Prediction, TimingsOut

# The examples are real responses of the shipped models (models/resnet20-*-digits, labels "0" to
# "9", 16×16 input) to a handwritten 3 from scikit-learn's digits, with top_k=2, rounded.
_SIGMOID_TOP_K_EXAMPLE: list[Any] = [
    {"label": "3", "index": 3, "probability": 0.9774},
    {"label": "2", "index": 2, "probability": 0.0161},
]
_RELU_TOP_K_EXAMPLE: list[Any] = [
    {"label": "3", "index": 3, "probability": 0.9999},
    {"label": "2", "index": 2, "probability": 3.33e-05},
]
_TIMINGS_EXAMPLE: dict[str, Any] = {
    "decode": 0.18,
    "preprocess": 0.09,
    "inference": 0.37,
    "total": 0.63,
}


class SiteStatsOut(BaseModel):
    name: str = Field(description="Module path of the activation, e.g. 'layer2.0.act2'.")
    tensor: str = Field(description="ONNX tensor holding the site's output.")
    shape: list[int] = Field(description="Shape of the output for one image: [C, H, W].")
    mean: float
    std: float = Field(description="Population standard deviation.")
    min: float
    max: float
    fraction_nonpositive: float = Field(
        description="Fraction of values ≤ 0 (for ReLU: units that are dead for this image)."
    )
    fraction_channels_nonpositive: float = Field(
        description="Fraction of channels whose values are all ≤ 0 (whole dead feature maps)."
    )
    fraction_saturated: float | None = Field(
        description="Fraction within 1 % of the output range's width of either bound; null for "
        "activations unbounded on either side."
    )

    @classmethod
    def of(cls, stats: SiteStats) -> SiteStatsOut:
        return cls(
            name=stats.name,
            tensor=stats.tensor,
            shape=list(stats.shape),
            mean=stats.mean,
            std=stats.std,
            min=stats.min,
            max=stats.max,
            fraction_nonpositive=stats.fraction_nonpositive,
            fraction_channels_nonpositive=stats.fraction_channels_nonpositive,
            fraction_saturated=stats.fraction_saturated,
        )


def _prediction(result: Classification, top_k: int, include_probabilities: bool) -> Prediction:
    return Prediction(
        top_k=[ClassEntry.model_validate(entry) for entry in result.top_k(top_k)[0]],
        probabilities=result.probabilities[0].tolist() if include_probabilities else None,
    )


def _timings(result: Classification) -> TimingsOut:
    return TimingsOut.model_validate(result.timings.as_json())


class InspectionResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "resnet20-sigmoid-digits",
                    "version": 1,
                    "activation": "sigmoid",
                    "activation_params": {},
                    "saturation_bounds": [0.0, 1.0],
                    "sites": [
                        {
                            "name": "act1",
                            "tensor": "site:act1",
                            "shape": [16, 16, 16],
                            "mean": 0.5108,
                            "std": 0.2225,
                            "min": 0.0143,
                            "max": 0.9852,
                            "fraction_nonpositive": 0.0,
                            "fraction_channels_nonpositive": 0.0,
                            "fraction_saturated": 0.0,
                        },
                        {
                            "name": "layer3.2.act2",
                            "tensor": "site:layer3.2.act2",
                            "shape": [64, 4, 4],
                            "mean": 0.5685,
                            "std": 0.3115,
                            "min": 0.0306,
                            "max": 0.9858,
                            "fraction_nonpositive": 0.0,
                            "fraction_channels_nonpositive": 0.0,
                            "fraction_saturated": 0.0,
                        },
                    ],
                    "classification": {"top_k": _SIGMOID_TOP_K_EXAMPLE},
                    "timings_ms": _TIMINGS_EXAMPLE,
                }
            ]
        }
    )

    model: str
    version: int
    activation: str
    activation_params: dict[str, float | int | str]
    saturation_bounds: tuple[float, float] | None = Field(
        description="Output range used for fraction_saturated; null if unbounded."
    )
    sites: list[SiteStatsOut] = Field(description="Every activation site, in graph order.")
    classification: Prediction
    timings_ms: TimingsOut = Field(description="Milliseconds; total includes a first-use build.")

    @classmethod
    def of(
        cls, inspection: Inspection, *, top_k: int, include_probabilities: bool
    ) -> InspectionResponse:
        result = inspection.classification
        card = result.model.card
        return cls(
            model=result.model.name,
            version=result.model.version,
            activation=card.activation,
            activation_params=dict(card.activation_params),
            saturation_bounds=inspection.bounds,
            sites=[SiteStatsOut.of(s) for s in inspection.sites],
            classification=_prediction(result, top_k, include_probabilities),
            timings_ms=_timings(result),
        )


class CompareJSON(BaseModel):
    """JSON body of ``/v1/compare`` (multipart and raw bodies give ``models`` in the query)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(min_length=1, description="Exactly one image: base64 or a data: URL.")
    models: list[str] | None = Field(
        default=None, description="Models to compare (default: every loaded model)."
    )
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    include_probabilities: bool | None = None

    def image_bytes(self) -> bytes:
        if len(self.images) != 1:
            raise Unprocessable(
                f"compare takes exactly one image; got {len(self.images)}", code="too_many_images"
            )
        return decode_base64(self.images[0], 0)


class CompareEntry(BaseModel):
    model: str
    version: int
    architecture: str
    activation: str
    activation_params: dict[str, float | int | str]
    top_k: list[ClassEntry]
    probabilities: list[float] | None = None
    inference_ms: float = Field(description="onnxruntime run time for this model.")
    timings_ms: TimingsOut = Field(description="Decode, preprocess, inference, total.")

    @classmethod
    def of(cls, result: Classification, *, top_k: int, include_probabilities: bool) -> CompareEntry:
        card = result.model.card
        prediction = _prediction(result, top_k, include_probabilities)
        return cls(
            model=result.model.name,
            version=result.model.version,
            architecture=card.architecture,
            activation=card.activation,
            activation_params=dict(card.activation_params),
            top_k=prediction.top_k,
            probabilities=prediction.probabilities,
            inference_ms=round(result.timings.inference_ms, 3),
            timings_ms=_timings(result),
        )


_COMPARE_EXAMPLE: dict[str, Any] = {
    "results": [
        {
            "model": "resnet20-relu-digits",
            "version": 1,
            "architecture": "resnet20",
            "activation": "relu",
            "activation_params": {},
            "top_k": _RELU_TOP_K_EXAMPLE,
            "inference_ms": 0.35,
            "timings_ms": {"decode": 0.18, "preprocess": 0.11, "inference": 0.35, "total": 0.63},
        },
        {
            "model": "resnet20-sigmoid-digits",
            "version": 1,
            "architecture": "resnet20",
            "activation": "sigmoid",
            "activation_params": {},
            "top_k": _SIGMOID_TOP_K_EXAMPLE,
            "inference_ms": 0.37,
            "timings_ms": _TIMINGS_EXAMPLE,
        },
    ],
    "top1_agree": True,
    "total_ms": 1.42,
}


class CompareResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_COMPARE_EXAMPLE]})

    results: list[CompareEntry] = Field(description="One per model, in the requested order.")
    top1_agree: bool = Field(description="Every model's best class is the same.")
    total_ms: float = Field(description="Wall time for all models together.")
