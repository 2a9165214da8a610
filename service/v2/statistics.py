"""Per model version inference statistics in the shape of Triton's statistics extension.

Counted for every ``/v2/.../infer`` request that reached a model (the ``/v1`` routes report
through Prometheus at ``/metrics``):

- ``inference_count``: images (batch rows) inferred; ``execution_count``: model runs asked for
  (with dynamic batching on, several of them may share one onnxruntime run);
- ``success`` / ``fail``: requests and their cumulative wall time, from the request reaching
  the route to the response being built;
- ``queue``: waiting for an inference worker; ``compute_input``: parsing tensors, or decoding
  and preprocessing images; ``compute_infer``: onnxruntime; ``compute_output``: building outputs;
- ``batch_stats``: the compute times per batch size. Times are nanoseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(0, ns)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(frozen=True)
class StageTimes:
    """Nanoseconds spent in each stage of one successful request."""

    queue: int
    compute_input: int
    compute_infer: int
    compute_output: int
    total: int


@dataclass
class _BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class _VersionStats:
    last_inference: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, _BatchStats] = field(default_factory=dict)

    def as_json(self, name: str, version: int) -> dict[str, object]:
        stages = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        inference_stats: dict[str, object] = {s: getattr(self, s).as_json() for s in stages}
        inference_stats |= {"cache_hit": Duration().as_json(), "cache_miss": Duration().as_json()}
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": inference_stats,
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": batch.compute_input.as_json(),
                    "compute_infer": batch.compute_infer.as_json(),
                    "compute_output": batch.compute_output.as_json(),
                }
                for size, batch in sorted(self.batches.items())
            ],
        }


class InferenceStatistics:
    """Thread-safe counters keyed by (model name, version)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, int], _VersionStats] = {}

    def record_success(self, name: str, version: int, batch_size: int, times: StageTimes) -> None:
        with self._lock:
            stats = self._stats.setdefault((name, version), _VersionStats())
            stats.last_inference = time.time_ns() // 1_000_000
            stats.inference_count += batch_size
            stats.execution_count += 1
            stats.success.add(times.total)
            stats.queue.add(times.queue)
            stats.compute_input.add(times.compute_input)
            stats.compute_infer.add(times.compute_infer)
            stats.compute_output.add(times.compute_output)
            batch = stats.batches.setdefault(batch_size, _BatchStats())
            batch.compute_input.add(times.compute_input)
            batch.compute_infer.add(times.compute_infer)
            batch.compute_output.add(times.compute_output)

    def record_failure(self, name: str, version: int, total_ns: int) -> None:
        with self._lock:
            self._stats.setdefault((name, version), _VersionStats()).fail.add(total_ns)

    def recorded_versions(self, name: str) -> list[int]:
        with self._lock:
            return sorted(version for model, version in self._stats if model == name)

    def model_stats(self, keys: Iterable[tuple[str, int]]) -> list[dict[str, object]]:
        """Triton's ``model_stats`` entries for ``keys`` (zeros for a version never used)."""
        with self._lock:
            return [
                self._stats.get((name, version), _VersionStats()).as_json(name, version)
                for name, version in keys
            ]
