"""Resolve ``/v2/models/{name}[/versions/{version}]`` to a loaded model (404/503 otherwise)."""

from __future__ import annotations

from service.errors import NotFound, quoted
from service.registry import ModelRegistry
from service.runtime import ModelRuntime


def parse_version(registry: ModelRegistry, name: str, version: str) -> int:
    try:
        number = int(version)
    except ValueError:
        number = 0
    if number < 1 or str(number) != version.strip():
        available = ", ".join(str(v) for v in registry.available_versions(name)) or "none"
        raise NotFound(
            f"model {quoted(name)} has no version {quoted(version)}: versions are whole "
            f"numbers >= 1; available versions: {available}",
            code="version_not_found",
        )
    return number


def resolve_model(registry: ModelRegistry, name: str, version: str | None) -> ModelRuntime:
    """The serving version, or the one asked for (a non-serving version is loaded on demand)."""
    serving = registry.get(name)  # unknown model → 404, still loading → 503
    if version is None:
        return serving
    return registry.get(name, parse_version(registry, name, version))
