"""Model inspection: run one image and summarise every activation site's output.

The image runs through an inspection session (``service.inspection_sessions``): the served graph
with every site tensor named in the card (``activation_sites``) as an extra output.

Statistics per site are computed in float64 over every value of the site's tensor for the image:
mean, population std, min, max, the fraction of values ≤ 0 (dead units for ReLU), the fraction of
channels whose values are all ≤ 0, and, for bounded activations, the fraction within 1 % of the
output range's width of either bound (saturated).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.activations import CatalogueError, get_activation
from service.classify import Classification, Deadline, Timings
from service.imaging import DecodeLimits, decode_image, draft_size, preprocess
from service.inspection_sessions import InspectionCache
from service.modelcard import ModelCard
from service.runtime import ModelRuntime

SATURATION_MARGIN = 0.01
"""A value is saturated when within this fraction of the output range's width of a bound."""

Bounds = tuple[float, float]


@dataclass(frozen=True)
class SiteStats:
    name: str
    tensor: str
    shape: tuple[int, ...]
    mean: float
    std: float
    min: float
    max: float
    fraction_nonpositive: float
    fraction_channels_nonpositive: float
    fraction_saturated: float | None


@dataclass(frozen=True)
class Inspection:
    classification: Classification
    bounds: Bounds | None
    sites: list[SiteStats]


def saturation_bounds(card: ModelCard) -> Bounds | None:
    """(low, high) of the card's activation if bounded on both sides, else None."""
    try:
        activation = get_activation(card.activation)
        properties = activation.properties(activation.resolve_params(card.activation_params))
    except CatalogueError:
        return None  # an activation this service does not know: report no saturation
    low, high = properties.output_range
    if low is None or high is None or not high > low:
        return None
    return float(low), float(high)


def site_statistics(
    name: str, tensor: str, values: NDArray[np.floating], bounds: Bounds | None
) -> SiteStats:
    """Summary of one site's output for one image; ``values`` is [C, ...] (no batch axis).

    Reads the tensor in its own dtype (no float64 copy of the whole tensor): sums accumulate in
    float64 and every threshold is a float64 scalar, so each comparison is made in float64 as
    if the values had been converted first (about half the time of converting them)."""
    v = np.asarray(values)
    flat = v.reshape(-1)
    per_channel = v.reshape(v.shape[0], -1) if v.ndim >= 1 else flat.reshape(1, -1)
    count = max(flat.size, 1)
    zero = np.float64(0.0)
    saturated: float | None = None
    if bounds is not None:
        low, high = bounds
        margin = SATURATION_MARGIN * (high - low)
        near = (flat <= np.float64(low + margin)) | (flat >= np.float64(high - margin))
        saturated = float(np.count_nonzero(near) / count)
    return SiteStats(
        name=name,
        tensor=tensor,
        shape=tuple(int(d) for d in v.shape),
        mean=float(flat.mean(dtype=np.float64)),
        std=float(flat.std(dtype=np.float64)),
        min=float(flat.min()),
        max=float(flat.max()),
        fraction_nonpositive=float(np.count_nonzero(flat <= zero) / count),
        fraction_channels_nonpositive=float(np.mean(per_channel.max(axis=1) <= zero)),
        fraction_saturated=saturated,
    )


def inspect_image(
    runtime: ModelRuntime,
    cache: InspectionCache,
    image: bytes,
    limits: DecodeLimits,
    *,
    deadline: Deadline | None = None,
) -> Inspection:
    """Decode and preprocess one image as classify does, run the inspection graph, summarise."""
    started = time.perf_counter()
    card = runtime.card
    session = cache.get(runtime)
    if deadline is not None:
        deadline.check()
    loaded_at = time.perf_counter()
    decoded = decode_image(image, limits, min_size=draft_size(card))
    decoded_at = time.perf_counter()
    batch = preprocess(decoded, card)
    preprocessed_at = time.perf_counter()
    if deadline is not None:
        deadline.check()
    logits, probabilities, sites = session.run(batch, deadline.run_options if deadline else None)
    finished = time.perf_counter()
    bounds = saturation_bounds(card)
    stats = [
        site_statistics(site.name, site.tensor, values[0], bounds)
        for site, values in zip(card.activation_sites, sites, strict=True)
    ]
    timings = Timings(
        decode_ms=(decoded_at - loaded_at) * 1e3,
        preprocess_ms=(preprocessed_at - decoded_at) * 1e3,
        inference_ms=(finished - preprocessed_at) * 1e3,
        total_ms=(finished - started) * 1e3,
    )
    return Inspection(Classification(runtime, logits, probabilities, timings), bounds, stats)
