"""HTTP itself: HEAD on GET routes, Allow on 405, and bodies the framework cannot parse."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_images import gradient_rgb, png

GET_ROUTES = ["/health/live", "/health/ready", "/v1/models", "/v1/activations", "/metrics",
              "/v2", "/v2/health/ready", "/v2/models/tiny-relu"]  # fmt: skip

GOOD_PNG = png(gradient_rgb(40, 40))


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_like_get_without_a_body(client: TestClient, path: str) -> None:
    get = client.get(path)
    head = client.head(path)
    assert (head.status_code, head.content) == (get.status_code, b"")
    assert head.headers["content-type"] == get.headers["content-type"]
    if path != "/metrics":  # the metrics text changes between the two requests
        assert head.headers["content-length"] == str(len(get.content))


def test_head_on_a_post_only_route_is_405_with_allow(client: TestClient) -> None:
    response = client.head("/v1/classify")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/v1/classify", "POST"), ("POST", "/v1/models", "GET, HEAD"),
     ("DELETE", "/v2/models/tiny-relu/infer", "POST"), ("PUT", "/metrics", "GET, HEAD")],
)  # fmt: skip
def test_405_names_the_allowed_methods(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    body = response.json()
    message = body["error"] if path.startswith("/v2") else body["error"]["message"]
    assert message == f"method not allowed on this route; allowed: {allow}"


@pytest.mark.parametrize(
    "content",
    [b'{"x": ' + b"[" * 3000 + b"]" * 3000 + b"}",  # deeper than the JSON parser recurses
     b'{"x": [1], "params": {"alpha": 1' + b"0" * 5000 + b"}}",  # longer than int() reads
     b'{"x": [1], "note": "\xff\xfe"}'],  # not UTF-8
    ids=["deep", "long-integer", "not-utf8"],
)  # fmt: skip
def test_json_the_parser_cannot_read_is_a_400_that_says_so(
    client: TestClient, content: bytes
) -> None:
    response = client.post(
        "/v1/activations/relu/eval", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_body",
        "message": "the request body could not be parsed as JSON: it is not UTF-8, nests too "
        "deeply, or holds an integer too long to read",
    }
    assert client.get("/health/live").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/v1/models/" + "a" * 10_000, "/v2/models/" + "a" * 10_000,
     "/v2/models/tiny-relu/versions/" + "9" * 10_000],
)  # fmt: skip
def test_error_messages_quote_at_most_64_characters_of_the_clients_input(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert len(response.content) < 400
    assert "…" in response.text and "a" * 65 not in response.text and "9" * 65 not in response.text


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/v1/classify?topk=3", 422,
         "unknown query parameter 'topk'; this route takes: top_k, include_probabilities, version"),
        ("POST", "/v1/compare?models=tiny-relu&version=2", 422,
         "unknown query parameter 'version'; this route takes: models, top_k, "
         "include_probabilities"),
        ("GET", "/v1/models?limit=1&offset=2", 422,
         "unknown query parameters 'limit', 'offset'; this route takes: no query parameters"),
        ("GET", "/v2/models/tiny-relu?verbose=1", 400,
         "unknown query parameter 'verbose'; this route takes: no query parameters"),
    ],
)  # fmt: skip
def test_an_unknown_query_parameter_is_named_not_ignored(
    client: TestClient, method: str, path: str, status: int, message: str
) -> None:
    """FastAPI would drop it: a typo or an option the route lacks would change nothing, silently."""
    response = client.request(method, path)
    assert response.status_code == status
    body = response.json()
    if path.startswith("/v2"):
        assert body == {"error": message}
    else:
        assert body["error"] == {"code": "unknown_query_parameter", "message": message}


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("POST", "/v1/models/tiny-relu/classify?top_k=3&top_k=5",
         "query parameter 'top_k' given more than once; give each a single value"),
        ("GET", "/v1/models/tiny-relu/linearity?seed=1&samples=2&seed=2&samples=3",
         "query parameters 'seed', 'samples' given more than once; give each a single value"),
    ],
)  # fmt: skip
def test_a_single_valued_query_parameter_given_twice_is_refused(
    client: TestClient, method: str, path: str, message: str
) -> None:
    """FastAPI would keep the last value: the client could not tell which one was used."""
    response = client.request(method, path, content=GOOD_PNG, headers={"content-type": "image/png"})
    assert response.status_code == 422
    assert response.json()["error"] == {"code": "repeated_query_parameter", "message": message}


def test_a_list_query_parameter_may_repeat(client: TestClient) -> None:
    response = client.post(
        "/v1/compare?models=tiny-relu&models=tiny-tanh",
        content=GOOD_PNG,
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200
    assert [result["model"] for result in response.json()["results"]] == ["tiny-relu", "tiny-tanh"]
