"""The process-wide body budget: its arithmetic, its wiring into every image route, the JSON 503
beyond it, and that nothing stays reserved after any outcome (success, 4xx, 413, 503, 504, a
client that hangs up)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_settings, running_app
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError
from service_images import encode, gradient_rgb, png
from starlette.requests import Request

from service.body_budget import BodyBudget, BodyReservation, read_reserved, reserved_stream
from service.content_encoding import INFLATE_STEP, decode_content
from service.deps import body_reservation
from service.errors import ServiceError, Unavailable
from service.settings import Settings

MAX_BODY = 6_000  # every request below fits in it; two held ones fill the budget
IN_FLIGHT = 2 * MAX_BODY
BUSY = {
    "error": {
        "code": "over_body_capacity",
        "message": f"the server is at its limit of {IN_FLIGHT} bytes of request bodies held at "
        "once; retry shortly",
    }
}
GOOD_PNG = png(gradient_rgb(40, 40))  # 3.8 kB, barely compressible
FLAT_PNG = encode(Image.new("RGB", (32, 32), (120, 30, 200)), "PNG", compress_level=0)  # 3.2 kB
RAW_PNG = {"content-type": "image/png"}
MODEL = "/v1/models/tiny-relu"


def classify_json(image: bytes, size: int | None = None) -> bytes:
    """``{"images": [<base64>]}``, padded with spaces to exactly ``size`` bytes."""
    body = json.dumps({"images": [base64.b64encode(image).decode()]}).encode()
    return body if size is None else body + b" " * (size - len(body))


def v2_json(image: bytes, size: int | None = None) -> bytes:
    data = base64.b64encode(image).decode()
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [data],
              "parameters": {"content_type": "base64"}}  # fmt: skip
    body = json.dumps({"inputs": [tensor]}).encode()
    return body if size is None else body + b" " * (size - len(body))


def multipart(image: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x", files={"file": ("a.png", image, "image/png")})
    return request.read(), request.headers["content-type"]


JSON = {"content-type": "application/json"}
GZIP_JSON = {**JSON, "content-encoding": "gzip"}


# --- the budget itself -------------------------------------------------------------------------


def test_reserve_and_release_count_bytes_up_to_the_limit() -> None:
    budget = BodyBudget(100)
    budget.reserve(60)
    budget.reserve(40)
    assert budget.in_use == 100
    with pytest.raises(Unavailable) as info:
        budget.reserve(1)
    error = info.value
    assert (error.status, error.code, error.headers) == (
        503,
        "over_body_capacity",
        {"Retry-After": "1"},
    )
    assert error.message == (
        "the server is at its limit of 100 bytes of request bodies held at once; retry shortly"
    )
    assert budget.in_use == 100  # a refused reservation takes nothing
    budget.release(60)
    budget.reserve(0)
    budget.reserve(60)
    budget.release(100)
    assert budget.in_use == 0


def test_the_budget_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        BodyBudget(0)
    budget = BodyBudget(10)
    with pytest.raises(ValueError, match="negative"):
        budget.reserve(-1)
    budget.reserve(3)
    with pytest.raises(ValueError, match="cannot release 4 bytes: 3 are reserved"):
        budget.release(4)


def test_a_reservation_grows_gives_back_and_releases_once() -> None:
    budget = BodyBudget(100)
    first, second = BodyReservation(budget), BodyReservation(budget)
    first.add(30)
    first.add(20)
    second.add(50)
    assert (first.held, second.held, budget.in_use) == (50, 50, 100)
    with pytest.raises(Unavailable):
        first.add(1)
    assert (first.held, budget.in_use) == (50, 100)
    first.give_back(20)
    assert (first.held, budget.in_use) == (30, 80)
    with pytest.raises(ValueError, match="this request holds 30"):
        first.give_back(31)
    first.release()
    first.release()  # idempotent
    assert (first.held, budget.in_use) == (0, 50)
    second.release()
    assert budget.in_use == 0


def test_a_released_reservation_reserves_nothing_more() -> None:
    """Work that outlived its request (504, cancelled) cannot leave bytes reserved behind it."""
    budget = BodyBudget(100)
    reservation = BodyReservation(budget)
    reservation.add(10)
    reservation.release()
    with pytest.raises(ServiceError, match="the request has ended"):
        reservation.add(5)
    assert (reservation.held, budget.in_use) == (0, 0)


def test_concurrent_reservations_never_pass_the_limit() -> None:
    budget = BodyBudget(5)
    refused = [0] * 8
    peaks: list[int] = []

    def worker(index: int) -> None:
        for _ in range(2000):
            try:
                budget.reserve(2)
            except Unavailable:
                refused[index] += 1
                continue
            peaks.append(budget.in_use)
            budget.release(2)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.in_use == 0
    assert max(peaks) <= 4 and len(peaks) + sum(refused) == 8 * 2000


def fake_request(chunks: list[bytes], headers: dict[str, str] | None = None) -> Request:
    """A Starlette request whose body arrives as ``chunks`` (then an empty final message)."""
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "headers": raw}, receive)


def test_a_declared_length_is_reserved_before_the_first_byte() -> None:
    budget = BodyBudget(1000)
    reservation = BodyReservation(budget)
    seen: list[int] = []

    async def read() -> None:
        request = fake_request([b"a" * 100, b"b" * 200], {"content-length": "300"})
        async for chunk in reserved_stream(request, reservation):
            if chunk:  # Starlette ends with an empty chunk
                seen.append(budget.in_use)

    asyncio.run(read())
    assert seen == [300, 300]


def test_a_body_without_a_length_is_reserved_chunk_by_chunk() -> None:
    budget = BodyBudget(1000)
    reservation = BodyReservation(budget)
    seen: list[int] = []

    async def read() -> None:
        request = fake_request([b"a" * 100, b"b" * 200, b"c" * 50])
        async for chunk in reserved_stream(request, reservation):
            if chunk:  # Starlette ends with an empty chunk
                seen.append(budget.in_use)

    asyncio.run(read())
    assert seen == [100, 300, 350]


def test_a_body_past_the_budget_stops_at_the_chunk_that_does_not_fit() -> None:
    budget = BodyBudget(250)
    reservation = BodyReservation(budget)
    request = fake_request([b"a" * 100, b"b" * 100, b"c" * 100])
    with pytest.raises(Unavailable):
        asyncio.run(read_reserved(request, reservation))
    assert (reservation.held, budget.in_use) == (200, 200)  # released by the request's owner
    reservation.release()
    assert budget.in_use == 0


def test_the_dependency_releases_on_success_and_on_an_exception() -> None:
    budget = BodyBudget(100)
    app = type("App", (), {"state": type("State", (), {"body_budget": budget})()})()
    scope = {"type": "http", "method": "POST", "headers": [], "app": app}

    async def handle(fail: bool) -> None:
        dependency = body_reservation(Request(scope))
        reservation = await anext(dependency)
        reservation.add(70)
        assert budget.in_use == 70
        if fail:
            with pytest.raises(RuntimeError):
                await dependency.athrow(RuntimeError("the route failed"))
        else:
            with pytest.raises(StopAsyncIteration):
                await anext(dependency)

    asyncio.run(handle(fail=False))
    assert budget.in_use == 0
    asyncio.run(handle(fail=True))
    assert budget.in_use == 0


def test_inflation_is_counted_step_by_step_and_stops_when_refused() -> None:
    data = bytes(range(256)) * 5000  # 1.28 MB: several steps
    packed = gzip.compress(data[:300_000]) + gzip.compress(data[300_000:])  # two members
    steps: list[int] = []
    assert decode_content(packed, "gzip", len(data), steps.append) == data
    assert sum(steps) == len(data) and max(steps) <= INFLATE_STEP and len(steps) >= 5
    budget = BodyBudget(600_000)
    reservation = BodyReservation(budget)
    with pytest.raises(Unavailable):
        decode_content(packed, "gzip", len(data), reservation.add)
    assert 600_000 - INFLATE_STEP < reservation.held <= 600_000


# --- settings ------------------------------------------------------------------------------------


def test_the_budget_must_hold_one_request_compressed_and_inflated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(max_body_bytes=1000, max_body_bytes_in_flight=1999)
    message = str(info.value)
    assert (
        "ACTLAB_MAX_BODY_BYTES_IN_FLIGHT (1999) must be at least twice ACTLAB_MAX_BODY_BYTES "
        "(1000), i.e. at least 2000" in message
    )
    assert Settings(max_body_bytes=1000, max_body_bytes_in_flight=2000).max_body_bytes_in_flight
    monkeypatch.delenv("ACTLAB_MAX_BODY_BYTES", raising=False)
    monkeypatch.setenv("ACTLAB_MAX_BODY_BYTES_IN_FLIGHT", "50000000")
    assert Settings().max_body_bytes_in_flight == 50_000_000
    monkeypatch.setenv("ACTLAB_MAX_BODY_BYTES_IN_FLIGHT", "30000000")
    with pytest.raises(ValidationError, match="at least twice ACTLAB_MAX_BODY_BYTES"):
        Settings()  # the default 20 MB body limit needs 40 MB


def test_the_default_holds_twelve_maximum_size_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTLAB_MAX_BODY_BYTES", raising=False)
    monkeypatch.delenv("ACTLAB_MAX_BODY_BYTES_IN_FLIGHT", raising=False)
    settings = Settings()
    assert settings.max_body_bytes_in_flight == 256_000_000
    assert settings.max_body_bytes_in_flight // settings.max_body_bytes == 12


# --- the routes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(model_repo: Path) -> Iterator[TestClient]:
    settings = make_settings(
        model_repo, max_body_bytes=MAX_BODY, max_body_bytes_in_flight=IN_FLIGHT
    )
    with running_app(settings) as test_client:
        yield test_client


def budget_of(client: TestClient) -> BodyBudget:
    budget: BodyBudget = client.app.state.body_budget  # type: ignore[attr-defined]
    return budget


def rejections(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'actlab_rejections_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


class HeldUpload:
    """A body sent in two parts that waits, after the app has asked for the second part (so the
    first is read and reserved), until ``finish``."""

    def __init__(self, body: bytes, first: int | None = None) -> None:
        self.body = body
        self.first = len(body) // 2 if first is None else first
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.body[: self.first]
        self.reading.set()
        await self.go.wait()
        yield self.body[self.first :]

    def post(
        self, http: httpx.AsyncClient, path: str, headers: dict[str, str], *, declared: bool
    ) -> asyncio.Task[httpx.Response]:
        if declared:
            headers = {**headers, "content-length": str(len(self.body))}
        return asyncio.create_task(http.post(path, content=self.chunks(), headers=headers))

    async def started(self) -> None:
        await asyncio.wait_for(self.reading.wait(), timeout=30)  # a hang guard, not a timing


@asynccontextmanager
async def asgi_client(client: TestClient) -> AsyncIterator[httpx.AsyncClient]:
    """An async client on the app inside ``client`` (run it with ``client.portal.call``): request
    bodies stream chunk by chunk, so uploads can be held open."""
    transport = httpx.ASGITransport(app=client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def in_portal(client: TestClient, scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``scenario`` on the app's event loop; a hang (a held upload never refused) fails."""

    async def guarded() -> Any:
        return await asyncio.wait_for(scenario(), timeout=60)

    assert client.portal is not None
    return client.portal.call(guarded)


