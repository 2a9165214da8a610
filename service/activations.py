"""The activation catalogue: one list of names, parameters, formulas, derivatives and properties.

numpy only (no torch), so the service can evaluate activations and export/ can build networks
from the same names. ``export.activations`` maps every network-usable name here to a torch module
factory; a test asserts both sets are equal and that the values agree on a dense grid.

Every function is evaluated in float64 and is finite for finite input up to |x| = 1e4 and beyond
(no overflow: exponentials only ever see non-positive arguments or clipped ones). f and f' keep
full relative precision far into the tails (about 1e-13 up to |x| = 1e6, until the value drops
below the normal float64 range): nothing is computed as a difference of nearly equal numbers
(sigmoid from exp(-|x|), 1 - tanh² as sech², GELU's Phi from erfc).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
ParamValue = float | int | str
Params = Mapping[str, ParamValue]
Kind = Literal["elementwise", "grouped", "vector"]
Saturation = Literal["none", "negative", "positive", "both"]


class CatalogueError(ValueError):
    """An unknown activation name or a parameter value outside what the catalogue allows."""


@dataclass(frozen=True)
class Param:
    name: str
    default: ParamValue
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    integer: bool = False

    def describe_allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in [{self.minimum}, {self.maximum}]"

    def validate(self, activation: str, value: object) -> ParamValue:
        where = f"parameter {self.name!r} of {activation!r}"
        if self.choices is not None:
            if not isinstance(value, str) or value not in self.choices:
                raise CatalogueError(f"{where} must be {self.describe_allowed()}")
            return value
        number = _finite_float(value)
        if (
            number is None
            or (self.integer and not number.is_integer())
            or (self.minimum is not None and number < self.minimum)
            or (self.maximum is not None and number > self.maximum)
        ):
            raise CatalogueError(f"{where} must be {self.describe_allowed()}")
        return int(number) if self.integer else number


def _finite_float(value: object) -> float | None:
    """``value`` as a finite float, or None: not a number (bool, str, ...), NaN, ±inf, or an int
    too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond ~1.8e308
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Properties:
    """What the tutorials talk about, per activation (some depend on the parameters)."""

    output_range: tuple[float | None, float | None]
    """(low, high); None means unbounded on that side."""
    min_value: float | None
    """Greatest lower bound (infimum) of f, or None if unbounded below; whether f reaches it is
    ``min_attained`` (sigmoid, tanh, ELU, SELU, CELU, softplus, softsign, gaussian and
    softmax only approach it)."""
    min_attained: bool
    """f takes the value ``min_value`` at some finite x (a true minimum, not only an infimum)."""
    monotonic: bool
    """Non-decreasing everywhere. Softplus (torch's form, which returns x above the threshold)
    drops by log1p(exp(-threshold)) / beta at x = threshold / beta; it counts as monotonic only
    when that drop is below float32 resolution there (less than half the gap between float32
    numbers just below threshold / beta), i.e. invisible to a float32 network."""
    smooth: bool
    """Continuously differentiable everywhere (C1). For softplus: only when the drop above is
    below float32 resolution and so is the slope's jump there, sigmoid(-threshold) < 2**-25
    (half the float32 gap below 1)."""
    zero_centred: bool
    """f is odd (f(-x) = -f(x)), so a symmetric input gives zero-mean output."""
    bounded: bool
    """Bounded both below and above."""
    saturation: Saturation
    """Where f' tends to 0 (or is 0): the sides on which gradients vanish."""

    @property
    def saturating(self) -> bool:
        """Saturates on both sides: the sigmoid/tanh vanishing-gradient behaviour."""
        return self.saturation == "both"


