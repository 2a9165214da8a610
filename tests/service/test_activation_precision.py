"""The catalogue's f and f' against mpmath far into the tails, and properties that depend on the
parameters (softplus's threshold jump, leaky ReLU / PReLU at slope 1, infimum vs minimum).

The references are the textbook formulas in 40-digit arithmetic; they never call the catalogue.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import mpmath
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.activations import CATALOGUE, ParamValue, Properties, get_activation
from service.app import create_app
from service.settings import Settings

mp = mpmath.mp
mp.dps = 40

Mpf = object
Ref = Callable[[Mpf, dict[str, ParamValue]], tuple[Mpf, Mpf]]

_SELU_ALPHA = mp.mpf("1.6732632423543772848170429916717")
_SELU_SCALE = mp.mpf("1.0507009873554804934193349852946")


def _sig(u: Mpf) -> Mpf:
    return 1 / (1 + mp.exp(-u))


def _n(p: dict[str, ParamValue], key: str) -> Mpf:
    return mp.mpf(float(p[key]))


def _gelu(x: Mpf, p: dict[str, ParamValue]) -> tuple[Mpf, Mpf]:
    if p["approximate"] == "tanh":
        c = mp.sqrt(2 / mp.pi)
        z = c * (x + mp.mpf("0.044715") * x**3)
        dz = c * (1 + 3 * mp.mpf("0.044715") * x**2)
        half_one_plus_tanh = _sig(2 * z)  # (1 + tanh z) / 2, exactly, without cancellation
        return x * half_one_plus_tanh, half_one_plus_tanh + x * mp.sech(z) ** 2 * dz / 2
    return x * mp.ncdf(x), mp.ncdf(x) + x * mp.npdf(x)


def _softplus(x: Mpf, p: dict[str, ParamValue]) -> tuple[Mpf, Mpf]:
    beta, threshold = float(p["beta"]), float(p["threshold"])
    if beta * float(x) > threshold:  # torch's switch to x, decided in float64 as torch does
        return x, mp.mpf(1)
    bx = mp.mpf(beta) * x
    return mp.log1p(mp.exp(bx)) / beta, _sig(bx)


def _mish(x: Mpf, p: dict[str, ParamValue]) -> tuple[Mpf, Mpf]:
    sp = mp.log1p(mp.exp(x))
    return x * mp.tanh(sp), mp.tanh(sp) + x * _sig(x) * mp.sech(sp) ** 2


def _silu(x: Mpf, p: dict[str, ParamValue]) -> tuple[Mpf, Mpf]:
    bx = _n(p, "beta") * x
    return x * _sig(bx), _sig(bx) + bx * _sig(bx) * _sig(-bx)


def _step(condition: bool) -> Mpf:
    return mp.mpf(1 if condition else 0)


REFERENCES: dict[str, Ref] = {
    "relu": lambda x, p: (max(x, mp.mpf(0)), _step(x > 0)),
    "relu6": lambda x, p: (min(max(x, mp.mpf(0)), mp.mpf(6)), _step(0 < x < 6)),
    "leaky_relu": lambda x, p: (
        (x, mp.mpf(1)) if x > 0 else (_n(p, "negative_slope") * x, _n(p, "negative_slope"))
    ),
    "prelu": lambda x, p: (x, mp.mpf(1)) if x > 0 else (_n(p, "init") * x, _n(p, "init")),
    "elu": lambda x, p: (
        (x, mp.mpf(1)) if x > 0 else (_n(p, "alpha") * mp.expm1(x), _n(p, "alpha") * mp.exp(x))
    ),
    "selu": lambda x, p: (
        (_SELU_SCALE * x, _SELU_SCALE)
        if x > 0
        else (_SELU_SCALE * _SELU_ALPHA * mp.expm1(x), _SELU_SCALE * _SELU_ALPHA * mp.exp(x))
    ),
    "celu": lambda x, p: (
        (x, mp.mpf(1))
        if x > 0
        else (_n(p, "alpha") * mp.expm1(x / _n(p, "alpha")), mp.exp(x / _n(p, "alpha")))
    ),
    "gelu": _gelu,
    "silu": _silu,
    "mish": _mish,
    "softplus": _softplus,
    "softsign": lambda x, p: (x / (1 + abs(x)), 1 / (1 + abs(x)) ** 2),
    "tanh": lambda x, p: (mp.tanh(x), mp.sech(x) ** 2),
    "sigmoid": lambda x, p: (_sig(x), mp.exp(-x) / (1 + mp.exp(-x)) ** 2),
    "hardsigmoid": lambda x, p: (min(max(x + 3, mp.mpf(0)), mp.mpf(6)) / 6, _step(-3 < x < 3) / 6),
    "hardswish": lambda x, p: (
        x * min(max(x + 3, mp.mpf(0)), mp.mpf(6)) / 6,
        mp.mpf(0) if x < -3 else mp.mpf(1) if x > 3 else (2 * x + 3) / 6,
    ),
    "gaussian": lambda x, p: (mp.exp(-(x**2)), -2 * x * mp.exp(-(x**2))),
    "identity": lambda x, p: (x, mp.mpf(1)),
    "binary_step": lambda x, p: (_step(x > 0), mp.mpf(0)),
}


def test_every_elementwise_activation_has_a_reference() -> None:
    assert set(REFERENCES) == {n for n, a in CATALOGUE.items() if a.kind == "elementwise"}


def _cases() -> list[tuple[str, dict[str, ParamValue]]]:
    """Defaults, every numeric parameter at each bound and every choice, and softplus's corners."""
    cases: list[tuple[str, dict[str, ParamValue]]] = []
    for name in REFERENCES:
        cases.append((name, {}))
        for param in CATALOGUE[name].params:
            values = param.choices or (param.minimum, param.maximum)
            cases += [(name, {param.name: v}) for v in values if v is not None]
    cases += [
        ("softplus", {"beta": beta, "threshold": threshold})
        for beta in (0.1, 10.0)
        for threshold in (1.0, 50.0)
    ]
    return cases


