"""Run the shipped nginx rules locally: an nginx process, and stub replicas to put behind it."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from deploy_helpers import (
    find_nginx,
    free_port,
    render_local_lb_config,
    stop_process,
    wait_for_http,
)


def require_nginx() -> str:
    """The nginx binary; skip when it is missing, but fail in CI (or ACTLAB_REQUIRE_NGINX=1)."""
    nginx = find_nginx()
    if nginx is not None:
        return nginx
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("ACTLAB_REQUIRE_NGINX") == "1":
        pytest.fail(
            "nginx is required here (CI=true or ACTLAB_REQUIRE_NGINX=1): apt-get install nginx"
        )
    pytest.skip("nginx is not installed (apt-get install nginx); .ci/run installs it")


@dataclass
class LoadBalancer:
    url: str
    access_log: Path
    error_log: Path


@contextmanager
def run_load_balancer(workdir: Path, upstream_ports: list[int]) -> Iterator[LoadBalancer]:
    """nginx in the foreground with the compose rules and these replicas as its upstream."""
    nginx = require_nginx()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = render_local_lb_config(workdir, upstream_ports, port)
    error_log = workdir / "error.log"
    with (workdir / "nginx.stdout").open("wb") as out:
        process = subprocess.Popen(
            [nginx, "-p", str(workdir), "-e", str(error_log), "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/lb/health", timeout_s=15, process=process)
        except AssertionError as exc:
            log = error_log.read_text() if error_log.exists() else ""
            raise AssertionError(f"{exc}\nnginx error log:\n{log}") from exc
        yield LoadBalancer(url=url, access_log=workdir / "access.log", error_log=error_log)
    finally:
        stop_process(process)


@dataclass
class StubReply:
    """What a stub replica answers; ``status=0`` drops the connection after reading the request,
    as a replica killed mid-request does."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok": true}'


@dataclass
class StubReplica:
    """A replica stand-in that answers every request with ``reply`` and records what it got."""

    reply: StubReply
    port: int = 0
    hits: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, body bytes
    _server: ThreadingHTTPServer | None = None

    def start(self) -> StubReplica:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = 0
                while received < length:
                    chunk = self.rfile.read(min(1 << 20, length - received))
                    if not chunk:
                        break
                    received += len(chunk)
                stub.hits.append((self.command, self.path, received))
                if stub.reply.status == 0:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(stub.reply.status)
                for key, value in stub.reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(stub.reply.body)))
                self.end_headers()
                self.wfile.write(stub.reply.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
