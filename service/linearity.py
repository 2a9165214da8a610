"""Does a model compute one affine map? The superposition test, measured on the served graph.

The tutorials' first claim: without a nonlinearity between them, any number of layers collapse to
one linear (affine) map. Every affine map ``f(x) = Ax + b`` satisfies

    f(x + y − z) = f(x) + f(y) − f(z)        for all inputs x, y, z,

so the test runs the model on random inputs ``x, y, z`` and on ``w = x + y − z`` and measures, on
the logits, ``‖(f(w) − f(y)) − (f(x) − f(z))‖ ÷ (‖f(w) − f(y)‖ + ‖f(x) − f(z)‖)``: both
differences are the change along ``x − z`` from two base points, equal for an affine map.
Dividing by the size of the changes, not of the logits, keeps a network whose output barely
depends on its input (a deep random sigmoid net) from passing as affine: a constant is affine too.

It needs four runs per sample whatever the input size (ResNet-50 included), and it judges the
graph that is served, so anything that bends the map counts: the activation, max-pooling, INT8
rounding.

The inputs are standard normal in the model's normalised input space, the scale preprocessing
gives real images. An affine network in float32 gives relative errors around 1e-6 (rounding);
any activation that bends gives errors orders of magnitude larger, unless the inputs keep it in
its nearly linear range (``NEARLY_AFFINE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

import numpy as np
from numpy.typing import NDArray

from service.classify import Deadline
from service.runtime import ModelRuntime

AFFINE_TOLERANCE = 1e-4
"""Largest relative error still called affine: float32 rounding gives about 1e-6 (at most 4e-6
measured on a random identity resnet56)."""
NEARLY_AFFINE = 1e-2
"""Below this (and above the tolerance) the network bends only slightly for these inputs: its
activations work in their nearly linear range (sigmoid near 0 is about 0.5 + x/4)."""
MAX_SAMPLES = 32
CHUNK_IMAGES = 8  # images per onnxruntime run: bounds memory for large inputs


@dataclass(frozen=True)
class LinearityProbe:
    samples: int
    seed: int
    relative_errors: tuple[float, ...]  # one per sample, in sample order

    @property
    def median_error(self) -> float:
        return median(self.relative_errors)

    @property
    def max_error(self) -> float:
        return max(self.relative_errors)

    @property
    def affine(self) -> bool:
        return self.max_error <= AFFINE_TOLERANCE


def probe_linearity(
    model: ModelRuntime, *, samples: int, seed: int, deadline: Deadline | None = None
) -> LinearityProbe:
    """Run the superposition test ``samples`` times with inputs drawn from ``seed``."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be in 1..{MAX_SAMPLES}, got {samples}")
    channels, height, width = model.input_spec.shape
    rng = np.random.default_rng(seed)
    x, y, z = rng.standard_normal((3, samples, channels, height, width), dtype=np.float32)
    inputs = np.concatenate([x, y, z, x + y - z])
    fx, fy, fz, fw = np.split(_logits(model, inputs, deadline), 4)
    # (f(w) − f(y)) and (f(x) − f(z)) are both the change along x − z, from two base points:
    # equal for an affine map. Their gap is measured against the size of the changes, so a
    # network whose output barely depends on its input is not called affine for that alone.
    gap = np.linalg.norm((fw - fy) - (fx - fz), axis=1)
    change = np.linalg.norm(fw - fy, axis=1) + np.linalg.norm(fx - fz, axis=1)
    errors = gap / np.maximum(change, np.finfo(np.float32).tiny)
    return LinearityProbe(samples, seed, tuple(float(e) for e in errors))


def _logits(
    model: ModelRuntime, inputs: NDArray[np.float32], deadline: Deadline | None
) -> NDArray[np.float64]:
    out = []
    for start in range(0, len(inputs), CHUNK_IMAGES):
        if deadline is not None:
            deadline.check()
        options = deadline.run_options if deadline is not None else None
        logits, _ = model.run(np.ascontiguousarray(inputs[start : start + CHUNK_IMAGES]), options)
        out.append(logits.astype(np.float64))
    return np.concatenate(out)