_MAGNITUDES = np.concatenate(
    [
        np.logspace(-300.0, 6.0, 613),  # half-decade steps from 1e-300 to 1e6
        [0.5, 1.5, 2.0, 5.0, 8.0, 10.0, 15.0, 17.0, 19.0, 20.0, 25.0, 30.0, 37.0, 38.0, 40.0],
        [50.0, 88.0, 100.0, 345.0, 500.0, 690.0, 709.0, 710.0, 745.0, 1000.0, 1e4],
    ]
)
GRID = np.concatenate([-_MAGNITUDES, _MAGNITUDES, np.linspace(-12.0, 12.0, 241)])
"""±[1e-300 … 1e6] including ±40, ±88, ±710, and a 0.1 step over [-12, 12]."""

RTOL, ATOL = 1e-12, 1e-300


def _evaluate(name: str, params: dict[str, ParamValue]) -> tuple[np.ndarray, np.ndarray]:
    """The catalogue on GRID with numpy errors (but underflow to 0) and warnings as errors."""
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        return get_activation(name).evaluate(GRID, params)


@pytest.mark.parametrize(("name", "params"), _cases(), ids=lambda v: str(v))
def test_values_and_derivatives_match_mpmath_into_the_tails(
    name: str, params: dict[str, ParamValue]
) -> None:
    """Within 1e-12 relative (or 1e-300 absolute, where values leave the normal float range)."""
    activation = get_activation(name)
    resolved = activation.resolve_params(params)
    y, dy = _evaluate(name, params)
    bad = []
    for x, got_f, got_df in zip(GRID.tolist(), y.tolist(), dy.tolist(), strict=True):
        want_f, want_df = REFERENCES[name](mp.mpf(x), resolved)
        for what, got, want in (("f", got_f, want_f), ("df", got_df, want_df)):
            if abs(mp.mpf(got) - want) > RTOL * abs(want) + ATOL:
                bad.append(f"{what}({x!r}) = {got!r}, want {mp.nstr(want, 17)}")
    assert bad == [], f"{len(bad)} points off, e.g. {bad[:6]}"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(Settings(models_dir=tmp_path_factory.mktemp("no_models")))
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("name", "params", "x"),
    [
        ("sigmoid", {}, -40.0),  # was 0.0 (f and f')
        ("sigmoid", {}, -37.0),  # was 5.55e-17, true 8.53e-17
        ("sigmoid", {}, -30.0),  # was 1.7e-4 off, relatively
        ("silu", {}, -40.0),  # was -0.0 and 0.0
        ("silu", {"beta": 10.0}, -6.0),  # was -0.0 and 0.0
        ("mish", {}, -40.0),  # f' was +4.2e-18, true -1.66e-16
        ("mish", {}, -50.0),  # f' was +1.9e-22, true -9.45e-21
        ("softplus", {}, -40.0),  # f' was 0
        ("softplus", {"beta": 10.0}, -6.0),  # f' was 0
        ("tanh", {}, 19.0),  # f' was 0
        ("tanh", {}, 20.0),  # f' was 0, true 1.70e-17
        ("tanh", {}, 25.0),  # f' was 0
        ("gelu", {}, -8.0),  # was 2 % off
        ("gelu", {}, -10.0),  # was -0.0, true -7.62e-23
        ("gelu", {"approximate": "tanh"}, -10.0),  # was -0.0 and 0.0
    ],
)
def test_the_audited_tail_values_over_http(
    client: TestClient, name: str, params: dict[str, ParamValue], x: float
) -> None:
    """The audit's examples, through POST /v1/activations/{name}/eval, to 1e-12 relative."""
    response = client.post(f"/v1/activations/{name}/eval", json={"x": [x], "params": params})
    assert response.status_code == 200, response.text
    data = response.json()
    want_f, want_df = REFERENCES[name](mp.mpf(x), data["params"])
    for got, want in ((data["y"][0], want_f), (data["dy"][0], want_df)):
        assert want != 0
        assert abs(mp.mpf(got) - want) <= 1e-12 * abs(want), (got, mp.nstr(want, 17))