def test_uploads_beyond_the_budget_get_503_while_the_server_keeps_serving(
    client: TestClient,
) -> None:
    budget = budget_of(client)
    before = rejections(client, "over_body_capacity")
    body, content_type = multipart(GOOD_PNG)
    refused: list[tuple[str, dict[str, Any]]] = [
        ("/v1/classify", {"content": GOOD_PNG, "headers": RAW_PNG}),
        (f"{MODEL}/classify", {"content": body, "headers": {"content-type": content_type}}),
        (f"{MODEL}/classify", {"content": classify_json(GOOD_PNG), "headers": JSON}),
        (f"{MODEL}/activations", {"content": GOOD_PNG, "headers": RAW_PNG}),
        ("/v1/compare", {"content": GOOD_PNG, "headers": RAW_PNG}),
        ("/v2/models/tiny-relu/infer", {"content": v2_json(GOOD_PNG), "headers": JSON}),
    ]

    async def scenario() -> dict[str, Any]:
        async with asgi_client(client) as http:
            held = [HeldUpload(classify_json(GOOD_PNG, MAX_BODY)) for _ in range(2)]
            tasks = [h.post(http, f"{MODEL}/classify", JSON, declared=True) for h in held]
            for upload in held:
                await upload.started()
            full = budget.in_use
            answers = [await http.post(path, **kwargs) for path, kwargs in refused]
            chunked = HeldUpload(GOOD_PNG)  # no Content-Length: refused at its first chunk
            answers.append(await http.post(f"{MODEL}/classify", content=chunked.chunks(),
                                           headers=RAW_PNG))  # fmt: skip
            assert not chunked.reading.is_set()  # its second part was never asked for
            served = [await http.get("/health/live"), await http.get(f"{MODEL}")]
            empty = await http.post(f"{MODEL}/classify", content=b"", headers=RAW_PNG)
            for upload in held:
                upload.go.set()
            done = await asyncio.gather(*tasks)
            return {"full": full, "answers": answers, "served": served, "empty": empty,
                    "done": done, "after": budget.in_use}  # fmt: skip

    result = in_portal(client, scenario)
    assert result["full"] == IN_FLIGHT
    for response in result["answers"][:-2] + result["answers"][-1:]:
        assert (response.status_code, response.json()) == (503, BUSY)
        assert response.headers["retry-after"] == "1"
    v2 = result["answers"][-2]
    assert (v2.status_code, v2.json()) == (503, {"error": BUSY["error"]["message"]})
    assert v2.headers["retry-after"] == "1"
    assert [r.status_code for r in result["served"]] == [200, 200]
    assert result["empty"].status_code == 400  # nothing to reserve: refused for being empty
    assert result["empty"].json()["error"]["code"] == "invalid_image"
    for response in result["done"]:
        assert response.status_code == 200 and response.json()["model"] == "tiny-relu"
    assert result["after"] == budget.in_use == 0
    assert rejections(client, "over_body_capacity") - before == len(refused) + 1
    again = client.post(f"{MODEL}/classify", content=GOOD_PNG, headers=RAW_PNG)
    assert again.status_code == 200


