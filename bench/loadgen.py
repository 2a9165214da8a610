"""The load generator: a separate process, asyncio streams, closed loop, bounded request count.

``concurrency`` clients each send their next request as soon as the previous one is answered,
until ``requests`` have been sent in total (after ``warmup`` untimed ones). Request bodies are
prebuilt multipart documents (the same bytes for every server), so the generator's own work per
request is small; it reports its CPU time so the suite can show it is not the bottleneck.
Only 127.0.0.1 is allowed.

    python -m bench.loadgen URL BODY_DIR --concurrency 4 --requests 60  → JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

HOST = "127.0.0.1"
BOUNDARY = "actlab-bench-" + uuid.UUID(int=0).hex


def multipart_body(image: bytes, filename: str = "image.jpg") -> bytes:
    """One ``file`` part holding ``image``, as a browser or ``requests`` would send it."""
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{BOUNDARY}--\r\n".encode()


CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a few µs of CPU per request.

    httpx costs ~2 ms of CPU per request with a 700 kB body; on two cores that would be taken
    from the server under test, so the generator speaks the protocol directly (requests with
    Content-Length, responses with Content-Length, reconnecting when the server closes).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, content_type: str) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head)
        self.writer.write(body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _run(url: str, bodies: list[bytes], concurrency: int, requests: int, warmup: int) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    parts = urlsplit(url)
    host, port, path = parts.hostname or HOST, parts.port or 80, parts.path or "/"
    connections = [Connection(host, port) for _ in range(concurrency)]

    async def phase(count: int, record: bool) -> None:
        counter = iter(range(count))

        async def worker(connection: Connection) -> None:
            for index in counter:
                body = bodies[index % len(bodies)]
                started = time.perf_counter()
                try:
                    status = str(await connection.post(path, body, CONTENT_TYPE))
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                    status = type(exc).__name__
                    await connection.close()
                elapsed = time.perf_counter() - started
                if not record:
                    continue
                if status == "200":
                    latencies.append(elapsed)
                else:
                    errors[status] = errors.get(status, 0) + 1

        await asyncio.gather(*(worker(c) for c in connections))

    await phase(warmup, record=False)
    cpu0 = _cpu_seconds()
    wall0 = time.perf_counter()
    await phase(requests, record=True)
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    for connection in connections:
        await connection.close()
    return {
        "latencies_s": latencies,
        "errors": errors,
        "wall_s": wall,
        "loadgen_cpu_s": cpu,
        "requests": requests,
        "warmup": warmup,
        "concurrency": concurrency,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def check_local(url: str) -> None:
    host = urlsplit(url).hostname
    if host != "127.0.0.1":
        raise SystemExit(f"the load generator only targets 127.0.0.1, not {host!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("url")
    parser.add_argument("body_dir", type=Path, help="directory of prebuilt request bodies")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=0)
    args = parser.parse_args(argv)
    check_local(args.url)
    bodies = [p.read_bytes() for p in sorted(args.body_dir.iterdir()) if p.suffix == ".body"]
    if not bodies:
        raise SystemExit(f"no *.body files in {args.body_dir}")
    result = asyncio.run(_run(args.url, bodies, args.concurrency, args.requests, args.warmup))
    result["pid"] = os.getpid()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
