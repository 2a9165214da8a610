"""What the API documents about /v2 is true: every ``$ref`` of /openapi.json resolves, the
binary extension's response is described, the description gives both error shapes, and the
README's /v2 section names every error status the /v2 routes answer with."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

README = Path(__file__).resolve().parents[2] / "README.md"
INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


def refs(node: object) -> Iterator[str]:
    """Every ``$ref`` value anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> object:
    """The node a local JSON pointer (``#/a/b``) names; KeyError if there is none."""
    assert ref.startswith("#/"), f"{ref} is not a local reference"
    node: object = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KeyError(ref)
        node = node[part]
    return node


def test_every_ref_in_the_openapi_document_resolves(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    found = set(refs(spec))
    unresolved = set()
    for ref in found:
        try:
            resolve(spec, ref)
        except KeyError:
            unresolved.add(ref)
    assert unresolved == set()
    for path in INFER_PATHS:
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        properties = body["schema"]["properties"]
        assert properties["inputs"]["items"] == {"$ref": "#/components/schemas/RequestInput"}
        outputs = properties["outputs"]["anyOf"][0]
        assert outputs["items"] == {"$ref": "#/components/schemas/RequestOutput"}
        assert "$defs" not in body["schema"]
    schemas = spec["components"]["schemas"]
    assert schemas["RequestInput"]["required"] == ["name", "shape", "datatype"]
    assert schemas["RequestOutput"]["required"] == ["name"]


def test_infer_documents_the_binary_response_and_its_header(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in INFER_PATHS:
        ok = spec["paths"][path]["post"]["responses"]["200"]
        assert set(ok["content"]) == {"application/json", "application/octet-stream"}
        assert ok["content"]["application/octet-stream"]["schema"] == {
            "type": "string",
            "format": "binary",
        }
        assert ok["content"]["application/json"]["example"]["model_name"] == "tiny-relu"
        header = ok["headers"]["Inference-Header-Content-Length"]
        assert header["schema"] == {"type": "integer", "minimum": 1}
        assert "application/octet-stream" in header["description"]


def test_the_description_gives_both_error_shapes(client: TestClient) -> None:
    description = client.get("/openapi.json").json()["info"]["description"]
    assert '`{"error": {"code": "<stable code>", "message": ' in description
    assert '(`/v2/...`), whose errors are the protocol\'s\n`{"error": "<' in description
    v1 = client.get("/v1/models/nope").json()
    v2 = client.get("/v2/models/nope").json()
    assert set(v1["error"]) == {"code", "message"}
    assert set(v2) == {"error"} and isinstance(v2["error"], str)


def v2_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Open Inference Protocol \(v2\)\n(.*?)(?=^## )", text, re.S | re.M)
    assert match is not None, "README has no Open Inference Protocol (v2) section"
    return match.group(1)


def test_readme_names_every_v2_error_status(client: TestClient) -> None:
    paragraph = next(p for p in v2_section().split("\n\n") if '{"error": "<message>"}' in p)
    named = {int(code) for code in re.findall(r"\b([45]\d\d)\b", paragraph)}
    spec = client.get("/openapi.json").json()
    documented = {
        int(status)
        for path, operations in spec["paths"].items()
        if path.startswith("/v2")
        for operation in operations.values()
        for status in operation["responses"]
        if status[0] in "45"
    }
    assert documented == {400, 404, 408, 413, 415, 422, 503, 504}
    assert named == documented | {401}  # 401: only with an API key, so not in this document
    assert "NaN or infinity" in paragraph and "ACTLAB_INFERENCE_TIMEOUT_S" in paragraph