# --------------------------------------------------------------------------- properties


def _properties(name: str, params: dict[str, ParamValue]) -> Properties:
    activation = get_activation(name)
    return activation.properties(activation.resolve_params(params))


def _float32_neighbours(at: float, count: int = 64) -> np.ndarray:
    """2 * count + 1 consecutive float32 numbers centred on float32(at), as float64."""
    bits = np.array([np.float32(at)]).view(np.int32)[0] + np.arange(-count, count + 1)
    return bits.astype(np.int32).view(np.float32).astype(np.float64)


SOFTPLUS_PARAMS = [
    {"beta": beta, "threshold": threshold}
    for beta in (0.1, 0.5, 1.0, 2.0, 10.0)
    for threshold in (1.0, 5.0, 10.0, 15.0, 16.0, 17.0, 18.0, 20.0, 30.0, 50.0)
]


@pytest.mark.parametrize("params", SOFTPLUS_PARAMS, ids=str)
def test_softplus_monotonic_and_smooth_follow_the_float32_rule(
    params: dict[str, ParamValue],
) -> None:
    """True exactly when float32 cannot see the jump at threshold / beta: f rounded to float32 at
    the last input before the switch is that input itself (so the float32 function is monotonic
    there), and for smooth also f' there rounds to 1, the slope after the switch."""
    beta, threshold = float(params["beta"]), float(params["threshold"])
    x = _float32_neighbours(threshold / beta)
    y, dy = get_activation("softplus").evaluate(x, params)
    last_before = int(np.nonzero(beta * x <= threshold)[0].max())
    assert beta * x[last_before + 1] > threshold  # the switch lies inside the neighbourhood
    y32, dy32 = y.astype(np.float32), dy.astype(np.float32)
    value_hidden = bool(y32[last_before] == np.float32(x[last_before]))
    slope_hidden = bool(dy32[last_before] == np.float32(1.0))
    props = _properties("softplus", params)
    assert props.monotonic is value_hidden
    assert props.smooth is (value_hidden and slope_hidden)
    if value_hidden:
        assert np.all(np.diff(y32) >= 0)


def test_softplus_threshold_1_is_neither_monotonic_nor_smooth_and_defaults_are_both() -> None:
    drop = math.log1p(math.exp(-1.0))  # 0.313: f falls from 1.313 to 1 at x = 1
    y, _ = get_activation("softplus").evaluate(
        np.array([1.0, np.nextafter(1.0, 2.0)]), {"threshold": 1}
    )
    assert y[0] - y[1] == pytest.approx(drop, rel=1e-12)
    props = _properties("softplus", {"threshold": 1})
    assert props.monotonic is False and props.smooth is False
    # defaults: the drop at x = 20 is 2.06e-9, below float32's half-step of 9.5e-7 there
    y, _ = get_activation("softplus").evaluate(np.array([20.0, np.nextafter(20.0, 21.0)]))
    assert y[0] - y[1] == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-6)
    assert np.float32(y[0]) == np.float32(20.0)
    props = _properties("softplus", {})
    assert props.monotonic is True and props.smooth is True