@dataclass(frozen=True)
class Activation:
    name: str
    formula: str
    description: str
    f: Callable[[Array, dict[str, ParamValue]], Array]
    df: Callable[[Array, dict[str, ParamValue]], Array]
    properties: Callable[[dict[str, ParamValue]], Properties]
    params: tuple[Param, ...] = ()
    kind: Kind = "elementwise"
    trainable: bool = True
    """False where gradients are zero almost everywhere (training fails with a clear message)."""
    aliases: tuple[str, ...] = field(default=())

    def resolve_params(self, given: Params | None = None) -> dict[str, ParamValue]:
        """Defaults overlaid with ``given``, each validated; unknown names are an error."""
        given = dict(given or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            allowed = ", ".join(known) if known else "none"
            raise CatalogueError(
                f"{self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are: {allowed}"
            )
        return {
            name: param.validate(self.name, given.get(name, param.default))
            for name, param in known.items()
        }

    def evaluate(self, x: Array, params: Params | None = None) -> tuple[Array, Array]:
        """(f(x), f'(x)) in float64, for elementwise activations."""
        resolved = self.resolve_params(params)
        x64 = np.asarray(x, dtype=np.float64)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            return self.f(x64, resolved), self.df(x64, resolved)


# --------------------------------------------------------------------------- helpers


def _relu(x: Array) -> Array:
    return np.maximum(x, 0.0)


def _sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)), accurate in both tails: exp only ever sees -|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0.0, 1.0, e) / (1.0 + e)


def _sigmoid_slope(x: Array) -> Array:
    """sigmoid(x) * sigmoid(-x) = sigmoid'(x), without forming 1 - sigmoid(x)."""
    e = np.exp(-np.abs(x))
    return e / (1.0 + e) ** 2


def _sech2(x: Array) -> Array:
    """sech(x)**2 = 1 - tanh(x)**2 = 4 * sigmoid'(2x), accurate where tanh(x) rounds to ±1."""
    return 4.0 * _sigmoid_slope(2.0 * x)


def _softplus(x: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    bx = beta * x
    small = np.log1p(np.exp(-np.abs(bx))) + np.maximum(bx, 0.0)
    return np.where(bx > threshold, x, small / beta)


_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _square_capped(x: Array) -> Array:
    """x**2 capped at 1e6: exp(-1e6) is already 0, and the cap avoids overflow for huge |x|."""
    return np.minimum(np.abs(x), 1e3) ** 2


def _step(x: Array) -> Array:
    return (x > 0.0).astype(np.float64)


def _numeric_min(f: Callable[[Array], Array], lo: float = -20.0, hi: float = 20.0) -> float:
    """Global minimum of a 1-D function on [lo, hi]: dense grid, then golden-section refinement."""
    grid = np.linspace(lo, hi, 40001)
    values = f(grid)
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if f(np.array([c]))[0] < f(np.array([d]))[0]:
            b = d
        else:
            a = c
    return float(f(np.array([(a + b) / 2.0]))[0])


def _props(
    low: float | None,
    high: float | None,
    *,
    monotonic: bool,
    smooth: bool,
    zero_centred: bool = False,
    saturation: Saturation,
    min_value: float | None = None,
    min_attained: bool,
) -> Properties:
    lowest = low if min_value is None else min_value
    return Properties(
        output_range=(lowest, high),
        min_value=lowest,
        min_attained=min_attained,
        monotonic=monotonic,
        smooth=smooth,
        zero_centred=zero_centred,
        bounded=low is not None and high is not None,
        saturation=saturation,
    )


def _f(p: dict[str, ParamValue], name: str) -> float:
    return float(p[name])


# --------------------------------------------------------------------------- the catalogue

_GELU_APPROX = Param(
    "approximate",
    "none",
    "'none' = exact erf form, 'tanh' = tanh approximation",
    choices=("none", "tanh"),
)


def _gelu_tanh_arg(x: Array) -> Array:
    """2z for GELU's tanh form, where 0.5 * (1 + tanh(z)) = sigmoid(2z); |x| is clipped at 100
    (sigmoid(2z) is exactly 0 or 1 far before) so x**3 cannot overflow."""
    xc = np.clip(x, -100.0, 100.0)
    return 2.0 * _SQRT_2_OVER_PI * (xc + 0.044715 * xc**3)


def _big_phi(x: Array) -> Array:
    """Standard normal CDF as 0.5 * erfc(-x / sqrt 2): no 1 + erf(x) cancellation for x < 0."""
    return 0.5 * _erfc(-x * _INV_SQRT_2)


def _gelu(x: Array, p: dict[str, ParamValue]) -> Array:
    if p["approximate"] == "tanh":
        return x * _sigmoid(_gelu_tanh_arg(x))
    return x * _big_phi(x)


def _gelu_df(x: Array, p: dict[str, ParamValue]) -> Array:
    if p["approximate"] == "tanh":
        xc = np.clip(x, -100.0, 100.0)
        arg = _gelu_tanh_arg(x)
        d_arg = 2.0 * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * xc**2)
        return _sigmoid(arg) + xc * _sigmoid_slope(arg) * d_arg
    pdf = np.exp(-0.5 * _square_capped(x)) / math.sqrt(2.0 * math.pi)
    return _big_phi(x) + x * pdf