def test_a_body_without_a_length_holds_only_what_has_arrived(client: TestClient) -> None:
    budget = budget_of(client)

    async def scenario() -> dict[str, Any]:
        async with asgi_client(client) as http:
            chunked = HeldUpload(classify_json(GOOD_PNG, MAX_BODY), first=1000)
            declared = HeldUpload(classify_json(GOOD_PNG, MAX_BODY))
            tasks = [chunked.post(http, f"{MODEL}/classify", JSON, declared=False)]
            await chunked.started()
            after_first_chunk = budget.in_use
            tasks.append(declared.post(http, f"{MODEL}/classify", JSON, declared=True))
            await declared.started()
            both = budget.in_use
            # 5000 bytes are free: a 3.8 kB image fits, a 5.5 kB body does not
            fits = await http.post(f"{MODEL}/classify", content=GOOD_PNG, headers=RAW_PNG)
            too_big = await http.post(
                f"{MODEL}/classify", content=classify_json(GOOD_PNG, 5500), headers=JSON
            )
            chunked.go.set()
            declared.go.set()
            done = await asyncio.gather(*tasks)
            return {"first": after_first_chunk, "both": both, "fits": fits,
                    "too_big": too_big, "done": done}  # fmt: skip

    result = in_portal(client, scenario)
    assert (result["first"], result["both"]) == (1000, 1000 + MAX_BODY)
    assert result["fits"].status_code == 200
    assert (result["too_big"].status_code, result["too_big"].json()) == (503, BUSY)
    assert [r.status_code for r in result["done"]] == [200, 200]
    assert budget.in_use == 0


