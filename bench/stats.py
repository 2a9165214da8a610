"""Latency summaries and resource samples shared by every measurement."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psutil


@dataclass(frozen=True)
class Result:
    """One measured configuration: a row of the report."""

    key: str
    group: str  # a | b | c | d | e | int8 | decode
    label: str
    requests: int
    concurrency: int
    batch: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float  # images per second
    cpu_percent: float  # of one core (200 = both cores busy)
    peak_rss_mb: float
    errors: int = 0
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(latencies_s: list[float]) -> tuple[float, float, float]:
    values = np.asarray(latencies_s, dtype=np.float64) * 1e3
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return float(p50), float(p95), float(p99)


class ResourceMonitor:
    """Samples CPU time and RSS of a set of processes (and their children) while it runs."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu_start = 0.0
        self._wall_start = 0.0
        self.cpu_percent = 0.0

    def _processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu_seconds(self) -> float:
        total = 0.0
        for process in self._processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def _rss(self) -> int:
        total = 0
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_rss = max(self.peak_rss, self._rss())

    def __enter__(self) -> ResourceMonitor:
        self.peak_rss = self._rss()
        self._cpu_start = self._cpu_seconds()
        self._wall_start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._wall_start
        self.peak_rss = max(self.peak_rss, self._rss())
        self.cpu_percent = 100.0 * (self._cpu_seconds() - self._cpu_start) / max(wall, 1e-9)

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss / 2**20
