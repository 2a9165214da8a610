"""A real uvicorn on 127.0.0.1: body limits on the wire, SIGHUP reload under load, SIGTERM drain,
over-capacity 503s, and health answering while inference is saturated."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from service_images import gradient_rgb, png

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GOOD_PNG = png(gradient_rgb(40, 40))
RAW_PNG = {"content-type": "image/png"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@contextmanager
def uvicorn_server(
    models_dir: Path, tmp_path: Path, log_level: str = "warning", **env: str
) -> Iterator[Server]:
    port = free_port()
    environment = {
        **os.environ,
        "ACTLAB_MODELS_DIR": str(models_dir),
        "ACTLAB_WARMUP_RUNS": "1",
        **{f"ACTLAB_{key.upper()}": value for key, value in env.items()},
    }
    log_path = tmp_path / f"uvicorn-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "20",
         "--log-level", log_level],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}", port, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def _wait_ready(server: Server, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    with server.client(timeout=2) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise AssertionError("uvicorn exited during startup")
            try:
                if client.get("/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def raw_http(port: int, head: bytes, body_chunks: list[bytes]) -> tuple[int, dict[str, object]]:
    """Send a request by hand (so we control framing); return (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: it did not want the rest
        response = b""
        while b"\r\n\r\n" not in response or not _complete(response):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    head_text, _, payload = response.partition(b"\r\n\r\n")
    status = int(head_text.split(b" ", 2)[1])
    return status, json.loads(payload)


def _complete(response: bytes) -> bool:
    head, _, payload = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(payload) >= int(line.split(b":")[1])
    return False


def test_body_limit_on_the_wire(model_repo: Path, tmp_path: Path) -> None:
    limit = 100_000
    with uvicorn_server(model_repo, tmp_path, max_body_bytes=str(limit)) as server:
        declared = (
            b"POST /v1/models/tiny-relu/classify HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: image/png\r\nContent-Length: " + str(limit + 1).encode() + b"\r\n\r\n"
        )
        status, body = raw_http(server.port, declared, [])  # no body sent: rejected unread
        assert (status, body["error"]["code"]) == (413, "payload_too_large")  # type: ignore[index]

        chunked_head = (
            b"POST /v1/models/tiny-relu/classify HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"\x89PNG" + b"\x00" * 29_996
        chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(5)] + [b"0\r\n\r\n"]
        status, body = raw_http(server.port, chunked_head, chunks)
        assert (status, body["error"]["code"]) == (413, "payload_too_large")  # type: ignore[index]

        with server.client() as client:
            at_limit = GOOD_PNG + b"\x00" * (limit - len(GOOD_PNG))  # trailing bytes after IEND
            response = client.post(
                "/v1/models/tiny-relu/classify", content=at_limit, headers=RAW_PNG
            )
            assert response.status_code == 200
            metrics = client.get("/metrics").text
            assert 'actlab_rejections_total{reason="payload_too_large"} 2.0' in metrics


def _classify_stream(
    server: Server, stop: threading.Event, outcomes: list[tuple[int, int | None]], limit: int
) -> None:
    with server.client() as client:
        while not stop.is_set() and len(outcomes) < limit:
            response = client.post(
                "/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG
            )
            version = response.json().get("version") if response.status_code == 200 else None
            outcomes.append((response.status_code, version))


def _wait_for(predicate: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_sighup_reload_while_requests_stream(
    model_repo_copy: Path, tmp_path: Path, make_model: object
) -> None:
    with uvicorn_server(model_repo_copy, tmp_path) as server, server.client() as client:
        outcomes: list[tuple[int, int | None]] = []
        stop = threading.Event()
        streams = [
            threading.Thread(target=_classify_stream, args=(server, stop, outcomes, 3000))
            for _ in range(2)
        ]
        for stream in streams:
            stream.start()
        try:
            _wait_for(lambda: len(outcomes) >= 20)
            make_model(model_repo_copy, "tiny-relu", "relu", 3, seed=7)  # type: ignore[operator]
            server.process.send_signal(signal.SIGHUP)
            _wait_for(lambda: client.get("/v1/models/tiny-relu").json()["version"] == 3)
            seen = len(outcomes)
            _wait_for(lambda: len(outcomes) >= seen + 20)

            broken = model_repo_copy / "tiny-relu" / "4"
            broken.mkdir()
            (broken / "model.onnx").write_bytes(b"not a model")
            import hashlib

            digest = hashlib.sha256(b"not a model").hexdigest()
            (broken / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
            server.process.send_signal(signal.SIGHUP)
            _wait_for(
                lambda: 'actlab_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text
            )
            seen = len(outcomes)
            _wait_for(lambda: len(outcomes) >= seen + 20)
        finally:
            stop.set()
            for stream in streams:
                stream.join(timeout=60)
        statuses = {status for status, _ in outcomes}
        assert statuses == {200}, f"some requests failed during reload: {statuses}"
        versions = [version for _, version in outcomes]
        assert versions[0] == 2 and versions[-1] == 3
        assert set(versions) == {2, 3}
        assert client.get("/v1/models/tiny-relu").json()["version"] == 3
        assert client.get("/health/ready").status_code == 200


def _slow_body(data: bytes, pieces: int, pause_s: float) -> Iterator[bytes]:
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        yield data[start : start + step]
        time.sleep(pause_s)


def test_sigterm_drains_in_flight_requests(model_repo: Path, tmp_path: Path) -> None:
    with uvicorn_server(model_repo, tmp_path) as server:
        results: list[int] = []
        lock = threading.Lock()

        def slow_request() -> None:
            with server.client() as client:
                response = client.post(
                    "/v1/models/tiny-relu/classify",
                    content=_slow_body(GOOD_PNG, pieces=10, pause_s=0.15),
                    headers=RAW_PNG,
                )
                with lock:
                    results.append(response.status_code)

        threads = [threading.Thread(target=slow_request) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # every request is now in flight, its body half sent
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        assert results == [200, 200, 200, 200]
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown has finished
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError), server.client(timeout=2) as client:
            client.get("/health/live")


def test_health_answers_and_capacity_sheds_while_inference_is_saturated(
    model_repo: Path, tmp_path: Path
) -> None:
    heavy = png(gradient_rgb(1200, 1200, seed=3))
    files = [("file", (f"{i}.png", heavy, "image/png")) for i in range(6)]
    with uvicorn_server(
        model_repo, tmp_path, max_concurrency="2", max_images_per_request="8",
        max_body_bytes=str(60_000_000),
    ) as server:  # fmt: skip
        spans: list[tuple[float, float, int, str | None]] = []
        lock = threading.Lock()

        def hammer() -> None:
            with server.client(timeout=60) as client:
                for _ in range(4):
                    started = time.monotonic()
                    response = client.post("/v1/models/tiny-relu/classify", files=files)
                    with lock:
                        spans.append(
                            (started, time.monotonic(), response.status_code,
                             response.headers.get("retry-after"))
                        )  # fmt: skip

        workers = [threading.Thread(target=hammer) for _ in range(5)]
        for worker in workers:
            worker.start()
        health: list[tuple[float, int]] = []
        with server.client(timeout=10) as client:
            time.sleep(0.3)
            for _ in range(15):
                response = client.get("/health/live")
                health.append((time.monotonic(), response.status_code))
                time.sleep(0.05)
        for worker in workers:
            worker.join(timeout=120)

        assert [status for _, status in health] == [200] * 15
        overlapping = [
            at for at, _ in health if any(start < at < end for start, end, _, _ in spans)
        ]
        assert overlapping, "no health check happened while classify requests were in flight"
        statuses = {status for _, _, status, _ in spans}
        assert statuses <= {200, 503}
        assert 200 in statuses and 503 in statuses
        assert all(retry == "1" for _, _, status, retry in spans if status == 503)
        with server.client() as client:
            assert (
                client.post(
                    "/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG
                ).status_code
                == 200
            )


def _hang_up_mid_body(port: int, path: str, content_type: bytes, start: bytes) -> None:
    """Declare a 100 000-byte body, send its well-formed ``start``, close the connection."""
    head = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: 100000\r\n\r\n"
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + start)
        time.sleep(0.2)  # the server is now waiting for the rest of the body


PART = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
UNFINISHED_UPLOADS = [  # (path, content type, the well-formed start of a longer body)
    ("/v1/models/tiny-relu/classify", b"image/png", GOOD_PNG[:1000]),
    ("/v1/classify", b"multipart/form-data; boundary=x", PART + GOOD_PNG[:1000]),
    ("/v2/models/tiny-relu/infer", b"application/json", b'{"inputs": [{"name": "input"'),
    ("/v1/activations/relu/eval", b"application/json", b'{"x": [1, 2, 3'),
]


def test_a_client_hanging_up_mid_upload_is_not_a_server_error(
    model_repo: Path, tmp_path: Path
) -> None:
    uploads = UNFINISHED_UPLOADS
    with uvicorn_server(model_repo, tmp_path) as server:
        for path, content_type, start in uploads:
            _hang_up_mid_body(server.port, path, content_type, start)
        with server.client() as client:

            def counted() -> str:
                text = client.get("/metrics").text
                rejected = 'actlab_rejections_total{reason="client_disconnected"} '
                return text if f"{rejected}{float(len(uploads))}" in text else ""

            _wait_for(counted, timeout_s=20)
            metrics = counted()
            assert 'status="500"' not in metrics and "internal_error" not in metrics
            counts = [
                line for line in metrics.splitlines() if line.startswith("actlab_requests_total{")
            ]
            assert sum('status="499"} 1.0' in line for line in counts) == len(uploads)
            assert client.get("/health/ready").status_code == 200
    log = next(tmp_path.glob("uvicorn-*.log")).read_text()
    assert "Traceback" not in log and "unhandled error" not in log


def test_startup_and_reloads_are_logged(
    model_repo_copy: Path, tmp_path: Path, make_model: object
) -> None:
    """Operators confirm a SIGHUP from the logs: actlab lines reach stderr at uvicorn's level."""
    with uvicorn_server(model_repo_copy, tmp_path, log_level="info") as server:
        make_model(model_repo_copy, "tiny-relu", "relu", 3, seed=7)  # type: ignore[operator]
        server.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "reload: loaded tiny-relu/3" in server.log.read_text())
        text = server.log.read_text()
    assert "INFO:     actlab.reload: startup: serving " in text
    assert "INFO:     actlab.registry: model tiny-relu version 3 loaded and warm" in text
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    with uvicorn_server(model_repo_copy, quiet, log_level="warning") as server:
        pass
    assert "actlab" not in server.log.read_text()


def _read_until_closed(sock: socket.socket) -> bytes:
    response = b""
    while data := sock.recv(65536):
        response += data
    return response


def test_a_stalled_upload_gets_408_and_frees_what_it_reserved(
    model_repo: Path, tmp_path: Path
) -> None:
    declared = 1_000_000
    with uvicorn_server(model_repo, tmp_path, body_timeout_s="2") as server:
        stalled = []
        for path, content_type, start in UNFINISHED_UPLOADS:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(
                b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                + content_type + b"\r\nContent-Length: " + str(declared).encode() + b"\r\n\r\n"
                + start
            )  # fmt: skip
            stalled.append(sock)
        with server.client() as client:

            def in_flight() -> float:
                for line in client.get("/metrics").text.splitlines():
                    if line.startswith("actlab_body_bytes_in_flight "):
                        return float(line.split()[1])
                raise AssertionError("no actlab_body_bytes_in_flight in /metrics")

            # the two image uploads reserved their declared length before their first byte
            _wait_for(lambda: in_flight() >= 2 * declared, timeout_s=2)
            for sock, (path, _, _) in zip(stalled, UNFINISHED_UPLOADS, strict=True):
                with sock:
                    head, _, payload = _read_until_closed(sock).partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408 "), (path, head)
                assert b"connection: close" in head.lower(), path
                message = json.loads(payload)["error"]
                if not path.startswith("/v2"):
                    assert message["code"] == "body_timeout"
                    message = message["message"]
                assert message.startswith("the request body stopped arriving: nothing came for 2 s")
            assert in_flight() == 0.0
            metrics = client.get("/metrics").text
            assert 'actlab_rejections_total{reason="body_timeout"} 4.0' in metrics
            assert "Traceback" not in server.log.read_text()
            served = client.post("/v1/models/tiny-relu/classify", content=GOOD_PNG, headers=RAW_PNG)
            assert served.status_code == 200
