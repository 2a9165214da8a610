"""The OpenAPI docs of model inspection (POST /v1/models/{name}/activations) and /v1/compare
describe what the server accepts and what the shipped models (models/resnet20-*-digits) return."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_settings, running_app
from fastapi.testclient import TestClient
from PIL import Image

from service.analysis_api import CompareResponse, InspectionResponse

SHIPPED = Path(__file__).resolve().parents[2] / "models"
ROUTES = {"/v1/models/{name}/activations": "InspectionResponse", "/v1/compare": "CompareResponse"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app serving the shipped models that the examples name (copied: only those load)."""
    repo = tmp_path_factory.mktemp("shipped")
    for name in sorted(_example_models()):
        assert (SHIPPED / name).is_dir(), f"the examples name {name!r}, which is not shipped"
        shutil.copytree(SHIPPED / name, repo / name)
    with running_app(make_settings(repo, intra_op_threads=1)) as test_client:
        assert test_client.get("/health/ready").status_code == 200
        yield test_client


def _examples(model: type[InspectionResponse] | type[CompareResponse]) -> list[dict[str, Any]]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    examples = extra["examples"]
    assert isinstance(examples, list) and examples
    return examples


def _example_models() -> set[str]:
    names = {e["model"] for e in _examples(InspectionResponse)}
    return names | {r["model"] for e in _examples(CompareResponse) for r in e["results"]}


def _png() -> bytes:
    """A white 3-ish stroke on black, 32×32 (any image will do: only shapes and labels matter)."""
    pixels = np.zeros((32, 32), dtype=np.uint8)
    pixels[6:9, 8:24] = pixels[15:18, 10:24] = pixels[24:27, 8:24] = 255
    pixels[6:27, 21:24] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "PNG")
    return buffer.getvalue()


def test_multipart_schema_lists_every_form_field_the_routes_accept(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    forms = {
        path: paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        for path in ROUTES
    }
    inspect, compare = forms["/v1/models/{name}/activations"], forms["/v1/compare"]
    assert set(inspect["properties"]) == {"file", "top_k", "include_probabilities", "version"}
    assert set(compare["properties"]) == {"file", "top_k", "include_probabilities"}
    for form in forms.values():
        assert form["properties"]["include_probabilities"] == {"type": "boolean"}
        assert form["properties"]["top_k"]["type"] == "integer"


@pytest.mark.parametrize("path", ["/v1/models/resnet20-sigmoid-digits/activations", "/v1/compare"])
def test_include_probabilities_form_field_is_honoured(client: TestClient, path: str) -> None:
    files = {"file": ("digit.png", _png(), "image/png")}
    for value, sent in (("true", True), ("false", False)):
        response = client.post(path, files=files, data={"include_probabilities": value})
        assert response.status_code == 200, response.text
        data = response.json()
        entries = [data["classification"]] if "classification" in data else data["results"]
        for entry in entries:
            probabilities = entry.get("probabilities")
            assert (probabilities is not None) is sent
            if sent:
                assert len(probabilities) == 10
                assert sum(probabilities) == pytest.approx(1.0, abs=1e-6)


def _labels(client: TestClient, model: str) -> list[str]:
    response = client.get(f"/v1/models/{model}")
    assert response.status_code == 200, response.text
    labels = response.json()["labels"]
    assert isinstance(labels, list)
    return labels


def _check_top_k(top_k: list[dict[str, Any]], labels: list[str]) -> None:
    for entry in top_k:
        assert entry["label"] == labels[entry["index"]]
        assert 0.0 <= entry["probability"] <= 1.0


def test_inspection_example_is_what_a_shipped_model_returns(client: TestClient) -> None:
    for example in _examples(InspectionResponse):
        InspectionResponse.model_validate(example)
        response = client.post(
            f"/v1/models/{example['model']}/activations",
            files={"file": ("digit.png", _png(), "image/png")},
            data={"top_k": str(len(example["classification"]["top_k"]))},
        )
        assert response.status_code == 200, response.text
        real = response.json()
        for key in ("model", "version", "activation", "activation_params", "saturation_bounds"):
            assert example[key] == real[key], key
        sites = {site["name"]: site for site in real["sites"]}
        assert example["sites"][0]["name"] == real["sites"][0]["name"]
        for site in example["sites"]:
            assert site["name"] in sites
            assert site["tensor"] == sites[site["name"]]["tensor"]
            assert site["shape"] == sites[site["name"]]["shape"]
            low, high = real["saturation_bounds"]
            assert low <= site["min"] <= site["mean"] <= site["max"] <= high
        assert real["classification"]["top_k"][0]["label"] in [str(d) for d in range(10)]
        _check_top_k(example["classification"]["top_k"], _labels(client, example["model"]))


def test_compare_example_is_what_the_shipped_models_return(client: TestClient) -> None:
    for example in _examples(CompareResponse):
        CompareResponse.model_validate(example)
        names = [result["model"] for result in example["results"]]
        response = client.post(
            "/v1/compare",
            params={"models": ",".join(names)},
            files={"file": ("digit.png", _png(), "image/png")},
        )
        assert response.status_code == 200, response.text
        real = {result["model"]: result for result in response.json()["results"]}
        assert list(real) == names
        for result in example["results"]:
            for key in ("version", "architecture", "activation", "activation_params"):
                assert result[key] == real[result["model"]][key], key
            _check_top_k(result["top_k"], _labels(client, result["model"]))
