"""Request and response models of the activation endpoints (``/v1/activations``).

Built from the catalogue in ``service.activations``; nothing here computes anything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from service.activations import Activation, Param, Properties

MAX_POINTS = 100_000
"""Most numbers one evaluation request may hold (x values or range.num)."""
MAX_BODY_BYTES = 3_000_000
"""Body limit of the /v1/activations routes. Their JSON is parsed and validated on the event loop,
so it is kept small: 3 MB holds MAX_POINTS numbers at ~26 bytes each ("-1.2345678901234567e-300,
") and bounds a hostile body's parse to a fraction of a second."""
MAX_ABS_X = 1e6
"""Largest |x| accepted; every catalogue entry stays finite far beyond this."""

Number = Annotated[float, Strict()]
"""A JSON number (integers accepted); strings and booleans are not numbers here."""
Row = Annotated[list[Number], Field(max_length=MAX_POINTS, fail_fast=True)]
"""At most MAX_POINTS items, and validation stops at the first bad one: a large body costs one
error, not one per item (the total of a matrix is checked after validation, in activation_eval)."""
Numbers = Row | Annotated[list[Row], Field(max_length=MAX_POINTS, fail_fast=True)]


class ParamInfo(BaseModel):
    name: str
    description: str
    type: Literal["number", "integer", "choice"]
    default: float | int | str
    minimum: float | None = Field(description="Inclusive lower bound (numbers only).")
    maximum: float | None = Field(description="Inclusive upper bound (numbers only).")
    choices: list[str] | None = Field(description="Allowed values (choices only).")

    @classmethod
    def of(cls, param: Param) -> ParamInfo:
        kind: Literal["number", "integer", "choice"] = (
            "choice" if param.choices is not None else "integer" if param.integer else "number"
        )
        return cls(
            name=param.name,
            description=param.description,
            type=kind,
            default=param.default,
            minimum=param.minimum,
            maximum=param.maximum,
            choices=list(param.choices) if param.choices is not None else None,
        )


class PropertiesInfo(BaseModel):
    output_range: tuple[float | None, float | None] = Field(
        description="[low, high]: the greatest lower and least upper bound of f (not necessarily "
        "reached); null means unbounded on that side."
    )
    min_value: float | None = Field(
        description="Greatest lower bound (infimum) of f; null if unbounded below. A true minimum "
        "only where min_attained is true: sigmoid, tanh, ELU, SELU, CELU, softplus, softsign, "
        "gaussian and softmax only approach it."
    )
    min_attained: bool = Field(
        description="f takes the value min_value at some finite x (a minimum, not only an infimum)."
    )
    monotonic: bool = Field(
        description="Non-decreasing everywhere. Softplus (torch's form, x where beta * x > "
        "threshold) drops by log1p(exp(-threshold)) / beta at x = threshold / beta; it is "
        "reported monotonic only when that drop is less than half the gap between float32 "
        "numbers just below threshold / beta (invisible to a float32 network, as at the defaults)."
    )
    smooth: bool = Field(
        description="Continuously differentiable everywhere. Softplus: only when its drop is "
        "invisible in float32 (see monotonic) and so is its slope's jump there, "
        "sigmoid(-threshold) < 2^-25 (half the float32 gap below 1)."
    )
    zero_centred: bool = Field(description="f is odd, so symmetric input gives zero-mean output.")
    bounded: bool = Field(description="Bounded below and above.")
    saturation: Literal["none", "negative", "positive", "both"] = Field(
        description="Sides on which f' tends to (or is) 0: where gradients vanish."
    )
    saturating: bool = Field(description="Saturates on both sides (sigmoid/tanh behaviour).")

    @classmethod
    def of(cls, props: Properties) -> PropertiesInfo:
        return cls(
            output_range=props.output_range,
            min_value=props.min_value,
            min_attained=props.min_attained,
            monotonic=props.monotonic,
            smooth=props.smooth,
            zero_centred=props.zero_centred,
            bounded=props.bounded,
            saturation=props.saturation,
            saturating=props.saturating,
        )


_SIGMOID_EXAMPLE: dict[str, Any] = {
    "name": "sigmoid",
    "formula": "1 / (1 + exp(-x))",
    "description": "Logistic; max gradient 0.25, saturating: trains slowly.",
    "kind": "elementwise",
    "trainable": True,
    "network": True,
    "aliases": [],
    "parameters": [],
    "properties": {
        "output_range": [0.0, 1.0],
        "min_value": 0.0,
        "min_attained": False,
        "monotonic": True,
        "smooth": True,
        "zero_centred": False,
        "bounded": True,
        "saturation": "both",
        "saturating": True,
    },
}


class ActivationInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_SIGMOID_EXAMPLE]})

    name: str
    formula: str
    description: str
    kind: Literal["elementwise", "grouped", "vector"] = Field(
        description="elementwise: y_i = f(x_i); grouped: max over groups of k (maxout); "
        "vector: depends on the whole vector (softmax)."
    )
    trainable: bool = Field(description="False where gradients are zero almost everywhere.")
    network: bool = Field(description="Usable as the hidden activation of a ResNet.")
    aliases: list[str]
    parameters: list[ParamInfo]
    properties: PropertiesInfo = Field(description="Properties at the default parameters.")

    @classmethod
    def of(cls, activation: Activation) -> ActivationInfo:
        return cls(
            name=activation.name,
            formula=activation.formula,
            description=activation.description,
            kind=activation.kind,
            trainable=activation.trainable,
            network=activation.kind != "vector",
            aliases=list(activation.aliases),
            parameters=[ParamInfo.of(p) for p in activation.params],
            properties=PropertiesInfo.of(activation.properties(activation.resolve_params())),
        )


