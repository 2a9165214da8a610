"""GET /v1/models/{name}/linearity: the superposition test on served models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray

from service.linearity import AFFINE_TOLERANCE, NEARLY_AFFINE, probe_linearity
from service.runtime import InputSpec
from tests.conftest import MakeModel
from tests.service.conftest import make_settings, running_app


def test_identity_network_is_one_affine_map(client: TestClient) -> None:
    body = client.get("/v1/models/tiny-identity/linearity").json()
    assert body["model"] == "tiny-identity" and body["activation"] == "identity"
    assert body["samples"] == 8 and len(body["relative_errors"]) == 8
    assert body["affine"] is True
    assert body["max_error"] < 1e-5  # float32 rounding only
    assert body["verdict"].startswith("affine")


@pytest.mark.parametrize("name", ["tiny-relu", "tiny-tanh", "tiny-sigmoid", "tiny-maxout"])
def test_bending_activations_are_not_affine(client: TestClient, name: str) -> None:
    body = client.get(f"/v1/models/{name}/linearity", params={"samples": 4}).json()
    assert body["affine"] is False
    assert body["median_error"] > 10 * NEARLY_AFFINE
    assert body["verdict"].startswith("not affine")


def test_an_almost_straight_activation_is_nearly_affine(
    make_model: MakeModel, tmp_path: Path
) -> None:
    """LeakyReLU with slope 0.995 bends by 0.5 % at 0: measurably not affine, but barely."""
    make_model(tmp_path, "tiny-leaky", "leaky_relu", activation_params={"negative_slope": 0.995})
    with running_app(make_settings(tmp_path)) as client:
        body = client.get("/v1/models/tiny-leaky/linearity").json()
    assert body["affine"] is False
    assert 10 * AFFINE_TOLERANCE < body["median_error"] < NEARLY_AFFINE
    assert body["verdict"].startswith("nearly affine")


def test_seed_makes_the_probe_repeatable(client: TestClient) -> None:
    url = "/v1/models/tiny-relu/linearity"
    first = client.get(url, params={"seed": 7, "samples": 3}).json()["relative_errors"]
    again = client.get(url, params={"seed": 7, "samples": 3}).json()["relative_errors"]
    other = client.get(url, params={"seed": 8, "samples": 3}).json()["relative_errors"]
    assert first == again and first != other


def test_version_and_bad_queries(client: TestClient) -> None:
    assert client.get("/v1/models/tiny-relu/linearity?version=1").json()["version"] == 1
    assert client.get("/v1/models/tiny-relu/linearity").json()["version"] == 2
    for query in ("samples=0", "samples=33", "seed=-1", "samples=two", "sample=3"):
        response = client.get(f"/v1/models/tiny-relu/linearity?{query}")
        assert response.status_code == 422, query
        assert response.json()["error"]["message"]
    missing = client.get("/v1/models/nope/linearity")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/models/tiny-relu/linearity?version=9").status_code == 404


@dataclass
class _FunctionModel:
    """Stands in for a ModelRuntime: logits = fn(flattened input)."""

    fn: object
    input_spec: InputSpec = field(default_factory=lambda: InputSpec("input", (1, 2, 2)))

    def run(
        self, batch: NDArray[np.float32], run_options: object = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        logits = np.asarray(self.fn(batch.reshape(len(batch), -1)), dtype=np.float32)  # type: ignore[operator]
        return logits, logits


def test_probe_measures_the_departure_from_superposition() -> None:
    rng = np.random.default_rng(0)
    weights, bias = rng.standard_normal((4, 3)), rng.standard_normal(3)
    affine = _FunctionModel(lambda v: v @ weights + bias)
    slightly_bent = _FunctionModel(lambda v: v @ weights + bias + 0.01 * np.abs(v[:, :3]))
    probe = probe_linearity(affine, samples=16, seed=0)  # type: ignore[arg-type]
    assert probe.affine and probe.max_error < 1e-6
    bent = probe_linearity(slightly_bent, samples=16, seed=0)  # type: ignore[arg-type]
    assert not bent.affine and AFFINE_TOLERANCE < bent.median_error < NEARLY_AFFINE
    with pytest.raises(ValueError, match=r"samples must be in 1\.\.32"):
        probe_linearity(affine, samples=0, seed=0)  # type: ignore[arg-type]
