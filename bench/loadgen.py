"""The load generator: a separate process, asyncio + httpx, closed loop, bounded request count.

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
import json
import os
import resource
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx

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


async def _run(url: str, bodies: list[bytes], concurrency: int, requests: int, warmup: int) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Content-Type": CONTENT_TYPE}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:

        async def phase(count: int, record: bool) -> None:
            counter = iter(range(count))

            async def worker() -> None:
                for index in counter:
                    body = bodies[index % len(bodies)]
                    started = time.perf_counter()
                    try:
                        response = await client.post(url, content=body, headers=headers)
                        status = str(response.status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    elapsed = time.perf_counter() - started
                    if not record:
                        continue
                    if status == "200":
                        latencies.append(elapsed)
                    else:
                        errors[status] = errors.get(status, 0) + 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await phase(warmup, record=False)
        cpu0 = _cpu_seconds()
        wall0 = time.perf_counter()
        await phase(requests, record=True)
        wall = time.perf_counter() - wall0
        cpu = _cpu_seconds() - cpu0
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
