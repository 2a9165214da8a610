"""/v1/activations: catalogue listing, lookup, and evaluation against independent references.

The reference formulas below are written from the textbook definitions with Python's ``math``
module, one scalar at a time: they never call the catalogue, so a wrong catalogue formula fails.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.activation_api import MAX_BODY_BYTES
from service.activations import CATALOGUE, CatalogueError
from service.app import create_app
from service.errors import quoted
from service.settings import Settings

Ref = Callable[[float, dict[str, float | str]], float]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app; the activation routes need no model, so the repository is empty."""
    app = create_app(Settings(models_dir=tmp_path_factory.mktemp("no_models")))
    with TestClient(app) as test_client:
        yield test_client


# --------------------------------------------------------------------------- references


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) if abs(x) < 1e3 else 0.0


def _big_phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


_C = math.sqrt(2.0 / math.pi)
_SELU_A, _SELU_S = 1.6732632423543772, 1.0507009873554805


def _gelu_tanh(x: float) -> float:
    return 0.5 * x * (1.0 + math.tanh(_C * (x + 0.044715 * x**3)))


def _gelu_tanh_d(x: float) -> float:
    t = math.tanh(_C * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _C * (1 + 3 * 0.044715 * x * x)


def _n(p: dict[str, float | str], key: str) -> float:
    return float(p[key])


REFERENCES: dict[str, tuple[Ref, Ref]] = {
    "relu": (lambda x, p: max(0.0, x), lambda x, p: 1.0 if x > 0 else 0.0),
    "relu6": (lambda x, p: min(max(0.0, x), 6.0), lambda x, p: 1.0 if 0 < x < 6 else 0.0),
    "leaky_relu": (
        lambda x, p: x if x > 0 else _n(p, "negative_slope") * x,
        lambda x, p: 1.0 if x > 0 else _n(p, "negative_slope"),
    ),
    "prelu": (
        lambda x, p: x if x > 0 else _n(p, "init") * x,
        lambda x, p: 1.0 if x > 0 else _n(p, "init"),
    ),
    "elu": (
        lambda x, p: x if x > 0 else _n(p, "alpha") * math.expm1(x),
        lambda x, p: 1.0 if x > 0 else _n(p, "alpha") * math.exp(x),
    ),
    "selu": (
        lambda x, p: _SELU_S * (x if x > 0 else _SELU_A * math.expm1(x)),
        lambda x, p: _SELU_S * (1.0 if x > 0 else _SELU_A * math.exp(x)),
    ),
    "celu": (
        lambda x, p: x if x > 0 else _n(p, "alpha") * math.expm1(x / _n(p, "alpha")),
        lambda x, p: 1.0 if x > 0 else math.exp(x / _n(p, "alpha")),
    ),
    "gelu": (
        lambda x, p: _gelu_tanh(x) if p["approximate"] == "tanh" else x * _big_phi(x),
        lambda x, p: _gelu_tanh_d(x) if p["approximate"] == "tanh" else _big_phi(x) + x * _phi(x),
    ),
    "silu": (
        lambda x, p: x * _sigmoid(_n(p, "beta") * x),
        lambda x, p: (
            _sigmoid(_n(p, "beta") * x)
            + _n(p, "beta") * x * _sigmoid(_n(p, "beta") * x) * (1 - _sigmoid(_n(p, "beta") * x))
        ),
    ),
    "mish": (
        lambda x, p: x * math.tanh(_softplus(x)),
        lambda x, p: math.tanh(_softplus(x)) + x * _sigmoid(x) * (1 - math.tanh(_softplus(x)) ** 2),
    ),
    "softplus": (
        lambda x, p: (
            x
            if _n(p, "beta") * x > _n(p, "threshold")
            else _softplus(_n(p, "beta") * x) / _n(p, "beta")
        ),
        lambda x, p: 1.0 if _n(p, "beta") * x > _n(p, "threshold") else _sigmoid(_n(p, "beta") * x),
    ),
    "softsign": (lambda x, p: x / (1 + abs(x)), lambda x, p: 1 / (1 + abs(x)) ** 2),
    "tanh": (lambda x, p: math.tanh(x), lambda x, p: 1 - math.tanh(x) ** 2),
    "sigmoid": (lambda x, p: _sigmoid(x), lambda x, p: _sigmoid(x) * (1 - _sigmoid(x))),
    "hardsigmoid": (
        lambda x, p: min(max(x + 3, 0.0), 6.0) / 6,
        lambda x, p: 1 / 6 if -3 < x < 3 else 0.0,
    ),
    "hardswish": (
        lambda x, p: x * min(max(x + 3, 0.0), 6.0) / 6,
        lambda x, p: 0.0 if x < -3 else 1.0 if x > 3 else (2 * x + 3) / 6,
    ),
    "gaussian": (
        lambda x, p: math.exp(-x * x) if abs(x) < 1e3 else 0.0,
        lambda x, p: -2 * x * math.exp(-x * x) if abs(x) < 1e3 else 0.0,
    ),
    "identity": (lambda x, p: x, lambda x, p: 1.0),
    "binary_step": (lambda x, p: 1.0 if x > 0 else 0.0, lambda x, p: 0.0),
}
ELEMENTWISE = sorted(REFERENCES)

# Non-default parameters worth checking too (each within the catalogue's bounds).
VARIANTS: dict[str, dict[str, float | str]] = {
    "leaky_relu": {"negative_slope": 0.2},
    "prelu": {"init": 0.1, "mode": "single"},
    "elu": {"alpha": 0.5},
    "celu": {"alpha": 2.0},
    "gelu": {"approximate": "tanh"},
    "silu": {"beta": 2.0},
    "softplus": {"beta": 2.0, "threshold": 10.0},
}
CASES: list[tuple[str, dict[str, float | str]]] = [(n, {}) for n in ELEMENTWISE] + sorted(
    VARIANTS.items()
)

GRID = [float(v) for v in np.linspace(-8.0, 8.0, 161)] + [
    -1e4, -1e3, -60.5, -20.25, -3.0, 0.0, 3.0, 6.0, 20.25, 60.5, 1e3, 1e4,
]  # fmt: skip


def _eval(client: TestClient, name: str, body: dict[str, object]) -> dict[str, Any]:
    response = client.post(f"/v1/activations/{name}/eval", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- listing


def test_every_catalogue_entry_has_a_reference_or_its_own_test() -> None:
    assert set(CATALOGUE) == set(REFERENCES) | {"maxout", "softmax"}


def test_list_describes_every_activation(client: TestClient) -> None:
    response = client.get("/v1/activations")
    assert response.status_code == 200
    data = response.json()
    assert data["count"] == len(CATALOGUE)
    assert [a["name"] for a in data["activations"]] == list(CATALOGUE)
    by_name = {a["name"]: a for a in data["activations"]}
    assert by_name["sigmoid"] == {
        "name": "sigmoid",
        "formula": "1 / (1 + exp(-x))",
        "description": CATALOGUE["sigmoid"].description,
        "kind": "elementwise",
        "trainable": True,
        "network": True,
        "aliases": [],
        "parameters": [],
        "properties": {
            "output_range": [0.0, 1.0],
            "min_value": 0.0,
            "min_attained": False,
            "monotonic": True,
            "smooth": True,
            "zero_centred": False,
            "bounded": True,
            "saturation": "both",
            "saturating": True,
        },
    }
    assert by_name["gelu"]["parameters"] == [
        {
            "name": "approximate",
            "description": CATALOGUE["gelu"].params[0].description,
            "type": "choice",
            "default": "none",
            "minimum": None,
            "maximum": None,
            "choices": ["none", "tanh"],
        }
    ]
    assert by_name["maxout"]["parameters"][0] | {"description": ""} == {
        "name": "k",
        "description": "",
        "type": "integer",
        "default": 2,
        "minimum": 2,
        "maximum": 4,
        "choices": None,
    }
    assert by_name["silu"]["aliases"] == ["swish"]
    assert by_name["softmax"]["network"] is False and by_name["softmax"]["kind"] == "vector"
    assert by_name["maxout"]["kind"] == "grouped"
    assert by_name["binary_step"]["trainable"] is False
    relu = by_name["relu"]["properties"]
    assert relu["output_range"] == [0.0, None] and relu["bounded"] is False
    assert relu["saturation"] == "negative" and relu["saturating"] is False
    tanh = by_name["tanh"]["properties"]
    assert tanh["zero_centred"] is True and tanh["saturating"] is True
    assert tanh["output_range"] == [-1.0, 1.0]
    identity = by_name["identity"]["properties"]
    assert identity["output_range"] == [None, None] and identity["saturation"] == "none"


@pytest.mark.parametrize(
    ("name", "f"),
    [
        ("gelu", lambda x: x * _big_phi(x)),
        ("silu", lambda x: x * _sigmoid(x)),
        ("mish", lambda x: x * math.tanh(_softplus(x))),
    ],
)
def test_min_value_of_non_monotonic_activations(
    client: TestClient, name: str, f: Callable[[float], float]
) -> None:
    want = min(f(-5.0 + i * 1e-5) for i in range(500_001))  # dense grid over [-5, 0]
    got = client.get(f"/v1/activations/{name}").json()["properties"]["min_value"]
    assert got == pytest.approx(want, abs=1e-9)
    assert got < 0


@pytest.mark.parametrize(
    ("alias", "name"),
    [("Swish", "silu"), ("LEAKY-RELU", "leaky_relu"), ("tanh", "tanh"), (" ReLU ", "relu")],
)
def test_aliases_and_case_resolve(client: TestClient, alias: str, name: str) -> None:
    response = client.get(f"/v1/activations/{alias}")
    assert response.status_code == 200
    assert response.json()["name"] == name


def test_unknown_activation_is_404_listing_valid_names(client: TestClient) -> None:
    for response in (
        client.get("/v1/activations/nosuchthing"),
        client.post("/v1/activations/nosuchthing/eval", json={"x": [1.0]}),
    ):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "unknown_activation"
        assert "nosuchthing" not in error["message"]
        for name in CATALOGUE:
            assert name in error["message"]
        assert "swish (= silu)" in error["message"]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(("name", "params"), CASES, ids=lambda v: str(v))
def test_values_and_derivatives_match_reference(
    client: TestClient, name: str, params: dict[str, float | str]
) -> None:
    data = _eval(client, name, {"x": GRID, "params": params})
    resolved = {p.name: p.default for p in CATALOGUE[name].params} | params
    assert data["name"] == name
    assert data["params"] == resolved
    assert data["x"] == GRID
    f, df = REFERENCES[name]
    ys, dys = data["y"], data["dy"]
    assert isinstance(ys, list) and isinstance(dys, list)
    for x, y, dy in zip(GRID, ys, dys, strict=True):
        assert _close(y, f(x, resolved)), (x, y, f(x, resolved))
        assert _close(dy, df(x, resolved)), (x, dy, df(x, resolved))


def _kinks(name: str, params: dict[str, float | str]) -> list[float]:
    if name == "softplus":
        return [_n(params, "threshold") / _n(params, "beta")]
    return [-3.0, 0.0, 3.0, 6.0]


@pytest.mark.parametrize(("name", "params"), CASES, ids=lambda v: str(v))
def test_derivative_matches_numeric_differentiation(
    client: TestClient, name: str, params: dict[str, float | str]
) -> None:
    resolved = {p.name: p.default for p in CATALOGUE[name].params} | params
    h = 1e-6
    xs = [
        x
        for x in np.linspace(-7.9, 7.9, 80)
        if all(abs(x - k) > 1e-3 for k in _kinks(name, resolved))
    ]
    dy = _eval(client, name, {"x": xs, "params": params})["dy"]
    up = _eval(client, name, {"x": [x + h for x in xs], "params": params})["y"]
    down = _eval(client, name, {"x": [x - h for x in xs], "params": params})["y"]
    assert isinstance(dy, list) and isinstance(up, list) and isinstance(down, list)
    numeric = [(u - d) / (2 * h) for u, d in zip(up, down, strict=True)]
    assert np.allclose(dy, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_every_activation_is_finite_over_a_grid_up_to_1e4(client: TestClient, name: str) -> None:
    body: dict[str, object] = {"range": {"start": -1e4, "stop": 1e4, "num": 2001}}
    if name == "maxout":
        body["range"] = {"start": -1e4, "stop": 1e4, "num": 2002}
    data = _eval(client, name, body)
    x, y, dy = (np.asarray(data[k], dtype=np.float64) for k in ("x", "y", "dy"))
    assert x.shape == (2001 if name != "maxout" else 2002,)
    assert x[0] == -1e4 and x[-1] == 1e4
    assert np.isfinite(y).all() and np.isfinite(dy).all()
    extremes = _eval(client, name, {"x": [-1e6, -1e4, 1e4, 1e6]})
    assert np.isfinite(np.asarray(extremes["y"])).all()
    assert np.isfinite(np.asarray(extremes["dy"])).all()


def _extreme_params() -> list[tuple[str, dict[str, float | int | str]]]:
    """Every parameter at each bound (or choice), one parameter varied at a time."""
    cases: list[tuple[str, dict[str, float | int | str]]] = []
    for activation in CATALOGUE.values():
        for param in activation.params:
            values = param.choices or (param.minimum, param.maximum)
            cases += [(activation.name, {param.name: v}) for v in values if v is not None]
    return [(n, p) for n, p in cases if not (n == "softmax" and p["axis"] not in (-1, 0))]


@pytest.mark.parametrize(("name", "params"), _extreme_params(), ids=lambda v: str(v))
def test_finite_at_parameter_bounds(
    client: TestClient, name: str, params: dict[str, float | int | str]
) -> None:
    x = [-1e6, -1e4, -30.0, -1.0, -1e-300, 0.0, 1e-300, 1.0, 30.0, 1e4, 1e6, 7.5]
    body: dict[str, object] = {"x": x * 4 if name == "maxout" else x, "params": params}
    data = _eval(client, name, body)
    assert np.isfinite(np.asarray(data["y"])).all()
    assert np.isfinite(np.asarray(data["dy"])).all()
    if name in REFERENCES:
        resolved = data["params"]
        f, df = REFERENCES[name]
        for value, y, dy in zip(x, data["y"], data["dy"], strict=True):
            assert _close(y, f(value, resolved)) and _close(dy, df(value, resolved)), value


def test_range_matches_linspace_and_accepts_the_point_limit(client: TestClient) -> None:
    data = _eval(client, "relu", {"range": {"start": -1, "stop": 1, "num": 100_000}})
    x = data["x"]
    assert isinstance(x, list) and len(x) == 100_000
    assert x[0] == -1.0 and x[-1] == 1.0
    assert x[50_000] == pytest.approx(-1 + 2 * 50_000 / 99_999, abs=1e-15)
    assert data["y"] == [max(0.0, v) for v in x]


def test_tutorial_behaviours(client: TestClient) -> None:
    """Saturation kills gradients; identity never bends; dead ReLUs pass no gradient."""
    tanh = _eval(client, "tanh", {"x": [-10.0, 0.0, 10.0]})["dy"]
    sigmoid = _eval(client, "sigmoid", {"range": {"start": -10, "stop": 10, "num": 201}})["dy"]
    assert isinstance(tanh, list) and isinstance(sigmoid, list)
    assert tanh[0] < 1e-8 and tanh[2] < 1e-8 and tanh[1] == 1.0
    assert max(sigmoid) == 0.25 and sigmoid[0] < 5e-5
    assert _eval(client, "identity", {"x": [-3.0, 2.5]})["dy"] == [1.0, 1.0]
    assert _eval(client, "relu", {"x": [-3.0, -0.5, 2.0]})["dy"] == [0.0, 0.0, 1.0]


def test_properties_follow_the_parameters(client: TestClient) -> None:
    data = _eval(client, "leaky_relu", {"x": [1.0], "params": {"negative_slope": 0}})
    props = data["properties"]
    assert isinstance(props, dict)
    assert props["output_range"] == [0.0, None]
    assert props["saturation"] == "negative"
    props = _eval(client, "elu", {"x": [1.0], "params": {"alpha": 2}})["properties"]
    assert isinstance(props, dict)
    assert props["min_value"] == -2.0 and props["smooth"] is False


def test_matrix_input_is_elementwise_for_elementwise_activations(client: TestClient) -> None:
    data = _eval(client, "relu", {"x": [[-1.0, 2.0], [3.0, -4.0]]})
    assert data["y"] == [[0.0, 2.0], [3.0, 0.0]]
    assert data["dy"] == [[0.0, 1.0], [1.0, 0.0]]


# --------------------------------------------------------------------------- softmax, maxout


def _softmax_ref(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / math.fsum(exps) for e in exps]


def test_softmax_vector_gives_probabilities(client: TestClient) -> None:
    x = [1.0, 2.0, 3.0, -1.0]
    data = _eval(client, "softmax", {"x": x})
    y, dy = data["y"], data["dy"]
    assert isinstance(y, list) and isinstance(dy, list)
    want = [math.exp(v) / sum(math.exp(u) for u in x) for v in x]
    assert np.allclose(y, want, rtol=1e-12, atol=0)
    assert math.fsum(y) == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(dy, [p * (1 - p) for p in want], rtol=1e-12, atol=0)
    shifted = _eval(client, "softmax", {"x": [v + 1000.0 for v in x]})["y"]
    assert np.allclose(shifted, y, rtol=1e-12, atol=0)
    extreme = _eval(client, "softmax", {"x": [1e4, 0.0, -1e4]})
    assert extreme["y"] == [1.0, 0.0, 0.0] and extreme["dy"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_softmax_matrix_along_an_axis(client: TestClient, axis: int) -> None:
    x = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    y = _eval(client, "softmax", {"x": x, "params": {"axis": axis}})["y"]
    array = np.asarray(y)
    if axis in (1, -1):
        want = np.asarray([_softmax_ref(row) for row in x])
    else:
        want = np.asarray([_softmax_ref(list(col)) for col in zip(*x, strict=True)]).T
    assert np.allclose(array, want, rtol=1e-12, atol=0)
    assert np.allclose(array.sum(axis=axis), 1.0, atol=1e-12)


def test_softmax_axis_outside_the_input_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/activations/softmax/eval", json={"x": [1.0, 2.0], "params": {"axis": 1}}
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "invalid_params",
            "message": "axis must be one of -1, 0 for x with 1 dimension(s)",
        }
    }


def test_maxout_flat_and_grouped(client: TestClient) -> None:
    flat = _eval(client, "maxout", {"x": [1.0, -2.0, 0.5, 3.0]})
    assert flat["params"] == {"k": 2}
    assert flat["y"] == [1.0, 3.0] and flat["dy"] == [1.0, 0.0, 0.0, 1.0]
    grouped = _eval(client, "maxout", {"x": [[1.0, -2.0, 7.0], [0.5, 3.0, 3.0]]})
    assert grouped["params"] == {"k": 3}
    assert grouped["y"] == [7.0, 3.0]
    assert grouped["dy"] == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # ties: the first maximum
    k4 = _eval(
        client, "maxout", {"x": [4.0, 1.0, 2.0, 3.0, -1.0, -2.0, -3.0, -0.5], "params": {"k": 4}}
    )
    assert k4["y"] == [4.0, -0.5] and k4["dy"] == [1.0, 0, 0, 0, 0, 0, 0, 1.0]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"x": [1.0, 2.0, 3.0]},
            "invalid_request",
            "maxout needs a number of x values that is a multiple of k=2, or a list of groups "
            "of k; got 3 values",
        ),
        (
            {"x": [[1.0, 2.0]], "params": {"k": 3}},
            "invalid_params",
            "params.k must equal the group length when x is a list of groups; the groups hold 2 "
            "values (or leave k out)",
        ),
        (
            {"x": [[1.0, 2.0, 3.0, 4.0, 5.0]]},
            "invalid_request",
            "maxout groups (the rows of x) must hold 2 to 4 values each; they hold 5",
        ),
        (
            {"x": [[1.0], [2.0]]},
            "invalid_request",
            "maxout groups (the rows of x) must hold 2 to 4 values each; they hold 1",
        ),
        (
            {"x": [[1.0, 2.0, 3.0, 4.0, 5.0]], "params": {"k": 5}},
            "invalid_request",
            "maxout groups (the rows of x) must hold 2 to 4 values each; they hold 5",
        ),
    ],
)
def test_maxout_bad_groups_are_422(
    client: TestClient, body: dict[str, object], code: str, message: str
) -> None:
    response = client.post("/v1/activations/maxout/eval", json=body)
    assert response.status_code == 422
    assert response.json() == {"error": {"code": code, "message": message}}


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_input_is_422_without_echo(client: TestClient, token: str) -> None:
    body = '{"x": [12345.678, ' + token + "]}"
    response = client.post(
        "/v1/activations/tanh/eval", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "non_finite_input",
            "message": "x holds 1 non-finite value(s) (NaN or Infinity); only finite numbers "
            "are allowed",
        }
    }
    assert "12345" not in response.text