def _silu_df(x: Array, p: dict[str, ParamValue]) -> Array:
    bx = _f(p, "beta") * x
    return _sigmoid(bx) + bx * _sigmoid_slope(bx)


def _mish(x: Array, p: dict[str, ParamValue]) -> Array:
    return x * np.tanh(_softplus(x))


def _mish_df(x: Array, p: dict[str, ParamValue]) -> Array:
    sp = _softplus(x)
    return np.tanh(sp) + x * _sigmoid(x) * _sech2(sp)


def _softplus_df(x: Array, p: dict[str, ParamValue]) -> Array:
    beta, threshold = _f(p, "beta"), _f(p, "threshold")
    return np.where(beta * x > threshold, 1.0, _sigmoid(beta * x))


_FLOAT32_HALF_GAP_BELOW_1 = 2.0**-25


def _softplus_props(p: dict[str, ParamValue]) -> Properties:
    """Monotonic and smooth only where torch's switch to x at threshold / beta is invisible in
    float32 (see ``Properties.monotonic`` and ``Properties.smooth``)."""
    beta, threshold = _f(p, "beta"), _f(p, "threshold")
    at = np.float32(threshold / beta)
    gap = float(at - np.nextafter(at, np.float32(0.0)))  # float32 spacing just below the switch
    drop = math.log1p(math.exp(-threshold)) / beta
    continuous = drop < gap / 2.0
    slope_jump = 1.0 / (1.0 + math.exp(threshold))  # 1 - sigmoid(threshold)
    return _props(
        0.0,
        None,
        monotonic=continuous,
        smooth=continuous and slope_jump < _FLOAT32_HALF_GAP_BELOW_1,
        saturation="negative",
        min_attained=False,
    )


def _leaky_props(slope: float) -> Properties:
    """Leaky ReLU / PReLU with negative slope ``slope``; slope 1 is the identity."""
    linear = slope == 1.0
    return _props(
        None if slope > 0 else 0.0,
        None,
        monotonic=True,
        smooth=linear,
        zero_centred=linear,
        saturation="none" if slope > 0 else "negative",
        min_attained=slope == 0,
    )


_ALPHA = Param("alpha", 1.0, "scale of the negative saturation", minimum=0.01, maximum=10.0)
_BETA = Param("beta", 1.0, "input scale", minimum=0.1, maximum=10.0)

