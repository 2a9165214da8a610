"""The HTTP layer's cost at concurrency 1, measured as a ratio of interleaved rounds.

The (b) row and the service's c=1 row are taken a minute apart; on a shared VM the CPU's speed
drifts by more than the 10 % the target allows between two such moments. Here each round times
the in-process pipeline (b) and then the same images through the running service at c=1, back
to back, and the target takes the median of the per-round ratios (the activation-tax benchmark
does the same), so drift that lasts longer than one round cancels out.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from bench.inprocess import measure
from bench.load import run_loadgen
from bench.servers import RunningServer
from bench.stats import percentiles
from service.classify import classify_images
from service.imaging import DecodeLimits
from service.runtime import ModelRuntime


@dataclass
class InterleavedC1:
    rounds: int
    requests_per_round: int
    pipeline_p50_ms: list[float] = field(default_factory=list)
    http_p50_ms: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [h / b for h, b in zip(self.http_p50_ms, self.pipeline_p50_ms, strict=True)]

    @property
    def ratio(self) -> float:
        return median(self.ratios)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": self.ratios, "ratio": self.ratio}


def interleaved_c1(
    server: RunningServer, runtime: ModelRuntime, photos: list[bytes], bodies: Path, *,
    rounds: int, requests: int,
) -> InterleavedC1:  # fmt: skip
    """``rounds`` × (``requests`` in-process pipeline calls, then ``requests`` HTTP requests)."""
    limits = DecodeLimits()
    out = InterleavedC1(rounds=rounds, requests_per_round=requests)
    run_loadgen(server.classify_url, bodies, 1, 2, 0)  # warm the connection path
    for _ in range(rounds):
        images = itertools.cycle(photos)  # the same order as the load generator's bodies
        pipeline = measure(
            lambda images=images: classify_images(runtime, [next(images)], limits),
            key="b-interleaved", group="b", label="(b) interleaved", runs=requests, warmup=0,
        )  # fmt: skip
        out.pipeline_p50_ms.append(pipeline.p50_ms)
        http = run_loadgen(server.classify_url, bodies, 1, requests, 0)
        if len(http["latencies_s"]) != requests:
            raise RuntimeError(f"interleaved c=1: requests failed: {http['errors']}")
        out.http_p50_ms.append(percentiles(http["latencies_s"])[0])
    return out