@pytest.mark.parametrize("field", ["start", "stop"])
def test_non_finite_range_is_422(client: TestClient, field: str) -> None:
    bounds = {"start": "-1", "stop": "1"} | {field: "NaN"}
    body = f'{{"range": {{"start": {bounds["start"]}, "stop": {bounds["stop"]}, "num": 5}}}}'
    response = client.post(
        "/v1/activations/relu/eval", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "non_finite_input"
    assert error["message"] == (
        f"range.{field} must be a finite number with |value| ≤ 1e+06 "
        "(NaN and Infinity are not allowed)"
    )


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({}, "invalid_request", "give exactly one of 'x' (a list of numbers) or 'range'"),
        (
            {"x": [1.0], "range": {"start": 0, "stop": 1, "num": 2}},
            "invalid_request",
            "give exactly one of 'x' (a list of numbers) or 'range'",
        ),
        ({"x": []}, "invalid_request", "x must hold at least one number"),
        (
            {"x": [[1.0, 2.0], [3.0]]},
            "invalid_request",
            "the rows of x must all have the same, non-zero length",
        ),
        ({"x": [0.0, -2e6]}, "invalid_request", "every x must satisfy |x| ≤ 1e+06"),
        (
            {"x": [[0.0] * 1000] * 101},
            "invalid_request",
            "x holds 101000 numbers; at most 100000 are allowed",
        ),
        (
            {"x": [1.0], "params": {"alpha": 0.001}},
            "invalid_params",
            "parameter 'alpha' of 'elu' must be a number in [0.01, 10.0]",
        ),
        (
            {"x": [1.0], "params": {"alpha": True}},
            "invalid_params",
            "parameter 'alpha' of 'elu' must be a number in [0.01, 10.0]",
        ),
        (
            {"x": [1.0], "params": {"alpah": 1.0, "other": 2}},
            "invalid_params",
            "'elu' has no parameters 'alpah', 'other'; its parameters are: alpha",
        ),
        (
            {"x": [1.0], "params": {"beta": 1.0}},
            "invalid_params",
            "'elu' has no parameter 'beta'; its parameters are: alpha",
        ),
        (
            {"x": [1.0], "params": {f"p{i}": 1 for i in range(7)} | {"q" * 100: 1}},
            "invalid_params",
            "'elu' has no parameters 'p0', 'p1', 'p2', 'p3', 'p4' and 3 more; its parameters "
            "are: alpha",
        ),
    ],
)
def test_bad_requests_are_422_with_a_clear_message(
    client: TestClient, body: dict[str, object], code: str, message: str
) -> None:
    response = client.post("/v1/activations/elu/eval", json=body)
    assert response.status_code == 422
    assert response.json() == {"error": {"code": code, "message": message}}
    follow_up = client.post("/v1/activations/elu/eval", json={"x": [1.0]})
    assert follow_up.status_code == 200