def test_inflated_bytes_count_against_the_budget(client: TestClient) -> None:
    """With one maximum-size upload held, a small gzip body fits on the wire but not once
    inflated: refused while it inflates (v1 on the event loop's thread pool, v2 in its worker)."""
    budget = budget_of(client)
    v1_body = gzip.compress(classify_json(GOOD_PNG, MAX_BODY))
    v2_body = gzip.compress(v2_json(GOOD_PNG, MAX_BODY))
    assert len(v1_body) < MAX_BODY and len(v2_body) < MAX_BODY

    async def scenario() -> dict[str, Any]:
        async with asgi_client(client) as http:
            held = HeldUpload(classify_json(GOOD_PNG, MAX_BODY))
            task = held.post(http, f"{MODEL}/classify", JSON, declared=True)
            await held.started()
            v1 = await http.post(f"{MODEL}/classify", content=v1_body, headers=GZIP_JSON)
            v2 = await http.post("/v2/models/tiny-relu/infer", content=v2_body, headers=GZIP_JSON)
            held.go.set()
            done = await task
            alone = await http.post(f"{MODEL}/classify", content=v1_body, headers=GZIP_JSON)
            return {"v1": v1, "v2": v2, "done": done, "alone": alone}

    result = in_portal(client, scenario)
    assert (result["v1"].status_code, result["v1"].json()) == (503, BUSY)
    assert result["v2"].status_code == 503
    assert result["v2"].json() == {"error": BUSY["error"]["message"]}
    assert result["done"].status_code == 200
    assert result["alone"].status_code == 200  # compressed + inflated: at most 2 × MAX_BODY
    assert budget.in_use == 0


