"""Service settings: read once from the environment (prefix ``ACTLAB_``), documented defaults.

Every field has a description; the README settings table is generated from ``Settings``.
Tests build ``Settings(...)`` directly instead of mutating the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*([1-9][0-9]*)\s*$")


def parse_version_pins(raw: str | dict[str, int] | None) -> dict[str, int]:
    """``"tiny-relu=1, resnet8=3"`` → ``{"tiny-relu": 1, "resnet8": 3}``; raises ValueError."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): int(v) for k, v in raw.items()}
    pins: dict[str, int] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        match = _PIN.match(part)
        if match is None:
            raise ValueError(
                f"model version pin {part.strip()!r} is not '<model name>=<version >= 1>' "
                "(separate pins with commas, e.g. 'tiny-relu=1,resnet8=2')"
            )
        pins[match.group(1)] = int(match.group(2))
    return pins


def parse_origins(raw: str | list[str] | None) -> list[str]:
    """``"https://a.example, https://b.example"`` → list; ``"*"`` allows every origin."""
    if raw is None:
        return []
    if isinstance(raw, list):
        return [str(o).strip() for o in raw if str(o).strip()]
    return [o.strip() for o in raw.split(",") if o.strip()]


class Settings(BaseSettings):
    """Everything the service can be told from outside; env var = ``ACTLAB_`` + upper-case name."""

    model_config = SettingsConfigDict(env_prefix="ACTLAB_", extra="ignore", frozen=True)

    models_dir: Path = Field(
        default=Path("models"),
        description="Model repository: <models_dir>/<name>/<version>/model.onnx (+ .sha256).",
    )
    default_model: str | None = Field(
        default=None,
        description="Model served by POST /v1/classify. Unset: the alphabetically first loaded "
        "model.",
    )
    model_versions: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Version pins, comma-separated '<name>=<version>' (e.g. 'tiny-relu=1'); "
        "unpinned models serve their latest valid version.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="onnxruntime intra-op threads per session; 0 = the container's CPU quota "
        "(cgroup cpu.max, CPU affinity).",
    )
    inter_op_threads: int = Field(
        default=1, ge=1, le=64, description="onnxruntime inter-op threads per session."
    )
    max_body_bytes: int = Field(
        default=20_000_000,
        ge=1,
        description="Largest request body in bytes (enforced while it streams) → 413 beyond.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause while a request body is arriving (before its first byte or "
        "between two pieces), in seconds → 408 beyond, and what was reserved for the body is "
        "freed.",
    )
    max_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="Largest image (width × height, read from the header before decoding) → 422.",
    )
    max_frames: int = Field(
        default=1000,
        ge=1,
        description="Most frames an animated image may declare (only the first is used) → 422.",
    )
    max_images_per_request: int = Field(
        default=32, ge=1, le=1024, description="Most images in one classify request → 422."
    )
    max_concurrency: int = Field(
        default=8,
        ge=1,
        description="Inference requests processed at once; more → 503 with Retry-After.",
    )
    inference_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Deadline for one request's decode + inference, in seconds → 504 past it.",
    )
    version_cache_bytes: int = Field(
        default=200_000_000,
        ge=0,
        description="Model-file bytes of non-serving versions (asked for with ?version=) kept "
        "loaded, least recently used out; the latest one always stays. A session takes about "
        "1.5× its file in memory.",
    )
    inspection_cache_bytes: int = Field(
        default=200_000_000,
        ge=0,
        description="Model-file bytes of inspection sessions (/v1/models/{name}/activations) "
        "kept loaded, least recently used out; the latest one always stays. One takes about "
        "2.5× its file in memory.",
    )
    reload_poll_s: float = Field(
        default=0.0,
        ge=0,
        description="Poll the model repository for new versions every N seconds; 0 = off "
        "(SIGHUP always reloads).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins allowed by CORS ('*' = any); empty = CORS off.",
    )
    api_key: str | None = Field(
        default=None,
        repr=False,
        description="If set, every route except /health/* and the API docs (/docs, /redoc, "
        "/openapi.json) needs 'Authorization: Bearer <key>' or 'X-API-Key: <key>' → 401 "
        "otherwise.",
    )
    batch_max_size: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Dynamic batching: most images one onnxruntime run may group from concurrent "
        "requests; 1 = off. On by default because make bench's interleaved rounds measured more "
        "throughput under concurrent load and no p50 cost at one client (BENCHMARKS.md).",
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="Dynamic batching: how long a batch waits for more requests once it has one; "
        "0 = group only requests already waiting.",
    )
    warmup_runs: int = Field(
        default=2, ge=0, le=100, description="Inference runs on a blank batch per model at load."
    )
    max_body_bytes_in_flight: int = Field(
        default=256_000_000,
        ge=1,
        description="Bytes of request bodies held in memory at once across all requests (an "
        "image request's declared Content-Length counts from the start, a compressed body also "
        "counts its inflated bytes) → 503 with Retry-After beyond; at least twice "
        "ACTLAB_MAX_BODY_BYTES.",
    )

    @field_validator("model_versions", mode="before")
    @classmethod
    def _parse_pins(cls, value: object) -> dict[str, int]:
        if value is None or isinstance(value, str | dict):
            return parse_version_pins(value)
        raise ValueError("model_versions must be a string like 'tiny-relu=1' or a mapping")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> list[str]:
        if value is None or isinstance(value, str | list):
            return parse_origins(value)
        raise ValueError("cors_origins must be a comma-separated string or a list")

    @field_validator("default_model", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _one_request_fits_in_flight(self) -> Settings:
        # One request may hold a compressed body and its inflated copy, each up to the limit.
        if self.max_body_bytes_in_flight < 2 * self.max_body_bytes:
            raise ValueError(
                f"ACTLAB_MAX_BODY_BYTES_IN_FLIGHT ({self.max_body_bytes_in_flight}) must be at "
                f"least twice ACTLAB_MAX_BODY_BYTES ({self.max_body_bytes}), i.e. at least "
                f"{2 * self.max_body_bytes}, so that one request of the largest size (compressed "
                "and inflated) always fits; raise the first or lower the second"
            )
        return self
