"""Response model of ``GET /v1/models/{name}/linearity`` (built from ``service.linearity``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.linearity import AFFINE_TOLERANCE, NEARLY_AFFINE, LinearityProbe
from service.runtime import ModelRuntime

_EXAMPLE: dict[str, Any] = {
    "model": "resnet20-identity-digits",
    "version": 1,
    "activation": "identity",
    "test": "superposition on the logits: an affine f has f(x+y−z) = f(x)+f(y)−f(z); x, y, z "
    "standard normal in the normalised input space",
    "samples": 2,
    "seed": 0,
    "relative_errors": [6.34e-07, 1.06e-07],
    "median_error": 3.7e-07,
    "max_error": 6.34e-07,
    "affine": True,
    "verdict": "affine: every layer of this resnet20 together computes one affine map (largest "
    "error 6.3e-07, float32 rounding); depth adds no expressive power without a nonlinearity",
}


class LinearityResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": _EXAMPLE})

    model: str
    version: int
    activation: str = Field(description="The card's activation (its parameters in /v1/models).")
    test: str = Field(description="What was measured.")
    samples: int
    seed: int
    relative_errors: list[float] = Field(
        description="Per sample, on the logits with w = x+y−z: ‖(f(w)−f(y)) − (f(x)−f(z))‖ ÷ "
        "(‖f(w)−f(y)‖ + ‖f(x)−f(z)‖); 0 for an affine map."
    )
    median_error: float
    max_error: float
    affine: bool = Field(description=f"max_error ≤ {AFFINE_TOLERANCE:g}: one affine map.")
    verdict: str

    @classmethod
    def of(cls, model: ModelRuntime, probe: LinearityProbe) -> LinearityResponse:
        card = model.card
        if probe.affine:
            verdict = (
                f"affine: every layer of this {card.architecture} together computes one affine "
                f"map (largest error {probe.max_error:.1e}, float32 rounding); depth adds no "
                "expressive power without a nonlinearity"
            )
        elif probe.median_error < NEARLY_AFFINE:
            verdict = (
                f"nearly affine: the network bends only slightly (median error "
                f"{probe.median_error:.2g}); for these inputs its {card.activation} activations "
                "work in their nearly linear range, so depth adds little"
            )
        else:
            verdict = (
                f"not affine: the network bends its input space (median error "
                f"{probe.median_error:.3g}); its {card.activation} activations (and any "
                "max-pooling or quantisation) make it more than one linear map"
            )
        return cls(
            model=model.name,
            version=model.version,
            activation=card.activation,
            test="superposition on the logits: an affine f has f(x+y−z) = f(x)+f(y)−f(z); "
            "x, y, z standard normal in the normalised input space",
            samples=probe.samples,
            seed=probe.seed,
            relative_errors=list(probe.relative_errors),
            median_error=probe.median_error,
            max_error=probe.max_error,
            affine=probe.affine,
            verdict=verdict,
        )