_ENTRIES: tuple[Activation, ...] = (
    Activation(
        "relu",
        "max(0, x)",
        "Rectified linear unit: cheapest nonlinearity; dead for x < 0.",
        lambda x, p: _relu(x),
        lambda x, p: _step(x),
        lambda p: _props(
            0.0, None, monotonic=True, smooth=False, saturation="negative", min_attained=True
        ),
    ),
    Activation(
        "relu6",
        "min(max(0, x), 6)",
        "ReLU capped at 6 (MobileNet).",
        lambda x, p: np.clip(x, 0.0, 6.0),
        lambda x, p: ((x > 0.0) & (x < 6.0)).astype(np.float64),
        lambda p: _props(
            0.0, 6.0, monotonic=True, smooth=False, saturation="both", min_attained=True
        ),
    ),
    Activation(
        "leaky_relu",
        "x if x > 0 else negative_slope * x",
        "ReLU with a small negative slope, so units never die.",
        lambda x, p: np.where(x > 0.0, x, _f(p, "negative_slope") * x),
        lambda x, p: np.where(x > 0.0, 1.0, _f(p, "negative_slope")),
        lambda p: _leaky_props(_f(p, "negative_slope")),
        params=(Param("negative_slope", 0.01, "slope for x < 0", minimum=0.0, maximum=1.0),),
    ),
    Activation(
        "prelu",
        "x if x > 0 else a * x  (a learned, initialised to init)",
        "Parametric ReLU: the negative slope is learned, per channel or one for the layer.",
        lambda x, p: np.where(x > 0.0, x, _f(p, "init") * x),
        lambda x, p: np.where(x > 0.0, 1.0, _f(p, "init")),
        lambda p: _leaky_props(_f(p, "init")),
        params=(
            Param("init", 0.25, "initial negative slope", minimum=0.0, maximum=1.0),
            Param(
                "mode",
                "channel",
                "'channel' = one slope per channel, 'single' = one per site",
                choices=("channel", "single"),
            ),
        ),
    ),
    Activation(
        "elu",
        "x if x > 0 else alpha * (exp(x) - 1)",
        "Exponential linear unit: smooth negative side saturating at -alpha.",
        lambda x, p: np.where(x > 0.0, x, _f(p, "alpha") * np.expm1(np.minimum(x, 0.0))),
        lambda x, p: np.where(x > 0.0, 1.0, _f(p, "alpha") * np.exp(np.minimum(x, 0.0))),
        lambda p: _props(
            -_f(p, "alpha"),
            None,
            monotonic=True,
            smooth=_f(p, "alpha") == 1.0,
            saturation="negative",
            min_attained=False,
        ),
        params=(_ALPHA,),
    ),
    Activation(
        "selu",
        "scale * (x if x > 0 else alpha * (exp(x) - 1)), alpha≈1.6733, scale≈1.0507",
        "Scaled ELU with self-normalising constants.",
        lambda x, p: _SELU_SCALE * np.where(x > 0.0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
        lambda x, p: _SELU_SCALE * np.where(x > 0.0, 1.0, _SELU_ALPHA * np.exp(np.minimum(x, 0.0))),
        lambda p: _props(
            -_SELU_SCALE * _SELU_ALPHA,
            None,
            monotonic=True,
            smooth=False,
            saturation="negative",
            min_attained=False,
        ),
    ),
    Activation(
        "celu",
        "max(0, x) + min(0, alpha * (exp(x / alpha) - 1))",
        "Continuously differentiable ELU for any alpha.",
        lambda x, p: (
            np.maximum(x, 0.0)
            + np.minimum(0.0, _f(p, "alpha") * np.expm1(np.minimum(x, 0.0) / _f(p, "alpha")))
        ),
        lambda x, p: np.where(x > 0.0, 1.0, np.exp(np.minimum(x, 0.0) / _f(p, "alpha"))),
        lambda p: _props(
            -_f(p, "alpha"),
            None,
            monotonic=True,
            smooth=True,
            saturation="negative",
            min_attained=False,
        ),
        params=(_ALPHA,),
    ),
    Activation(
        "gelu",
        "x * Phi(x)  (Phi = standard normal CDF)",
        "Gaussian error linear unit (transformers); smooth, non-monotonic near -0.75.",
        _gelu,
        _gelu_df,
        lambda p: _props(
            None,
            None,
            monotonic=False,
            smooth=True,
            saturation="negative",
            min_attained=True,
            min_value=_numeric_min(lambda t: _gelu(t, dict(p)), -5.0, 1.0),
        ),
        params=(_GELU_APPROX,),
    ),
    Activation(
        "silu",
        "x * sigmoid(beta * x)",
        "Sigmoid-weighted linear unit (Swish); beta=1 is SiLU.",
        lambda x, p: x * _sigmoid(_f(p, "beta") * x),
        _silu_df,
        lambda p: _props(
            None,
            None,
            monotonic=False,
            smooth=True,
            saturation="negative",
            min_attained=True,
            min_value=_numeric_min(lambda t: t * _sigmoid(_f(p, "beta") * t), -60.0, 1.0),
        ),
        params=(_BETA,),
        aliases=("swish",),
    ),
    Activation(
        "mish",
        "x * tanh(softplus(x))",
        "Self-regularised non-monotonic activation (YOLOv4).",
        _mish,
        _mish_df,
        lambda p: _props(
            None,
            None,
            monotonic=False,
            smooth=True,
            saturation="negative",
            min_attained=True,
            min_value=_numeric_min(lambda t: _mish(t, {}), -5.0, 1.0),
        ),
    ),
    Activation(
        "softplus",
        "log(1 + exp(beta * x)) / beta  (x where beta * x > threshold)",
        "Smooth approximation of ReLU; always positive.",
        lambda x, p: _softplus(x, _f(p, "beta"), _f(p, "threshold")),
        _softplus_df,
        _softplus_props,
        params=(
            _BETA,
            Param(
                "threshold", 20.0, "above beta * x > threshold, return x", minimum=1.0, maximum=50.0
            ),
        ),
    ),
    Activation(
        "softsign",
        "x / (1 + |x|)",
        "Like tanh but with polynomial (slower) saturation.",
        lambda x, p: x / (1.0 + np.abs(x)),
        lambda x, p: (1.0 / (1.0 + np.abs(x))) ** 2,
        lambda p: _props(
            -1.0,
            1.0,
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturation="both",
            min_attained=False,
        ),
    ),
    Activation(
        "tanh",
        "tanh(x)",
        "Zero-centred but saturating: gradients vanish for |x| > ~3.",
        lambda x, p: np.tanh(x),
        lambda x, p: _sech2(x),
        lambda p: _props(
            -1.0,
            1.0,
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturation="both",
            min_attained=False,
        ),
    ),
    Activation(
        "sigmoid",
        "1 / (1 + exp(-x))",
        "Logistic; max gradient 0.25, saturating: trains slowly.",
        lambda x, p: _sigmoid(x),
        lambda x, p: _sigmoid_slope(x),
        lambda p: _props(
            0.0, 1.0, monotonic=True, smooth=True, saturation="both", min_attained=False
        ),
    ),
    Activation(
        "hardsigmoid",
        "relu6(x + 3) / 6",
        "Piecewise-linear sigmoid (cheap).",
        lambda x, p: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
        lambda x, p: np.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0),
        lambda p: _props(
            0.0, 1.0, monotonic=True, smooth=False, saturation="both", min_attained=True
        ),
    ),
    Activation(
        "hardswish",
        "x * relu6(x + 3) / 6",
        "Piecewise approximation of Swish (MobileNetV3).",
        lambda x, p: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
        lambda x, p: np.where(x < -3.0, 0.0, np.where(x > 3.0, 1.0, (2.0 * x + 3.0) / 6.0)),
        lambda p: _props(
            None,
            None,
            monotonic=False,
            smooth=False,
            saturation="negative",
            min_attained=True,
            min_value=-0.375,
        ),
    ),
    Activation(
        "gaussian",
        "exp(-x^2)",
        "Radial bump: non-monotonic, bounded, saturating on both sides.",
        lambda x, p: np.exp(-_square_capped(x)),
        lambda x, p: -2.0 * x * np.exp(-_square_capped(x)),
        lambda p: _props(
            0.0, 1.0, monotonic=False, smooth=True, saturation="both", min_attained=False
        ),
    ),
    Activation(
        "identity",
        "x",
        "No nonlinearity: the whole network collapses to one linear map (per BatchNorm affine).",
        lambda x, p: x.copy(),
        lambda x, p: np.ones_like(x),
        lambda p: _props(
            None,
            None,
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturation="none",
            min_attained=False,
        ),
    ),
    Activation(
        "binary_step",
        "1 if x > 0 else 0",
        "Heaviside step: gradient zero almost everywhere, so "
        "it cannot be trained by backpropagation (usable for export and inference only).",
        lambda x, p: _step(x),
        lambda x, p: np.zeros_like(x),
        lambda p: _props(
            0.0, 1.0, monotonic=True, smooth=False, saturation="both", min_attained=True
        ),
        trainable=False,
    ),
    Activation(
        "maxout",
        "max over groups of k consecutive inputs",
        "Maxout: max over k linear pieces (the preceding convolution is widened k times).",
        lambda x, p: maxout(x, int(p["k"])),
        lambda x, p: maxout_grad(x, int(p["k"])),
        lambda p: _props(
            None, None, monotonic=True, smooth=False, saturation="none", min_attained=False
        ),
        params=(
            Param(
                "k", 2, "group size (number of linear pieces)", minimum=2, maximum=4, integer=True
            ),
        ),
        kind="grouped",
    ),
    Activation(
        "softmax",
        "exp(x_i - max(x)) / sum_j exp(x_j - max(x))",
        "Turns a vector of scores into probabilities (the classifier's last step, not a hidden "
        "activation). dy is the diagonal of the Jacobian, p_i * (1 - p_i).",
        lambda x, p: softmax(x, int(p["axis"])),
        lambda x, p: softmax(x, int(p["axis"])) * (1.0 - softmax(x, int(p["axis"]))),
        lambda p: _props(
            0.0, 1.0, monotonic=False, smooth=True, saturation="both", min_attained=False
        ),
        params=(
            Param(
                "axis",
                -1,
                "axis along which probabilities sum to 1",
                minimum=-8,
                maximum=7,
                integer=True,
            ),
        ),
        kind="vector",
    ),
)


