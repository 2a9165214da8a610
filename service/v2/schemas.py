"""Pydantic models of the v2 inference request (the JSON part of the body).

Tensor ``data`` is kept as plain JSON (``Any``) and turned into numpy by ``service.v2.tensors``:
validating 150 000 floats one by one in pydantic would cost more than the inference.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

ParameterValue = StrictBool | StrictInt | StrictFloat | StrictStr
Parameters = dict[str, ParameterValue]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the protocol's schema allows other properties

    name: str
    shape: list[StrictInt]
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients add e.g. "model_name"; harmless

    id: str | None = None
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None
