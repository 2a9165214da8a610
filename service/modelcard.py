"""The model card: the only contract between export/ (writes it) and service/ (reads it).

A published model is one self-contained ONNX file. Its card lives in the ONNX
``metadata_props``: one entry per field, key ``actlab.<field>``, value JSON-encoded.
Both sides import this module; no card key or tensor name is spelled anywhere else.

Layout of the model repository::

    models/<name>/<version>/model.onnx          versions are increasing integers
    models/<name>/<version>/model.onnx.sha256   "<hex digest>  model.onnx\\n"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CARD_VERSION = 1
"""Bump when a field changes meaning; the service skips cards whose version it does not know."""

KEY_PREFIX = "actlab."
CARD_VERSION_KEY = KEY_PREFIX + "card_version"

INPUT_NAME = "input"
"""float32 [batch, 3, H, W], RGB, resized, cropped and normalised with the card's mean/std."""
LOGITS_NAME = "logits"
"""float32 [batch, num_classes]."""
PROBABILITIES_NAME = "probabilities"
"""float32 [batch, num_classes]: softmax of the logits, computed in the graph."""
OUTPUT_NAMES = (LOGITS_NAME, PROBABILITIES_NAME)

MODEL_FILENAME = "model.onnx"
DIGEST_SUFFIX = ".sha256"

ResizePolicy = Literal["shorter_side_then_center_crop", "stretch"]
"""How an image becomes ``input_size``:

- ``shorter_side_then_center_crop``: scale so the shorter side equals ``resize_size`` (aspect kept),
  then cut the centred ``input_size`` window (torchvision's Resize + CenterCrop).
- ``stretch``: scale straight to ``input_size`` (aspect not kept); ``resize_size`` is ignored.
"""


class ActivationSite(BaseModel):
    """One place in the network where the activation runs, for model inspection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Module path, e.g. 'layer2.1.act2'.")
    tensor: str = Field(description="Name of the ONNX tensor holding this site's output.")


class ModelCard(BaseModel):
    """Everything the service needs to know about a model, and what a user needs to trust it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    card_version: int = CARD_VERSION
    name: str
    version: int = Field(ge=1)
    architecture: str
    activation: str
    activation_params: dict[str, float | int | str] = Field(default_factory=dict)
    labels: list[str] = Field(min_length=1)
    input_size: tuple[int, int] = Field(description="(height, width) of the network input.")
    resize_policy: ResizePolicy = "shorter_side_then_center_crop"
    resize_size: int = Field(ge=1, description="Shorter side before the centre crop.")
    interpolation: Literal["bilinear"] = "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dataset: str
    split: dict[str, float | int | str] = Field(
        default_factory=dict, description="train/val counts, val fraction, split seed."
    )
    val_accuracy: float | None = None
    epochs: int = 0
    train_seconds: float = 0.0
    seed: int = 0
    command: str = ""
    torch_version: str = ""
    onnx_version: str = ""
    opset: int
    created_at: str = Field(description="UTC time of export, ISO 8601.")
    parameters: int = Field(ge=0, description="Trainable parameter count.")
    activation_sites: list[ActivationSite] = Field(default_factory=list)
    quantization: Literal["none", "int8_qdq"] = "none"
    source_model: str | None = Field(
        default=None, description="For a quantized variant: '<name>/<version>' of the fp32 model."
    )
    top1_agreement: float | None = Field(
        default=None, description="For a quantized variant: top-1 agreement with fp32 on val."
    )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_metadata(self) -> dict[str, str]:
        """The card as ONNX ``metadata_props`` (string keys and JSON string values)."""
        data = self.model_dump(mode="json")
        return {KEY_PREFIX + key: json.dumps(value) for key, value in data.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ModelCard:
        """Read a card back from ``custom_metadata_map``; raises ``CardError`` with the reason."""
        if CARD_VERSION_KEY not in metadata:
            raise CardError("the model has no actlab model card")
        fields: dict[str, object] = {}
        for key, raw in metadata.items():
            if not key.startswith(KEY_PREFIX):
                continue
            try:
                fields[key.removeprefix(KEY_PREFIX)] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise CardError(f"card field {key!r} is not valid JSON") from exc
        if fields.get("card_version") != CARD_VERSION:
            raise CardError(
                f"unknown card version {fields.get('card_version')!r}; this service reads "
                f"version {CARD_VERSION}"
            )
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise CardError(f"invalid model card: {problems}") from exc


class CardError(ValueError):
    """A model card is missing, of an unknown version, or invalid."""