# --------------------------------------------------------------------------- vector ops


def softmax(x: Array, axis: int = -1) -> Array:
    """Max-subtracted softmax; rows sum to 1. The one softmax of the project (numpy side)."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def _groups(x: Array, k: int) -> Array:
    if x.shape[-1] % k != 0:
        raise CatalogueError(
            f"maxout needs the last axis ({x.shape[-1]}) to be a multiple of k={k}"
        )
    return x.reshape(*x.shape[:-1], x.shape[-1] // k, k)


def maxout(x: Array, k: int) -> Array:
    """Max over consecutive groups of k along the last axis: shape [..., n] -> [..., n // k]."""
    return _groups(x, k).max(axis=-1)


def maxout_grad(x: Array, k: int) -> Array:
    """d maxout / d x: 1 at each group's (first) maximum, 0 elsewhere; same shape as x."""
    g = _groups(x, k)
    onehot = np.zeros_like(g)
    np.put_along_axis(onehot, g.argmax(axis=-1)[..., None], 1.0, axis=-1)
    return onehot.reshape(x.shape)


# --------------------------------------------------------------------------- lookup

CATALOGUE: dict[str, Activation] = {a.name: a for a in _ENTRIES}
_ALIASES: dict[str, str] = {alias: a.name for a in _ENTRIES for alias in a.aliases}
NETWORK_ACTIVATIONS: tuple[str, ...] = tuple(a.name for a in _ENTRIES if a.kind != "vector")
"""Names usable inside a ResNet (everything but softmax)."""


def get_activation(name: str) -> Activation:
    """Look up by name or alias (case-insensitive); unknown names list what is allowed."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in CATALOGUE:
        raise CatalogueError(
            f"unknown activation {name!r}; choose one of: {', '.join(CATALOGUE)} "
            f"(aliases: {', '.join(f'{a}={t}' for a, t in _ALIASES.items())})"
        )
    return CATALOGUE[key]


def get_network_activation(name: str) -> Activation:
    """Like ``get_activation`` but only names that can sit inside a ResNet."""
    activation = get_activation(name)
    if activation.kind == "vector":
        raise CatalogueError(
            f"{activation.name!r} is not a hidden-layer activation; choose one of: "
            + ", ".join(NETWORK_ACTIVATIONS)
        )
    return activation
