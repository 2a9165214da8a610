"""Scale-out: three api replicas behind nginx (the compose rules); one is killed mid-run.

The replicas run the api image's own uvicorn command line (Dockerfile CMD) on 127.0.0.1; nginx
runs deploy/nginx/compose.conf with only the upstream addresses and listen port swapped. Who
served each request is read from nginx's access log ($upstream_addr, $upstream_status).
"""

from __future__ import annotations

import io
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from deploy_helpers import (
    free_port,
    read_access_log,
    start_replica,
    stop_process,
    wait_for_http,
)
from nginx_fixtures import require_nginx, run_load_balancer
from PIL import Image

pytestmark = [pytest.mark.network, pytest.mark.slow]

REPLICAS = 3
REQUESTS = 150
CLIENT_THREADS = 4
KILL_AFTER = 50  # responses received before one replica is SIGKILLed
MODEL = "tiny-relu"


def png_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(40 + seed, 52, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [png_bytes(seed) for seed in range(5)]


def classify(client: httpx.Client, base_url: str, image: bytes) -> httpx.Response:
    return client.post(
        f"{base_url}/v1/models/{MODEL}/classify",
        files={"file": ("image.png", image, "image/png")},
        timeout=30,
    )


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """The answer without its timings (which differ run to run)."""
    return {key: value for key, value in body.items() if key != "timings_ms"}


@pytest.fixture
def replicas(model_repo: Path, tmp_path: Path) -> Iterator[list[tuple[int, Any]]]:
    require_nginx()  # before paying for three replicas
    started = []
    try:
        for index in range(REPLICAS):
            port = free_port()
            process = start_replica(
                sys.executable,
                port,
                model_repo,
                tmp_path / f"replica-{index}.log",
                intra_op_threads="1",
                warmup_runs="1",
            )
            started.append((port, process))
        for index, (port, process) in enumerate(started):
            wait_for_http(
                f"http://127.0.0.1:{port}/health/ready",
                timeout_s=90,
                process=process,
                log_path=tmp_path / f"replica-{index}.log",
            )
        yield started
    finally:
        for _, process in started:
            stop_process(process)


def test_no_request_fails_when_a_replica_dies_and_every_replica_served(
    replicas: list[tuple[int, Any]], tmp_path: Path
) -> None:
    ports = [port for port, _ in replicas]
    victim_port, victim = replicas[1]

    # What each image must be classified as: asked of one replica directly, before the run.
    with httpx.Client() as direct:
        expected = []
        for image in IMAGES:
            reply = classify(direct, f"http://127.0.0.1:{ports[0]}", image)
            assert reply.status_code == 200, reply.text
            expected.append(comparable(reply.json()))

    received = 0
    lock = threading.Lock()
    killed = threading.Event()

    with run_load_balancer(tmp_path / "nginx", ports) as lb:

        def send(number: int) -> tuple[int, int, dict[str, Any] | str]:
            nonlocal received
            with httpx.Client() as client:
                reply = classify(client, lb.url, IMAGES[number % len(IMAGES)])
            with lock:
                received += 1
                if received == KILL_AFTER:
                    victim.send_signal(signal.SIGKILL)
                    killed.set()
            body = reply.json() if reply.status_code == 200 else reply.text
            return number, reply.status_code, body

        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            results = list(pool.map(send, range(REQUESTS)))
        ready = httpx.get(f"{lb.url}/health/ready", timeout=10)

    assert killed.is_set()
    assert victim.wait(timeout=10) == -signal.SIGKILL

    # 1. no request failed, and every answer is the right one
    failures = [(n, status, body) for n, status, body in results if status != 200]
    assert failures == []
    for number, _, body in results:
        assert isinstance(body, dict)
        assert comparable(body) == expected[number % len(IMAGES)], number
    assert ready.status_code == 200

    # 2. every replica served traffic; the victim's failures were retried on the others
    lines = [line for line in read_access_log(lb.access_log) if line.method == "POST"]
    assert len(lines) == REQUESTS
    assert all(line.status == 200 for line in lines)
    served = Counter(line.upstreams[-1] for line in lines)
    assert set(served) == {f"127.0.0.1:{port}" for port in ports}
    assert all(line.upstream_statuses[-1] == "200" for line in lines)
    victim_address = f"127.0.0.1:{victim_port}"
    retried = [line for line in lines if victim_address in line.upstreams[:-1]]
    assert retried, "no request met the killed replica; the failover was not exercised"
    for line in retried:
        failed_at = line.upstreams.index(victim_address)
        assert line.upstream_statuses[failed_at] == "502"  # refused or dropped connection