class ActivationList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"count": 1, "activations": [_SIGMOID_EXAMPLE]}]}
    )

    count: int
    activations: list[ActivationInfo]


class EvalRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Number
    stop: Number = Field(description="Included, like numpy.linspace.")
    num: Annotated[int, Strict()] = Field(
        ge=1, le=MAX_POINTS, description=f"Number of points, an integer from 1 to {MAX_POINTS}."
    )


class EvalRequest(BaseModel):
    """Exactly one of ``x`` or ``range``; ``params`` default to the catalogue's defaults."""

    model_config = ConfigDict(extra="forbid")

    x: Numbers | None = Field(
        default=None,
        description="Points: a list of numbers, or a list of equal-length rows (a matrix for "
        "softmax with params.axis; groups of k for maxout). Finite, |x| ≤ 1e6, at most "
        f"{MAX_POINTS} numbers.",
    )
    range: EvalRange | None = Field(default=None, description="Evenly spaced points instead of x.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Activation parameters (see GET /v1/activations/{name})."
    )


EVAL_EXAMPLES: dict[str, dict[str, Any]] = {
    "points": {
        "summary": "tanh at a few points (saturation: dy → 0)",
        "value": {"x": [-10.0, -2.0, 0.0, 2.0, 10.0]},
    },
    "range": {
        "summary": "GELU over a range, tanh approximation",
        "value": {"range": {"start": -4, "stop": 4, "num": 9}, "params": {"approximate": "tanh"}},
    },
    "softmax_matrix": {
        "summary": "softmax over rows of a matrix (POST /v1/activations/softmax/eval)",
        "value": {"x": [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], "params": {"axis": 1}},
    },
    "maxout_groups": {
        "summary": "maxout over groups of k=2 (POST /v1/activations/maxout/eval)",
        "value": {"x": [[1.0, -2.0], [0.5, 3.0]]},
    },
}


class EvalResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "tanh",
                    "params": {},
                    "x": [-2.0, 0.0, 2.0],
                    "y": [-0.9640275800758169, 0.0, 0.9640275800758169],
                    "dy": [0.07065082485316446, 1.0, 0.07065082485316446],
                    "properties": {
                        "output_range": [-1.0, 1.0],
                        "min_value": -1.0,
                        "min_attained": False,
                        "monotonic": True,
                        "smooth": True,
                        "zero_centred": True,
                        "bounded": True,
                        "saturation": "both",
                        "saturating": True,
                    },
                }
            ]
        }
    )

    name: str = Field(description="Canonical name (aliases resolved).")
    params: dict[str, float | int | str] = Field(description="Parameters used, defaults filled in.")
    x: Numbers
    y: Numbers = Field(
        description="f(x): same shape as x; softmax gives probabilities; maxout gives one "
        "value per group."
    )
    dy: Numbers = Field(
        description="Derivative, same shape as x: f'(x); softmax the Jacobian diagonal "
        "p_i (1 - p_i); maxout the gradient of each group's max w.r.t. every input."
    )
    properties: PropertiesInfo = Field(description="Properties at these parameters.")
