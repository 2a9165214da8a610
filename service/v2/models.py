"""Resolve ``/v2/models/{name}[/versions/{version}]`` to a loaded model (404/503 otherwise)."""

from __future__ import annotations

import contextlib
import re

from service.errors import NotFound, quoted
from service.registry import ModelRegistry
from service.runtime import ModelRuntime

# A version as the repository names its directories (ASCII digits), written exactly: no sign,
# spaces or leading zeros, so each version has one path.
_VERSION = re.compile(r"[1-9][0-9]*")


def parse_version(registry: ModelRegistry, name: str, version: str) -> int:
    if _VERSION.fullmatch(version):
        with contextlib.suppress(ValueError):  # over Python's limit of 4300 digits
            return int(version)
    available = ", ".join(str(v) for v in registry.available_versions(name)) or "none"
    raise NotFound(
        f"model {quoted(name)} has no version {quoted(version)}: versions are whole numbers "
        f">= 1 in ASCII digits, with no sign, spaces or leading zeros; available versions: "
        f"{available}",
        code="version_not_found",
    )


def resolve_model(registry: ModelRegistry, name: str, version: str | None) -> ModelRuntime:
    """The serving version, or the one asked for (a non-serving version is loaded on demand)."""
    serving = registry.get(name)  # unknown model → 404, still loading → 503
    if version is None:
        return serving
    return registry.get(name, parse_version(registry, name, version))