@pytest.mark.parametrize(
    ("name", "slope"),
    [("leaky_relu", "negative_slope"), ("prelu", "init")],
)
@pytest.mark.parametrize("value", [0.0, 0.01, 0.25, 1.0])
def test_leaky_relu_and_prelu_properties_follow_the_slope(
    name: str, slope: str, value: float
) -> None:
    """Slope 1 is the identity: smooth and odd. Checked on the function, not only the flag."""
    positive = np.linspace(0.01, 5.0, 500)
    x = np.concatenate([-positive[::-1], [0.0], positive])
    y, dy = get_activation(name).evaluate(x, {slope: value})
    odd = bool(np.array_equal(y[::-1], -y))
    continuous_slope = bool(np.all(dy == dy[0]))
    props = _properties(name, {slope: value})
    assert props.zero_centred is odd is (value == 1.0)
    assert props.smooth is continuous_slope is (value == 1.0)
    assert props.monotonic is True
    assert props.min_value == (0.0 if value == 0.0 else None)
    assert props.min_attained is (value == 0.0)


# Where f reaches its infimum (True) or only approaches it (False, with the side it approaches on).
ATTAINED: dict[str, bool] = {
    "relu": True, "relu6": True, "prelu": False, "leaky_relu": False, "elu": False,
    "selu": False, "celu": False, "gelu": True, "silu": True, "mish": True, "softplus": False,
    "softsign": False, "tanh": False, "sigmoid": False, "hardsigmoid": True, "hardswish": True,
    "gaussian": False, "identity": False, "binary_step": True,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ATTAINED))
def test_min_value_is_the_infimum_and_min_attained_says_whether_it_is_reached(name: str) -> None:
    props = _properties(name, {})
    m, attained = props.min_value, props.min_attained
    assert attained is ATTAINED[name]
    reference = REFERENCES[name]
    resolved = get_activation(name).resolve_params({})
    values = [reference(mp.mpf(x), resolved)[0] for x in GRID.tolist()]
    if m is None:  # unbounded below
        assert min(values) < -1e3
        return
    assert all(v >= m - 1e-12 for v in values)
    if attained:  # reached on the grid, or where f' = 0 next to the grid's lowest point
        lowest = GRID[int(np.argmin([float(v) for v in values]))]
        if min(abs(v - m) for v in values) > 1e-12:
            where = mp.findroot(lambda t: reference(t, resolved)[1], mp.mpf(float(lowest)))
            assert abs(reference(where, resolved)[0] - m) < 1e-12
    else:  # approached at x = ±1e300 (m is that limit to float64 precision), never reached
        limit = min(reference(mp.mpf(x), resolved)[0] for x in (-1e300, 1e300))
        assert abs(limit - m) <= 2.0**-52 * abs(m) + 1e-300
        assert all(v > limit for x, v in zip(GRID.tolist(), values, strict=True) if abs(x) <= 40)


def test_api_reports_min_attained(tmp_path_factory: pytest.TempPathFactory) -> None:
    app = create_app(Settings(models_dir=tmp_path_factory.mktemp("no_models")))
    with TestClient(app) as client:
        listing = {a["name"]: a for a in client.get("/v1/activations").json()["activations"]}
        sigmoid = listing["sigmoid"]["properties"]
        assert sigmoid["min_value"] == 0.0 and sigmoid["min_attained"] is False
        assert listing["relu"]["properties"]["min_attained"] is True
        props = client.post(
            "/v1/activations/leaky_relu/eval",
            json={"x": [1.0], "params": {"negative_slope": 1}},
        ).json()["properties"]
        assert props["smooth"] is True and props["zero_centred"] is True
        props = client.post(
            "/v1/activations/softplus/eval", json={"x": [1.0], "params": {"threshold": 1}}
        ).json()["properties"]
        assert props["monotonic"] is False and props["smooth"] is False
