"""The shipped nginx rules in action, in front of stub replicas on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deploy_helpers import free_port, read_access_log
from nginx_fixtures import StubReplica, StubReply, run_load_balancer

pytestmark = pytest.mark.network

OVERLOADED = json.dumps(
    {"error": {"code": "overloaded", "message": "too many requests in flight; retry shortly"}}
).encode()


@pytest.fixture
def stubs() -> Iterator[list[StubReplica]]:
    started: list[StubReplica] = []
    yield started
    for stub in started:
        stub.stop()


def start(stubs: list[StubReplica], reply: StubReply, count: int = 1) -> list[StubReplica]:
    new = [StubReplica(reply).start() for _ in range(count)]
    stubs.extend(new)
    return new


def total_hits(replicas: list[StubReplica]) -> int:
    return sum(len(r.hits) for r in replicas)


def test_post_is_retried_on_a_replica_that_refuses_connections(
    tmp_path: Path, stubs: list[StubReplica]
) -> None:
    (alive,) = start(stubs, StubReply(200, body=b'{"label": "digit-3"}'))
    refused = free_port()  # nothing listens there
    body = bytes(range(256)) * 400
    with run_load_balancer(tmp_path, [refused, alive.port]) as lb:
        replies = [httpx.post(f"{lb.url}/v1/classify", content=body, timeout=10) for _ in range(6)]
    assert [r.status_code for r in replies] == [200] * 6
    assert [r.json() for r in replies] == [{"label": "digit-3"}] * 6
    assert alive.hits == [("POST", "/v1/classify", len(body))] * 6
    retried = [line for line in read_access_log(lb.access_log) if len(line.upstreams) == 2]
    assert retried, "no request reached the refusing replica first; the retry was not exercised"
    for line in retried:
        assert line.upstreams == [f"127.0.0.1:{refused}", f"127.0.0.1:{alive.port}"]
        assert line.upstream_statuses == ["502", "200"]
        assert line.status == 200


def test_post_is_retried_when_a_replica_dies_mid_request(
    tmp_path: Path, stubs: list[StubReplica]
) -> None:
    (dying,) = start(stubs, StubReply(0))  # reads the request, then drops the connection
    (alive,) = start(stubs, StubReply(200, body=b'{"label": "digit-5"}'))
    with run_load_balancer(tmp_path, [dying.port, alive.port]) as lb:
        replies = [
            httpx.post(f"{lb.url}/v1/classify", content=b"img", timeout=10) for _ in range(4)
        ]
    assert [(r.status_code, r.json()) for r in replies] == [(200, {"label": "digit-5"})] * 4
    assert dying.hits, "no request reached the dying replica; the retry was not exercised"
    assert len(alive.hits) == 4
    for line in read_access_log(lb.access_log):
        if len(line.upstreams) == 2:
            assert line.upstreams == [f"127.0.0.1:{dying.port}", f"127.0.0.1:{alive.port}"]
            assert line.upstream_statuses == ["502", "200"]


def test_when_every_replica_is_overloaded_the_client_gets_503_with_retry_after(
    tmp_path: Path, stubs: list[StubReplica]
) -> None:
    replicas = start(stubs, StubReply(503, {"Retry-After": "7"}, OVERLOADED), count=3)
    with run_load_balancer(tmp_path, [r.port for r in replicas]) as lb:
        reply = httpx.post(f"{lb.url}/v1/classify", content=b"x" * 100, timeout=10)
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "7"
    assert reply.content == OVERLOADED
    assert total_hits(replicas) == 3  # each replica tried once, then the last 503 is passed on


@pytest.mark.parametrize("status", [500, 504])
def test_attempted_work_is_not_repeated_on_another_replica(
    tmp_path: Path, stubs: list[StubReplica], status: int
) -> None:
    body = json.dumps({"error": {"code": "x", "message": f"failed with {status}"}}).encode()
    replicas = start(stubs, StubReply(status, body=body), count=2)
    with run_load_balancer(tmp_path, [r.port for r in replicas]) as lb:
        reply = httpx.post(f"{lb.url}/v1/classify", content=b"x", timeout=10)
    assert reply.status_code == status
    assert reply.content == body  # the replica's own error, not nginx's page
    assert total_hits(replicas) == 1


def test_body_above_the_service_limit_is_refused_at_the_edge(
    tmp_path: Path, stubs: list[StubReplica]
) -> None:
    (replica,) = start(stubs, StubReply(200))
    with run_load_balancer(tmp_path, [replica.port]) as lb:
        at_limit = httpx.post(f"{lb.url}/v1/classify", content=b"\0" * 20_000_000, timeout=30)
        over = httpx.post(f"{lb.url}/v1/classify", content=b"\0" * 20_000_001, timeout=30)
        over_v2 = httpx.post(f"{lb.url}/v2/models/m/infer", content=b"\0" * 20_000_001, timeout=30)
    assert at_limit.status_code == 200
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/json"
    assert over.json() == {
        "error": {
            "code": "payload_too_large",
            "message": "request body is larger than 20000000 bytes; send a smaller image",
        }
    }
    assert over_v2.status_code == 413
    assert over_v2.json() == {
        "error": "request body is larger than 20000000 bytes; send a smaller request"
    }
    assert replica.hits == [("POST", "/v1/classify", 20_000_000)]


def test_no_reachable_replica_is_a_503_json_error_with_retry_after(tmp_path: Path) -> None:
    with run_load_balancer(tmp_path, [free_port(), free_port()]) as lb:
        reply = httpx.post(f"{lb.url}/v1/classify", content=b"x", timeout=10)
        v2 = httpx.post(f"{lb.url}/v2/models/m/infer", content=b"{}", timeout=10)
    message = "no api replica could take the request; retry shortly"
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"
    assert reply.json() == {"error": {"code": "unavailable", "message": message}}
    # the Open Inference Protocol's error shape on /v2 paths
    assert v2.status_code == 503
    assert v2.headers["retry-after"] == "1"
    assert v2.json() == {"error": message}


def test_metrics_are_not_served_through_the_balancer(
    tmp_path: Path, stubs: list[StubReplica]
) -> None:
    (replica,) = start(stubs, StubReply(200))
    with run_load_balancer(tmp_path, [replica.port]) as lb:
        reply = httpx.get(f"{lb.url}/metrics", timeout=10)
        passed = httpx.get(f"{lb.url}/health/ready", timeout=10)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert passed.status_code == 200
    assert replica.hits == [("GET", "/health/ready", 0)]


def test_busy_replicas_are_not_taken_out_of_rotation(
    tmp_path: Path, stubs: list[StubReplica]
) -> None:
    """A burst of 503s (every replica over its concurrency limit) must not make nginx treat the
    replicas as failed: the first request after the burst reaches them again."""
    replicas = start(stubs, StubReply(503, {"Retry-After": "1"}, OVERLOADED), count=2)
    with run_load_balancer(tmp_path, [r.port for r in replicas]) as lb:
        for _ in range(8):  # each request's first try counts as a failure: 4 per replica
            busy = httpx.post(f"{lb.url}/v1/classify", content=b"x", timeout=10)
            assert busy.status_code == 503 and busy.content == OVERLOADED  # the replicas' own
        for replica in replicas:
            replica.reply = StubReply(200, body=b'{"ok": true}')
        reply = httpx.post(f"{lb.url}/v1/classify", content=b"x", timeout=10)
    assert reply.status_code == 200, reply.text
    assert total_hits(replicas) == 17


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/classify", {"error": {"code": "internal_error", "message": "{message}"}}),
        ("/v2/models/m/infer", {"error": "{message}"}),
    ],
)
def test_the_balancers_own_failure_is_a_json_error(
    tmp_path: Path, stubs: list[StubReplica], path: str, expected: dict[str, object]
) -> None:
    """nginx cannot buffer a body over client_body_buffer_size (its temp directory is gone, as
    when compose's tmpfs is full): the client gets the service's error shape, not an HTML page."""
    (replica,) = start(stubs, StubReply(200))
    with run_load_balancer(tmp_path, [replica.port]) as lb:
        shutil.rmtree(tmp_path / "temp" / "client_body")
        reply = httpx.post(f"{lb.url}{path}", content=b"\0" * 2_000_000, timeout=30)
    message = (
        "the load balancer failed to forward the request (its error log says why); retry later"
    )
    assert reply.status_code == 500
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == json.loads(json.dumps(expected).replace("{message}", message))
    assert replica.hits == []