class RecordingBudget(BodyBudget):
    """A budget that records ``in_use`` after every change."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.trace: list[int] = []

    def reserve(self, size: int) -> None:
        super().reserve(size)
        self.trace.append(self.in_use)

    def release(self, size: int) -> None:
        super().release(size)
        self.trace.append(self.in_use)


@pytest.fixture
def recording(client: TestClient) -> Iterator[RecordingBudget]:
    app_state = client.app.state  # type: ignore[attr-defined]
    original, app_state.body_budget = app_state.body_budget, RecordingBudget(IN_FLIGHT)
    try:
        yield app_state.body_budget
    finally:
        app_state.body_budget = original


def test_a_compressed_body_holds_both_while_inflating_then_only_the_inflated_bytes(
    client: TestClient, recording: RecordingBudget
) -> None:
    inflated = classify_json(FLAT_PNG)
    packed = gzip.compress(inflated)
    response = client.post(f"{MODEL}/classify", content=packed, headers=GZIP_JSON)
    assert response.status_code == 200
    compressed, both = len(packed), len(packed) + len(inflated)
    assert recording.trace == [compressed, both, len(inflated), 0]


def test_a_gzip_multipart_body_is_counted_the_same_way(
    client: TestClient, recording: RecordingBudget
) -> None:
    body, content_type = multipart(FLAT_PNG)
    packed = gzip.compress(body)
    headers = {"content-type": content_type, "content-encoding": "gzip"}
    response = client.post(f"{MODEL}/classify", content=packed, headers=headers)
    assert response.status_code == 200
    assert recording.trace == [len(packed), len(packed) + len(body), len(body), 0]


def test_a_v2_gzip_body_keeps_both_until_the_request_ends(
    client: TestClient, recording: RecordingBudget
) -> None:
    inflated = v2_json(FLAT_PNG)
    packed = gzip.compress(inflated)
    response = client.post("/v2/models/tiny-relu/infer", content=packed, headers=GZIP_JSON)
    assert response.status_code == 200
    assert recording.trace == [len(packed), len(packed) + len(inflated), 0]


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


BAD_PNG_MULTIPART = multipart(GOOD_PNG[:100])
# (id, path, request kwargs, expected status): each leaves nothing reserved behind it
OUTCOMES: list[tuple[str, str, dict[str, Any], int]] = [
    ("raw", f"{MODEL}/classify", {"content": GOOD_PNG, "headers": RAW_PNG}, 200),
    ("default-model", "/v1/classify", {"content": GOOD_PNG, "headers": RAW_PNG}, 200),
    ("multipart", f"{MODEL}/classify", {"files": {"file": ("a.png", GOOD_PNG, "image/png")}}, 200),
    ("json", f"{MODEL}/classify", {"content": classify_json(GOOD_PNG), "headers": JSON}, 200),
    ("gzip", f"{MODEL}/classify",
     {"content": gzip.compress(FLAT_PNG), "headers": {**RAW_PNG, "content-encoding": "gzip"}}, 200),
    ("activations", f"{MODEL}/activations", {"content": GOOD_PNG, "headers": RAW_PNG}, 200),
    ("compare", "/v1/compare", {"content": GOOD_PNG, "headers": RAW_PNG}, 200),
    ("v2", "/v2/models/tiny-relu/infer", {"content": v2_json(GOOD_PNG), "headers": JSON}, 200),
    ("v2-version", "/v2/models/tiny-relu/versions/1/infer",
     {"content": v2_json(GOOD_PNG), "headers": JSON}, 200),
    ("malformed-image", f"{MODEL}/classify", {"content": GOOD_PNG[:100], "headers": RAW_PNG}, 400),
    ("malformed-multipart-image", f"{MODEL}/classify",
     {"content": BAD_PNG_MULTIPART[0], "headers": {"content-type": BAD_PNG_MULTIPART[1]}}, 400),
    ("multipart-cut-short", f"{MODEL}/classify",
     {"content": BAD_PNG_MULTIPART[0][:-20],
      "headers": {"content-type": BAD_PNG_MULTIPART[1]}}, 400),
    ("not-json", f"{MODEL}/classify", {"content": b"{nope", "headers": JSON}, 400),
    ("gzip-truncated", f"{MODEL}/classify",
     {"content": gzip.compress(FLAT_PNG)[:-8],
      "headers": {**RAW_PNG, "content-encoding": "gzip"}}, 400),
    ("unknown-model", "/v1/models/nope/classify", {"content": GOOD_PNG, "headers": RAW_PNG}, 404),
    ("over-the-limit-declared", f"{MODEL}/classify",
     {"content": b"\x89PNG" + b"\x00" * MAX_BODY, "headers": RAW_PNG}, 413),
    ("over-the-limit-chunked", f"{MODEL}/classify",
     {"content": chunks_of(b"\x89PNG" + b"\x00" * MAX_BODY, 1000), "headers": RAW_PNG}, 413),
    ("over-the-limit-inflated", f"{MODEL}/classify",
     {"content": gzip.compress(b"\x00" * (MAX_BODY + 1)),
      "headers": {**RAW_PNG, "content-encoding": "gzip"}}, 413),
    ("v2-over-the-limit-inflated", "/v2/models/tiny-relu/infer",
     {"content": gzip.compress(b" " * (MAX_BODY + 1)), "headers": GZIP_JSON}, 413),
    ("unsupported-type", f"{MODEL}/classify",
     {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ("v2-bad-tensor", "/v2/models/tiny-relu/infer", {"content": b'{"inputs": 1}', "headers": JSON},
     400),
    ("bad-query", f"{MODEL}/classify",
     {"params": {"top_k": 0}, "content": GOOD_PNG, "headers": RAW_PNG}, 422),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "kwargs", "status"),
    [pytest.param(*case[1:], id=case[0]) for case in OUTCOMES],
)
def test_nothing_stays_reserved_after_any_outcome(
    client: TestClient, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert budget_of(client).in_use == 0


EVAL = "/v1/activations/relu/eval"


def eval_json(size: int) -> bytes:
    """An activation evaluation request, padded with spaces to exactly ``size`` bytes."""
    body = json.dumps({"x": [-1.0, 0.0, 2.0]}).encode()
    return body + b" " * (size - len(body))


def test_activation_json_bodies_are_held_in_the_budget_while_they_arrive(
    client: TestClient,
) -> None:
    budget = budget_of(client)
    upload = HeldUpload(eval_json(3000), first=1000)

    async def scenario() -> tuple[int, int, int]:
        async with asgi_client(client) as http:
            task = upload.post(http, EVAL, {"content-type": "application/json"}, declared=False)
            await upload.started()
            held = budget.in_use
            upload.go.set()
            response = await task
            return held, response.status_code, budget.in_use

    assert in_portal(client, scenario) == (1000, 200, 0)


def test_activation_json_beyond_the_budget_gets_503_and_the_server_keeps_serving(
    client: TestClient,
) -> None:
    budget = budget_of(client)
    before = rejections(client, "over_body_capacity")
    body = eval_json(3000)
    compressed = gzip.compress(body)
    assert len(compressed) < 200  # the spaces: only the inflated bytes can fill the budget
    budget.reserve(IN_FLIGHT - 1000)  # other requests' bodies
    try:
        for kwargs in (
            {"content": body, "headers": {"content-type": "application/json"}},
            {"content": compressed,
             "headers": {"content-type": "application/json", "content-encoding": "gzip"}},
        ):  # fmt: skip
            response = client.post(EVAL, **kwargs)  # type: ignore[arg-type]
            assert (response.status_code, response.json()) == (503, BUSY)
            assert response.headers["retry-after"]
            assert budget.in_use == IN_FLIGHT - 1000
    finally:
        budget.release(IN_FLIGHT - 1000)
    response = client.post(EVAL, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["y"] == [0.0, 0.0, 2.0]
    assert budget.in_use == 0
    assert rejections(client, "over_body_capacity") == before + 2


def test_nothing_stays_reserved_after_an_over_capacity_503(client: TestClient) -> None:
    limiter = client.app.state.executor.limiter  # type: ignore[attr-defined]
    for _ in range(limiter.limit):  # other requests hold every inference slot
        limiter.acquire()
    try:
        response = client.post(f"{MODEL}/classify", content=GOOD_PNG, headers=RAW_PNG)
    finally:
        for _ in range(limiter.limit):
            limiter.release()
    assert (response.status_code, response.json()["error"]["code"]) == (503, "over_capacity")
    assert budget_of(client).in_use == 0


def test_nothing_stays_reserved_after_the_client_hangs_up(client: TestClient) -> None:
    app = client.app
    messages = [
        {"type": "http.request", "body": GOOD_PNG[:1000], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": f"{MODEL}/classify", "raw_path": f"{MODEL}/classify".encode(),
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"content-type", b"image/png"),
                    (b"content-length", str(len(GOOD_PNG)).encode())],
    }  # fmt: skip
    held_while_reading: list[int] = []

    async def receive() -> dict[str, Any]:
        held_while_reading.append(budget_of(client).in_use)
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def call() -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]

    in_portal(client, call)
    assert held_while_reading == [len(GOOD_PNG), len(GOOD_PNG)]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert budget_of(client).in_use == 0


def test_nothing_stays_reserved_after_a_504(model_repo: Path) -> None:
    settings = make_settings(
        model_repo,
        max_body_bytes=MAX_BODY,
        max_body_bytes_in_flight=IN_FLIGHT,
        inference_timeout_s=1e-6,
    )
    with running_app(settings) as client:
        budget = budget_of(client)
        for path, body, headers in [
            (f"{MODEL}/classify", GOOD_PNG, RAW_PNG),
            ("/v2/models/tiny-relu/infer", gzip.compress(v2_json(FLAT_PNG)), GZIP_JSON),
        ]:
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == 504
            assert budget.in_use == 0
    assert budget.in_use == 0  # after shutdown waited for the abandoned work too
