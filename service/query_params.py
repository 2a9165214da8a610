"""Unknown query parameters are rejected, naming them and what the route takes.

FastAPI ignores query parameters a route does not declare, so a typo (``?topk=3``) or an option
the route does not have (``/v1/compare?version=2``) would be dropped without a word and the
client would get an answer to a question it did not ask. Installed as an app-wide dependency:
422 ``unknown_query_parameter`` on /v1 (400 on /v2, the protocol's status for a bad request).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.errors import Unprocessable, quoted

_MAX_NAMED = 5


def declared_query_parameters(route: APIRoute) -> tuple[str, ...]:
    """The query parameter names (aliases) ``route`` declares, its dependencies' included (a walk
    over a handful of dependants, done only for a request that has a query string)."""
    names: dict[str, None] = {}
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(dict.fromkeys(field.alias for field in dependant.query_params))
        pending.extend(dependant.dependencies)
    return tuple(names)


async def reject_unknown_query_parameters(request: Request) -> None:
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    allowed = declared_query_parameters(route)
    unknown = [key for key in dict.fromkeys(request.query_params.keys()) if key not in allowed]
    if not unknown:
        return
    named = ", ".join(quoted(key, 32) for key in unknown[:_MAX_NAMED])
    more = f" and {len(unknown) - _MAX_NAMED} more" if len(unknown) > _MAX_NAMED else ""
    noun = "parameter" if len(unknown) == 1 else "parameters"
    takes = ", ".join(allowed) if allowed else "no query parameters"
    raise Unprocessable(
        f"unknown query {noun} {named}{more}; this route takes: {takes}",
        status=400 if request.url.path.startswith("/v2") else 422,
        code="unknown_query_parameter",
    )
