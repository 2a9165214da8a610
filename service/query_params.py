"""Unknown or repeated query parameters are rejected, naming them and what the route takes.

FastAPI ignores query parameters a route does not declare, so a typo (``?topk=3``) or an option
the route does not have (``/v1/compare?version=2``) would be dropped without a word and the
client would get an answer to a question it did not ask. It also keeps only the last value of a
single-valued parameter given twice (``?top_k=3&top_k=5``), which is as silent. Installed as an
app-wide dependency: 422 ``unknown_query_parameter`` or ``repeated_query_parameter`` on /v1
(400 on /v2, the protocol's status for a bad request). A list parameter (``/v1/compare``'s
``models``) may repeat.
"""

from __future__ import annotations

import collections
import types
import typing
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.errors import Unprocessable, quoted

_MAX_NAMED = 5


def _takes_a_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_a_list(arg) for arg in typing.get_args(annotation))
    return isinstance(origin, type) and issubclass(origin, (Sequence, AbstractSet))


def declared_query_parameters(route: APIRoute) -> dict[str, bool]:
    """The query parameter names (aliases) ``route`` declares, its dependencies' included, each
    with whether it takes a list (a walk over a handful of dependants, done only for a request
    that has a query string)."""
    names: dict[str, bool] = {}
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        for field in dependant.query_params:
            names[field.alias] = _takes_a_list(field.field_info.annotation)
        pending.extend(dependant.dependencies)
    return names


def _named(keys: list[str]) -> str:
    named = ", ".join(quoted(key, 32) for key in keys[:_MAX_NAMED])
    more = f" and {len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else ""
    noun = "parameter" if len(keys) == 1 else "parameters"
    return f"{noun} {named}{more}"


async def reject_unknown_query_parameters(request: Request) -> None:
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    allowed = declared_query_parameters(route)
    status = 400 if request.url.path.startswith("/v2") else 422
    keys = [key for key, _ in request.query_params.multi_items()]  # every occurrence
    unknown = [key for key in dict.fromkeys(keys) if key not in allowed]
    if unknown:
        takes = ", ".join(allowed) if allowed else "no query parameters"
        raise Unprocessable(
            f"unknown query {_named(unknown)}; this route takes: {takes}",
            status=status,
            code="unknown_query_parameter",
        )
    counts = collections.Counter(keys)
    repeated = [key for key, count in counts.items() if count > 1 and not allowed[key]]
    if repeated:
        raise Unprocessable(
            f"query {_named(repeated)} given more than once; give each a single value",
            status=status,
            code="repeated_query_parameter",
        )