_HUGE_INT = "9" * 400  # parses as a Python int; float() of it overflows


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("maxout", '{"k": NaN}', "parameter 'k' of 'maxout' must be an integer in [2, 4]"),
        ("maxout", '{"k": Infinity}', "parameter 'k' of 'maxout' must be an integer in [2, 4]"),
        ("maxout", '{"k": -Infinity}', "parameter 'k' of 'maxout' must be an integer in [2, 4]"),
        (
            "maxout",
            f'{{"k": {_HUGE_INT}}}',
            "parameter 'k' of 'maxout' must be an integer in [2, 4]",
        ),
        ("maxout", '{"k": 2.5}', "parameter 'k' of 'maxout' must be an integer in [2, 4]"),
        ("maxout", '{"k": "2"}', "parameter 'k' of 'maxout' must be an integer in [2, 4]"),
        ("maxout", '{"k": true}', "parameter 'k' of 'maxout' must be an integer in [2, 4]"),
        ("maxout", '{"k": null}', "parameter 'k' of 'maxout' must be an integer in [2, 4]"),
        (
            "softmax",
            '{"axis": 1e400}',
            "parameter 'axis' of 'softmax' must be an integer in [-8, 7]",
        ),
        (
            "softmax",
            f'{{"axis": -{_HUGE_INT}}}',
            "parameter 'axis' of 'softmax' must be an integer in [-8, 7]",
        ),
        (
            "elu",
            f'{{"alpha": {_HUGE_INT}}}',
            "parameter 'alpha' of 'elu' must be a number in [0.01, 10.0]",
        ),
        ("elu", '{"alpha": NaN}', "parameter 'alpha' of 'elu' must be a number in [0.01, 10.0]"),
        ("elu", '{"alpha": 1e400}', "parameter 'alpha' of 'elu' must be a number in [0.01, 10.0]"),
    ],
)
def test_non_finite_or_huge_params_are_422(
    client: TestClient, name: str, params: str, message: str
) -> None:
    response = client.post(
        f"/v1/activations/{name}/eval",
        content='{"x": [1, 2], "params": ' + params + "}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json() == {"error": {"code": "invalid_params", "message": message}}


@pytest.mark.parametrize(
    "value", [True, False, None, "3", [3], float("nan"), float("inf"), -float("inf"), 10**400,
              -(10**400), 2.5, 9, 1]
)  # fmt: skip
def test_param_validate_rejects_whatever_type_arrives(value: object) -> None:
    k = CATALOGUE["maxout"].params[0]
    with pytest.raises(CatalogueError, match=r"^parameter 'k' of 'maxout' must be an integer"):
        k.validate("maxout", value)


@pytest.mark.parametrize(
    ("name", "value", "want"),
    [("maxout", 3, 3), ("maxout", 4.0, 4), ("softmax", -8, -8), ("elu", 2, 2.0), ("elu", 0.5, 0.5)],
)
def test_param_validate_keeps_valid_values(name: str, value: float, want: float) -> None:
    got = CATALOGUE[name].params[0].validate(name, value)
    assert got == want and type(got) is type(want)


def test_bad_choice_lists_the_choices(client: TestClient) -> None:
    response = client.post(
        "/v1/activations/gelu/eval", json={"x": [1.0], "params": {"approximate": "fast"}}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "parameter 'approximate' of 'gelu' must be one of 'none', 'tanh'"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"x": ["1.5"]},
        {"x": [True]},
        {"x": [1.0, [2.0]]},
        {"x": 3.0},
        {"range": {"start": 0, "stop": 1, "num": 100_001}},
        {"range": {"start": 0, "stop": 1, "num": 0}},
        {"range": {"start": 0, "stop": 1, "num": "3"}},
        {"range": {"start": 0, "stop": 1, "num": 3.0}},
        {"range": {"start": 0, "stop": 1, "num": True}},
        {"x": [1.0], "unexpected": 1},
    ],
)
def test_malformed_fields_are_422(client: TestClient, body: dict[str, object]) -> None:
    response = client.post("/v1/activations/relu/eval", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("invalid request: ")


@pytest.mark.parametrize(
    "x",
    [[0.0] * 100_001, [[0.0]] * 100_001, [[0.0] * 100_001]],
    ids=["flat", "rows", "one_row"],
)
def test_every_list_of_x_is_capped_at_the_point_limit(client: TestClient, x: list[Any]) -> None:
    response = client.post("/v1/activations/relu/eval", json={"x": x})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "List should have at most 100000 items after validation, not 100001" in error["message"]


def test_a_large_x_of_bad_items_stops_at_the_first(client: TestClient) -> None:
    """One error per list type, not one per item: a body of bad items is rejected cheaply."""
    response = client.post("/v1/activations/relu/eval", json={"x": ["a"] * 100_000})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "invalid request: x.list[float].0: Input should be a valid number; "
        "x.list[list[float]].0: Input should be a valid list"
    )


