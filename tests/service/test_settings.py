"""Settings from the environment: names, documented defaults, parsing, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, parse_version_pins

ENV_NAMES = {
    "ACTLAB_MODELS_DIR",
    "ACTLAB_DEFAULT_MODEL",
    "ACTLAB_MODEL_VERSIONS",
    "ACTLAB_INTRA_OP_THREADS",
    "ACTLAB_MAX_BODY_BYTES",
    "ACTLAB_MAX_PIXELS",
    "ACTLAB_MAX_CONCURRENCY",
    "ACTLAB_INFERENCE_TIMEOUT_S",
    "ACTLAB_RELOAD_POLL_S",
    "ACTLAB_CORS_ORIGINS",
    "ACTLAB_API_KEY",
}


def test_every_documented_name_exists_with_a_description() -> None:
    names = {"ACTLAB_" + name.upper() for name in Settings.model_fields}
    assert names >= ENV_NAMES
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.models_dir == Path("models")
    assert settings.default_model is None
    assert settings.model_versions == {}
    assert settings.intra_op_threads == 0
    assert settings.max_body_bytes == 20_000_000
    assert settings.max_pixels == 40_000_000
    assert settings.reload_poll_s == 0
    assert settings.cors_origins == []
    assert settings.api_key is None


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "ACTLAB_MODELS_DIR": str(tmp_path),
        "ACTLAB_DEFAULT_MODEL": "tiny-relu",
        "ACTLAB_MODEL_VERSIONS": "tiny-relu=1, resnet8=3",
        "ACTLAB_INTRA_OP_THREADS": "2",
        "ACTLAB_MAX_BODY_BYTES": "1000",
        "ACTLAB_MAX_PIXELS": "500",
        "ACTLAB_MAX_CONCURRENCY": "3",
        "ACTLAB_INFERENCE_TIMEOUT_S": "2.5",
        "ACTLAB_RELOAD_POLL_S": "10",
        "ACTLAB_CORS_ORIGINS": "https://a.example, https://b.example",
        "ACTLAB_API_KEY": "s3cret",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.models_dir == tmp_path
    assert settings.default_model == "tiny-relu"
    assert settings.model_versions == {"tiny-relu": 1, "resnet8": 3}
    assert settings.intra_op_threads == 2
    assert (settings.max_body_bytes, settings.max_pixels, settings.max_concurrency) == (
        1000,
        500,
        3,
    )
    assert settings.inference_timeout_s == 2.5
    assert settings.reload_poll_s == 10
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.api_key == "s3cret"
    assert "s3cret" not in repr(settings)


def test_empty_strings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTLAB_API_KEY", "")
    monkeypatch.setenv("ACTLAB_DEFAULT_MODEL", " ")
    monkeypatch.setenv("ACTLAB_MODEL_VERSIONS", "")
    settings = Settings()
    assert (settings.api_key, settings.default_model, settings.model_versions) == (None, None, {})


@pytest.mark.parametrize("pins", ["tiny-relu", "tiny-relu=0", "tiny-relu=x", "=3", "a=1=2"])
def test_bad_version_pins_say_what_is_allowed(pins: str) -> None:
    with pytest.raises(ValueError, match="<model name>=<version >= 1>"):
        parse_version_pins(pins)
    with pytest.raises(ValidationError):
        Settings(model_versions=pins)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_body_bytes", 0),
        ("max_concurrency", 0),
        ("inference_timeout_s", 0),
        ("intra_op_threads", -1),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})
