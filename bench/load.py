"""(c) and (d): drive a running server with the load generator and watch the server process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.config import REPO_ROOT
from bench.loadgen import multipart_body
from bench.servers import RunningServer
from bench.stats import ResourceMonitor, Result, percentiles


@dataclass(frozen=True)
class LoadgenCost:
    key: str
    cpu_ms_per_request: float
    cpu_percent: float  # of one core, while it ran


def write_bodies(images: list[bytes], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        (folder / f"{i:03d}.body").write_bytes(multipart_body(image))
    return folder


def run_loadgen(url: str, bodies: Path, concurrency: int, requests: int, warmup: int) -> dict:
    argv = [
        sys.executable, "-m", "bench.loadgen", url, str(bodies),
        "--concurrency", str(concurrency), "--requests", str(requests), "--warmup", str(warmup),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.decode()[-2000:]}")
    return dict(json.loads(done.stdout))


def http_result(
    server: RunningServer, bodies: Path, concurrency: int, requests: int, *, group: str,
    key: str, label: str,
) -> tuple[Result, LoadgenCost]:  # fmt: skip
    """One load level against ``server``: latency percentiles, throughput, server CPU and RSS."""
    warmup = max(2, concurrency)
    run_loadgen(server.classify_url, bodies, concurrency, warmup, 0)  # warm connections + caches
    with ResourceMonitor(server.process.pid) as monitor:
        out = run_loadgen(server.classify_url, bodies, concurrency, requests, 0)
    latencies = out["latencies_s"]
    errors = sum(out["errors"].values())
    if not latencies:
        raise RuntimeError(f"{label}: every request failed: {out['errors']}")
    p50, p95, p99 = percentiles(latencies)
    wall = out["wall_s"]
    result = Result(
        key=key, group=group, label=label, requests=requests, concurrency=concurrency, batch=1,
        p50_ms=p50, p95_ms=p95, p99_ms=p99, throughput=len(latencies) / wall,
        cpu_percent=monitor.cpu_percent, peak_rss_mb=monitor.peak_rss_mb, errors=errors,
        note=", ".join(f"{n}× {s}" for s, n in out["errors"].items()),
    )  # fmt: skip
    cost = LoadgenCost(
        key=key,
        cpu_ms_per_request=1e3 * out["loadgen_cpu_s"] / max(1, requests),
        cpu_percent=100.0 * out["loadgen_cpu_s"] / max(wall, 1e-9),
    )
    return result, cost