def test_a_matrix_within_the_list_caps_gets_the_total_limit(client: TestClient) -> None:
    body = json.dumps({"x": [[0] * 1000] * 1000}, separators=(",", ":"))
    response = client.post(
        "/v1/activations/relu/eval", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "invalid_request",
            "message": "x holds 1000000 numbers; at most 100000 are allowed",
        }
    }


EVAL_BODY_LIMIT = 3_000_000


def test_eval_body_over_its_route_limit_is_413(client: TestClient) -> None:
    at_limit = b'{"x": [' + b"0," * ((EVAL_BODY_LIMIT - 10) // 2) + b"0]}"
    assert len(at_limit) == EVAL_BODY_LIMIT
    json_body = {"content-type": "application/json"}
    response = client.post("/v1/activations/relu/eval", content=at_limit, headers=json_body)
    assert response.status_code == 422  # read and validated: 1.5 M numbers is too many
    response = client.post("/v1/activations/relu/eval", content=at_limit + b" ", headers=json_body)
    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "code": "payload_too_large",
            "message": "the request body is over the limit of 3000000 bytes for "
            "/v1/activations/* routes",
        }
    }
    assert client.post("/v1/activations/relu/eval", json={"x": [1.0]}).status_code == 200


def test_other_routes_keep_the_global_body_limit(client: TestClient) -> None:
    body = json.dumps({"images": ["A" * 4_000_000]})
    response = client.post(
        "/v1/classify", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code != 413, response.text


def test_the_point_limit_in_the_widest_formatting_is_accepted(client: TestClient) -> None:
    """100 000 numbers with 17 significant digits and 3-digit exponents fit the route limit."""
    x = [-1.2345678901234567e-300, -123456.78901234567] * 50_000
    body = json.dumps({"x": x, "params": {}}, separators=(", ", ": "))
    assert 2_000_000 < len(body) <= EVAL_BODY_LIMIT
    response = client.post(
        "/v1/activations/relu/eval", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text[:200]
    assert response.json()["y"] == [0.0] * 100_000


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b",
     "text/json", "application/jsonx"],
)  # fmt: skip
@pytest.mark.parametrize("body", ['{"x": [1]}', '{"x": "not numbers"}', "not json"])
def test_a_body_not_declared_as_json_is_415(
    client: TestClient, content_type: str | None, body: str
) -> None:
    """The content type is checked before the body is validated, whatever the body holds."""
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/v1/activations/relu/eval", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json() == {
        "error": {
            "code": "unsupported_content_type",
            "message": "send the body as JSON with Content-Type: application/json, e.g. "
            '{"x": [1.0, 2.0]}',
        }
    }


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/vnd.api+json"],
)  # fmt: skip
def test_json_content_types_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/v1/activations/relu/eval",
        content='{"x": [-1, 2]}',
        headers={"content-type": content_type},
    )
    assert response.status_code == 200
    assert response.json()["y"] == [0.0, 2.0]


