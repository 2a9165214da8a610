"""Model inspection: run one image and summarise every activation site's output.

The serving session only exposes ``logits`` and ``probabilities``. For inspection the ONNX graph
is loaded with the ``onnx`` package, every site tensor named in the card (``activation_sites``)
is added as a graph output, and a separate onnxruntime session is built from it: lazily, on the
first inspection of a model version, then cached (``InspectionCache``). The file's SHA-256 is
checked against the digest the serving runtime verified, so both sessions run the same bytes.

Statistics per site are computed in float64 over every value of the site's tensor for the image:
mean, population std, min, max, the fraction of values ≤ 0 (dead units for ReLU), the fraction of
channels whose values are all ≤ 0, and, for bounded activations, the fraction within 1 % of the
output range's width of either bound (saturated).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray

from service.activations import CatalogueError, get_activation
from service.classify import Classification, Deadline, Timings
from service.errors import DeadlineExceeded, ServiceError, Unprocessable
from service.imaging import DecodeLimits, decode_image, draft_size, preprocess
from service.modelcard import INPUT_NAME, LOGITS_NAME, PROBABILITIES_NAME, ModelCard
from service.runtime import ModelRuntime, session_options

SATURATION_MARGIN = 0.01
"""A value is saturated when within this fraction of the output range's width of a bound."""

Bounds = tuple[float, float]


class NotInspectable(Unprocessable):
    """The model's card or graph does not allow inspection (no or unknown activation sites)."""

    code = "model_not_inspectable"


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
    """Summary of one site's output for one image; ``values`` is [C, ...] (no batch axis)."""
    v = np.asarray(values, dtype=np.float64)
    flat = v.reshape(-1)
    per_channel = v.reshape(v.shape[0], -1) if v.ndim >= 1 else flat.reshape(1, -1)
    saturated: float | None = None
    if bounds is not None:
        low, high = bounds
        margin = SATURATION_MARGIN * (high - low)
        saturated = float(np.mean((flat <= low + margin) | (flat >= high - margin)))
    return SiteStats(
        name=name,
        tensor=tensor,
        shape=tuple(int(d) for d in v.shape),
        mean=float(flat.mean()),
        std=float(flat.std()),
        min=float(flat.min()),
        max=float(flat.max()),
        fraction_nonpositive=float(np.mean(flat <= 0.0)),
        fraction_channels_nonpositive=float(np.mean(np.all(per_channel <= 0.0, axis=1))),
        fraction_saturated=saturated,
    )


class InspectionSession:
    """An onnxruntime session over the same model file with every site tensor as an output."""

    def __init__(self, runtime: ModelRuntime, options: ort.SessionOptions) -> None:
        card = runtime.card
        if not card.activation_sites:
            raise NotInspectable(
                f"model {runtime.name!r} version {runtime.version} lists no activation sites in "
                "its card; re-export it with a current exporter to inspect it"
            )
        data = runtime.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != runtime.digest:
            raise ServiceError(
                f"model {runtime.name!r} version {runtime.version} changed on disk since it was "
                "loaded; retry after the next reload",
                status=503,
                code="model_changed",
            )
        model = onnx.load_model_from_string(data)
        produced = {out for node in model.graph.node for out in node.output}
        missing = [s.name for s in card.activation_sites if s.tensor not in produced]
        if missing:
            raise NotInspectable(
                f"model {runtime.name!r} version {runtime.version}: the card's activation sites "
                f"{', '.join(missing)} are not in its graph"
            )
        existing = {o.name for o in model.graph.output}
        typed = {vi.name: vi for vi in model.graph.value_info}
        for site in card.activation_sites:
            if site.tensor in existing:
                continue
            model.graph.output.append(
                typed.get(site.tensor)
                or onnx.helper.make_tensor_value_info(site.tensor, onnx.TensorProto.FLOAT, None)
            )
            existing.add(site.tensor)
        self.runtime = runtime
        self.site_tensors = [s.tensor for s in card.activation_sites]
        self.session = ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def run(
        self, batch: NDArray[np.float32], run_options: ort.RunOptions | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], list[NDArray[np.float32]]]:
        """float32 [N, 3, H, W] → (logits, probabilities, one array per site in card order)."""
        try:
            logits, probabilities, *sites = self.session.run(
                [LOGITS_NAME, PROBABILITIES_NAME, *self.site_tensors],
                {INPUT_NAME: batch},
                run_options,
            )
        except Exception as exc:
            if run_options is not None and run_options.terminate:
                raise DeadlineExceeded("inspection was stopped at the deadline") from exc
            raise
        return logits, probabilities, sites


SessionKey = tuple[str, int, str]


class InspectionCache:
    """Inspection sessions by (name, version, digest), built once each, least recently used out.

    A request that picked its runtime before a reload may still be building that runtime's
    session when the reload's ``retain`` runs; such a session serves its request but is not
    cached (it would otherwise sit in the cache, holding a superseded model, until evicted).
    """

    def __init__(self, intra_op_threads: int, inter_op_threads: int, capacity: int = 4) -> None:
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.capacity = capacity
        self._sessions: OrderedDict[SessionKey, InspectionSession] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[SessionKey, threading.Lock] = {}
        self._generation = 0  # how many times ``retain`` has run
        self._live: frozenset[SessionKey] | None = None  # what the last ``retain`` kept

    def __len__(self) -> int:
        return len(self._sessions)

    def retain(self, live: Collection[SessionKey]) -> int:
        """Drop the sessions of models no longer served (after a reload); how many went."""
        with self._lock:
            self._generation += 1
            self._live = frozenset(live)
            stale = [key for key in self._sessions if key not in self._live]
            for key in stale:
                del self._sessions[key]
        return len(stale)

    def get(self, runtime: ModelRuntime) -> InspectionSession:
        key = (runtime.name, runtime.version, runtime.digest)
        with self._lock:
            cached = self._sessions.get(key)
            if cached is not None:
                self._sessions.move_to_end(key)
                return cached
            build_lock = self._building.setdefault(key, threading.Lock())
            generation = self._generation
        with build_lock:  # one build per key; concurrent first requests wait for it
            with self._lock:
                cached = self._sessions.get(key)
            if cached is not None:
                return cached
            options = session_options(self.intra_op_threads, self.inter_op_threads)
            try:
                session = InspectionSession(runtime, options)
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:
                self._building.pop(key, None)
                retired = generation != self._generation and key not in (self._live or ())
                if not retired:
                    self._sessions[key] = session
                    while len(self._sessions) > self.capacity:
                        self._sessions.popitem(last=False)
            return session


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
