"""Start a server under test (the service or the naive reference) as its own uvicorn process.

``start_server`` measures the cold start: from just before the process is spawned until its
readiness URL first answers 200 (the service: ``/health/ready``, which turns 200 only when every
model is loaded and warm). Only 127.0.0.1 is used; the process is stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from bench.config import REPO_ROOT, ServerConfig

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RunningServer:
    config: ServerConfig
    process: subprocess.Popen[bytes]
    base_url: str
    classify_url: str
    cold_start_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _command(config: ServerConfig, port: int) -> tuple[list[str], str, str]:
    """(argv, readiness path, classify path)."""
    app, ready, classify = (
        ("service.app:create_app", "/health/ready", "/v1/classify")
        if config.kind == "service"
        else ("bench.naive_service:app", "/health", "/predict")
    )
    argv = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)]
    if config.kind == "service":
        argv.append("--factory")
    argv += ["--workers", str(config.workers), "--no-access-log", "--log-level", "warning"]
    return argv, ready, classify


def _environment(config: ServerConfig, models_dir: Path, model_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTLAB_")}
    env.update(
        {
            "ACTLAB_MODELS_DIR": str(models_dir),
            "ACTLAB_INTRA_OP_THREADS": str(config.intra_op_threads),
            # the suite drives up to 16 concurrent clients: admit them all instead of 503
            "ACTLAB_MAX_CONCURRENCY": "32",
            "ACTLAB_BATCH_MAX_SIZE": str(config.batch_max_size),
            "ACTLAB_BATCH_MAX_WAIT_MS": str(config.batch_max_wait_ms),
            "BENCH_NAIVE_MODEL": str(model_path),
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    return env


@contextlib.contextmanager
def start_server(
    config: ServerConfig, models_dir: Path, model_path: Path, timeout_s: float = 120.0
) -> Iterator[RunningServer]:
    port = free_port()
    argv, ready_path, classify_path = _command(config, port)
    base = f"http://{HOST}:{port}"
    # stderr goes to a file, not a pipe: a chatty server can never block on it
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=_environment(config, models_dir, model_path),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            streak = 1 if config.workers == 1 else 20 * config.workers
            cold_start = _wait_ready(process, base + ready_path, started, timeout_s, log, streak)
            yield RunningServer(config, process, base, base + classify_path, cold_start)
        finally:
            _stop(process)


def _wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    started: float,
    timeout_s: float,
    log: IO[bytes],
    streak: int = 1,
) -> float:
    """Seconds until ``url`` answered 200 ``streak`` times in a row (one per fresh connection,
    so with several workers the kernel spreads the probes and every worker must be ready)."""
    ready_since: float | None = None
    seen = 0
    with httpx.Client(timeout=2.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while time.perf_counter() - started < timeout_s:
            if process.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise RuntimeError(f"the server exited with {process.returncode}: {err[-2000:]}")
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                ready_since = ready_since if ready_since is not None else time.perf_counter()
                seen += 1
                if seen >= streak:
                    return ready_since - started
                continue
            ready_since, seen = None, 0
            time.sleep(0.01)
    raise RuntimeError(f"{url} was not ready within {timeout_s} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