@pytest.mark.parametrize(
    ("text", "limit", "want"),
    [
        ("relu", 64, "'relu'"),
        ("a" * 64, 64, repr("a" * 64)),
        ("a" * 65, 64, repr("a" * 64) + "…"),
        ("a" * 10_000, 64, repr("a" * 64) + "…"),
        ("it's", 3, '"it\'"…'),
        ("", 64, "''"),
    ],
)
def test_quoted_client_text_is_clipped(text: str, limit: int, want: str) -> None:
    assert quoted(text, limit) == want


def test_a_long_unknown_name_gives_a_short_404(client: TestClient) -> None:
    for response in (
        client.get("/v1/activations/" + "a" * 10_000),
        client.post("/v1/activations/" + "a" * 10_000 + "/eval", json={"x": [1.0]}),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_activation"
        assert len(response.content) < 500 and "aaaa" not in response.text


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
def test_a_compressed_eval_body_is_decoded(
    client: TestClient, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    plain = client.post("/v1/activations/mish/eval", json={"x": [-2.0, 0.5, 3.0]})
    response = client.post(
        "/v1/activations/mish/eval",
        content=compress(b'{"x": [-2.0, 0.5, 3.0]}'),
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert response.status_code == 200 and response.json() == plain.json()


@pytest.mark.parametrize(
    ("encoding", "body", "status", "code"),
    [
        ("br", b'{"x": [1]}', 415, "unsupported_content_encoding"),
        ("gzip", b'{"x": [1]}', 400, "bad_request"),
        ("gzip", gzip.compress(b'{"x": [1]}')[:-6], 400, "bad_request"),
        ("gzip", gzip.compress(b'{"x": [' + b"1," * MAX_BODY_BYTES + b"1]}"), 413,
         "payload_too_large"),
    ],
)  # fmt: skip
def test_a_bad_compressed_eval_body_says_what_is_wrong(
    client: TestClient, encoding: str, body: bytes, status: int, code: str
) -> None:
    """Unknown encodings, data that is not what it says, and a small body that inflates past the
    activation routes' limit (a zip bomb) are rejected before any JSON is parsed."""
    response = client.post(
        "/v1/activations/relu/eval",
        content=body,
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert client.post("/v1/activations/relu/eval", json={"x": [1.0]}).status_code == 200


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/v1/activations/relu/eval", b"{x: [1,",
         "the request body is not valid JSON: Expecting property name enclosed in double quotes "
         "at character 1"),
        ("/v1/activations/relu/eval", b'{"x": [1, 2', "the request body is not valid JSON: "
         "Expecting ',' delimiter at character 11"),
        ("/v1/classify", b'{"images": [', "the request body is not valid JSON: EOF while parsing "
         "a list at line 1 column 12"),
        ("/v1/compare", b'{"image": "a"} x', "the request body is not valid JSON: trailing "
         "characters at line 1 column 16"),
        ("/v1/models/tiny-relu/activations", b"not json", "the request body is not valid JSON: "
         "expected ident at line 1 column 2"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_json_is_400_with_where_parsing_stopped(
    client: TestClient, route: str, body: bytes, message: str
) -> None:
    """The same status, code and kind of message on every JSON route, whoever parses it."""
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "invalid_json", "message": message}


def test_openapi_documents_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/activations/{name}/eval"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"]
    assert set(examples) == {"points", "range", "softmax_matrix", "maxout_groups"}
    components = schema["components"]["schemas"]
    for model in ("ActivationInfo", "ActivationList", "EvalResponse"):
        assert components[model]["examples"], model
    assert json.dumps(schema)  # serialisable, no NaN anywhere
