"""Evaluate a catalogue activation for an HTTP request: validate the points, run, shape the result.

Every rejection is a ``NotFound`` or ``Unprocessable`` whose message says what was wrong and what
is allowed, without echoing the client's values.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

from service.activation_api import (
    MAX_ABS_X,
    MAX_POINTS,
    ActivationInfo,
    ActivationList,
    EvalRequest,
    EvalResponse,
    PropertiesInfo,
)
from service.activations import (
    CATALOGUE,
    Activation,
    Array,
    CatalogueError,
    ParamValue,
    get_activation,
)
from service.errors import NotFound, Unprocessable, quoted


def find_activation(name: str) -> Activation:
    """Catalogue lookup (aliases, any case); 404 listing the valid names."""
    try:
        return get_activation(name)
    except CatalogueError:
        aliases = ", ".join(
            f"{alias} (= {a.name})" for a in CATALOGUE.values() for alias in a.aliases
        )
        raise NotFound(
            f"unknown activation; choose one of: {', '.join(CATALOGUE)}; aliases: {aliases}",
            code="unknown_activation",
        ) from None


@cache
def catalogue_listing() -> ActivationList:
    infos = [ActivationInfo.of(a) for a in CATALOGUE.values()]
    return ActivationList(count=len(infos), activations=infos)


@cache
def activation_info(name: str) -> ActivationInfo:
    return ActivationInfo.of(CATALOGUE[name])


def resolve_params(activation: Activation, given: dict[str, Any]) -> dict[str, ParamValue]:
    known = [p.name for p in activation.params]
    unknown = [key for key in given if key not in known]
    if unknown:
        allowed = ", ".join(known) if known else "none"
        named = ", ".join(quoted(key, 32) for key in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        noun = "parameter" if len(unknown) == 1 else "parameters"
        raise Unprocessable(
            f"{activation.name!r} has no {noun} {named}{more}; its parameters are: {allowed}",
            code="invalid_params",
        )
    try:
        return activation.resolve_params(given)
    except CatalogueError as exc:  # messages name the parameter and its allowed values only
        raise Unprocessable(str(exc), code="invalid_params") from None


def _points(request: EvalRequest) -> Array:
    if (request.x is None) == (request.range is None):
        raise Unprocessable("give exactly one of 'x' (a list of numbers) or 'range'")
    if request.range is not None:
        start, stop, num = request.range.start, request.range.stop, request.range.num
        for field, value in (("start", start), ("stop", stop)):
            if not math.isfinite(value) or abs(value) > MAX_ABS_X:
                raise Unprocessable(
                    f"range.{field} must be a finite number with |value| ≤ {MAX_ABS_X:g} "
                    "(NaN and Infinity are not allowed)",
                    code="non_finite_input" if not math.isfinite(value) else "invalid_request",
                )
        return np.linspace(start, stop, num, dtype=np.float64)
    return _array_of(request.x)


def _array_of(x: Any) -> Array:
    if len(x) == 0:
        raise Unprocessable("x must hold at least one number")
    if all(isinstance(row, list) for row in x):
        widths = {len(row) for row in x}
        if len(widths) != 1 or 0 in widths:
            raise Unprocessable("the rows of x must all have the same, non-zero length")
    elif any(isinstance(row, list) for row in x):
        raise Unprocessable("x must be a list of numbers or a list of rows, not a mix")
    count = len(x) * (len(x[0]) if isinstance(x[0], list) else 1)
    if count > MAX_POINTS:
        raise Unprocessable(f"x holds {count} numbers; at most {MAX_POINTS} are allowed")
    array = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        raise Unprocessable(
            f"x holds {int((~finite).sum())} non-finite value(s) (NaN or Infinity); "
            "only finite numbers are allowed",
            code="non_finite_input",
        )
    if np.abs(array).max() > MAX_ABS_X:
        raise Unprocessable(f"every x must satisfy |x| ≤ {MAX_ABS_X:g}")
    return array


def _maxout_k(activation: Activation, x: Array, given: dict[str, Any]) -> dict[str, Any]:
    """For a list of groups, k defaults to the group length (within k's bounds) and equals it."""
    if x.ndim != 2:
        return given
    group = x.shape[1]
    k = next(p for p in activation.params if p.name == "k")
    if k.minimum is not None and k.maximum is not None and not k.minimum <= group <= k.maximum:
        raise Unprocessable(
            f"maxout groups (the rows of x) must hold {k.minimum:g} to {k.maximum:g} values "
            f"each; they hold {group}"
        )
    if "k" in given and given["k"] != group:
        raise Unprocessable(
            f"params.k must equal the group length when x is a list of groups; the groups hold "
            f"{group} values (or leave k out)",
            code="invalid_params",
        )
    return {**given, "k": group}


def _check_shape(activation: Activation, x: Array, params: dict[str, ParamValue]) -> None:
    if activation.kind == "grouped":
        k = int(params["k"])
        if x.ndim == 1 and x.size % k != 0:
            raise Unprocessable(
                f"maxout needs a number of x values that is a multiple of k={k}, or a list of "
                f"groups of k; got {x.size} values"
            )
    if activation.kind == "vector":
        axis = int(params["axis"])
        if not -x.ndim <= axis < x.ndim:
            allowed = ", ".join(str(a) for a in range(-x.ndim, x.ndim))
            raise Unprocessable(
                f"axis must be one of {allowed} for x with {x.ndim} dimension(s)",
                code="invalid_params",
            )


def evaluate(activation: Activation, request: EvalRequest) -> EvalResponse:
    """f(x) and its derivative for the request's points (see ``EvalResponse`` for the shapes)."""
    x = _points(request)
    given = dict(request.params)
    if activation.kind == "grouped":
        given = _maxout_k(activation, x, given)
    params = resolve_params(activation, given)
    _check_shape(activation, x, params)
    flat_groups = activation.kind == "grouped" and x.ndim == 2
    y, dy = activation.evaluate(x.reshape(-1) if flat_groups else x, params)
    if flat_groups:
        dy = dy.reshape(x.shape)
    if not (np.isfinite(y).all() and np.isfinite(dy).all()):  # the catalogue guarantees this
        raise RuntimeError(f"{activation.name} produced a non-finite value")
    return EvalResponse(
        name=activation.name,
        params=params,
        x=x.tolist(),
        y=y.tolist(),
        dy=dy.tolist(),
        properties=PropertiesInfo.of(activation.properties(params)),
    )
