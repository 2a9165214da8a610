"""docker-compose.yml, parsed with pyyaml: the invariants `docker compose up` relies on."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    COMPOSE_FILE,
    NGINX_COMPOSE,
    NGINX_RULES,
    REPO,
    app_serves,
    find_directives,
    nginx_seconds,
    parse_nginx,
    read_dockerfile,
    url_path,
)

from service.settings import Settings

_DEFAULT = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def with_defaults(value: str) -> str:
    """What compose substitutes when none of the variables is set: their ``:-`` defaults."""
    return _DEFAULT.sub(lambda m: m[2] or "", value)


def duration_s(value: str) -> float:
    return sum(nginx_seconds(part) for part in re.findall(r"\d+(?:ms|s|m|h)", value))


def bind_mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """target → long-syntax volume entry (every volume here is long syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, dict), f"use the long volume syntax: {volume!r}"
        assert volume["type"] == "bind"
        mounts[volume["target"]] = volume
    return mounts


def test_three_services_and_only_export_is_behind_a_profile(services: dict[str, Any]) -> None:
    assert set(services) == {"api", "lb", "export"}
    assert services["export"]["profiles"] == ["export"]
    assert "profiles" not in services["api"]
    assert "profiles" not in services["lb"]  # `docker compose up --scale api=3` starts it


def test_api_builds_the_api_target_and_can_be_scaled(services: dict[str, Any]) -> None:
    api = services["api"]
    assert api["build"] == {"context": ".", "target": "api"}
    assert "container_name" not in api, "a fixed container name cannot be scaled"
    (port,) = api["ports"]
    host, _, container = port.rpartition(":")
    assert container == "8000"
    first, _, last = host.rpartition(":")[2].partition("-")
    assert int(first) == 8000 and int(last) - int(first) + 1 >= 3, "one host port per replica"


def test_api_healthcheck_is_the_images_readiness_probe(services: dict[str, Any]) -> None:
    healthcheck = services["api"]["healthcheck"]
    test = healthcheck["test"]
    assert test[0] == "CMD"
    image_check = read_dockerfile().stage("api").last("HEALTHCHECK").exec_form()
    assert test[1:] == image_check
    (url,) = re.findall(r"https?://[^'\"]+", test[3])
    assert app_serves("GET", url_path(url))
    assert url_path(url) == "/health/ready"
    for key in ("interval", "timeout", "start_period", "retries"):
        assert key in healthcheck


def test_api_root_filesystem_is_read_only_with_a_tmpfs(services: dict[str, Any]) -> None:
    api = services["api"]
    assert api["read_only"] is True
    assert any(entry.split(":")[0] == "/tmp" for entry in api["tmpfs"])
    assert api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"]
    assert api["user"].split(":")[0] not in ("0", "root")


def test_api_models_are_mounted_read_only_where_the_service_looks(
    services: dict[str, Any],
) -> None:
    api = services["api"]
    models_dir = api["environment"]["ACTLAB_MODELS_DIR"]
    mount = bind_mounts(api)[models_dir]
    assert mount["source"] == "./models"
    assert mount["read_only"] is True


def test_api_has_cpu_and_memory_limits_and_restarts(services: dict[str, Any]) -> None:
    for name in ("api", "lb", "export"):
        limits = services[name]["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0, name
        assert re.fullmatch(r"\d+[mg]", limits["memory"]), name
    assert services["api"]["restart"] in ("always", "unless-stopped", "on-failure")
    assert services["lb"]["restart"] in ("always", "unless-stopped", "on-failure")


def test_graceful_shutdown_ends_before_the_stop_grace_period(services: dict[str, Any]) -> None:
    cmd = read_dockerfile().stage("api").last("CMD").exec_form()
    graceful = float(cmd[cmd.index("--timeout-graceful-shutdown") + 1])
    grace = duration_s(services["api"]["stop_grace_period"])
    assert graceful + 5 <= grace
    assert services["api"].get("stop_signal", "SIGTERM") == "SIGTERM"


def test_api_environment_is_valid_settings(services: dict[str, Any]) -> None:
    environment = services["api"]["environment"]
    fields = {f"ACTLAB_{name.upper()}": name for name in Settings.model_fields}
    # Every setting is listed, so each one takes the shell's value as well as .env's.
    assert set(environment) == set(fields), set(environment) ^ set(fields)
    values = {fields[key]: with_defaults(str(value)) for key, value in environment.items()}
    settings = Settings.model_validate(values)
    differ = {k for k in Settings.model_fields if getattr(settings, k) != getattr(Settings(), k)}
    assert differ == {"models_dir", "default_model", "reload_poll_s"}  # what README says
    assert services["api"]["env_file"] == [{"path": ".env", "required": False}]
    assert settings.max_body_bytes == Settings().max_body_bytes
    assert settings.api_key is None  # empty = unset
    image_env = " ".join(e.args for e in read_dockerfile().stage("api").all("ENV"))
    assert f"ACTLAB_DEFAULT_MODEL={settings.default_model}" in image_env.split()


def test_lb_serves_the_shared_rules_in_front_of_healthy_replicas(
    services: dict[str, Any],
) -> None:
    lb = services["lb"]
    image, _, tag = lb["image"].partition(":")
    assert image == "nginx"
    match = re.match(r"(\d+)\.(\d+)", tag)
    assert match is not None, lb["image"]
    version = (int(match[1]), int(match[2]))
    assert version >= (1, 28), "the upstream 'resolve' parameter needs nginx >= 1.27.3"
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    mounts = bind_mounts(lb)
    assert mounts["/etc/nginx/conf.d/default.conf"]["source"] == "./deploy/nginx/compose.conf"
    assert mounts["/etc/nginx/actlab/actlab.conf"]["source"] == "./deploy/nginx/actlab.conf"
    assert all(m["read_only"] is True for m in mounts.values())
    for mount in mounts.values():
        assert (REPO / mount["source"]).is_file()
    assert (REPO / "deploy/nginx/compose.conf") == NGINX_COMPOSE
    assert (REPO / "deploy/nginx/actlab.conf") == NGINX_RULES
    included = [
        d.args[0] for d in find_directives(parse_nginx(NGINX_COMPOSE.read_text()), "include")
    ]
    assert included == ["/etc/nginx/actlab/actlab.conf"]
    listen = find_directives(parse_nginx(NGINX_COMPOSE.read_text()), "listen")[0].args[0]
    assert any(port.endswith(f":{listen}") for port in lb["ports"])
    assert lb["read_only"] is True
    assert {entry.split(":")[0] for entry in lb["tmpfs"]} >= {"/var/cache/nginx", "/var/run"}
    health = " ".join(lb["healthcheck"]["test"])
    assert "/lb/health" in health


def _mebibytes(size: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([kmg])", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"k": 1 / 1024, "m": 1, "g": 1024}[unit]


def test_lb_has_room_to_buffer_parallel_maximum_size_uploads(services: dict[str, Any]) -> None:
    """nginx writes every body over client_body_buffer_size to /var/cache/nginx (a tmpfs): 64 MB
    held three 20 MB uploads, and the fourth got a 500. The tmpfs counts against the memory
    limit, so that must leave nginx its own room too."""
    lb = services["lb"]
    sizes = dict(entry.split(":size=") for entry in lb["tmpfs"])
    cache_mb = _mebibytes(sizes["/var/cache/nginx"])
    rules = parse_nginx(NGINX_RULES.read_text())
    body_mb = int(find_directives(rules, "client_max_body_size")[0].args[0]) / 2**20
    assert cache_mb >= 16 * body_mb
    assert _mebibytes(lb["deploy"]["resources"]["limits"]["memory"]) >= cache_mb + 128


def test_export_writes_models_into_the_project(services: dict[str, Any]) -> None:
    export = services["export"]
    assert export["build"] == {"context": ".", "target": "export"}
    models_dir = export["environment"]["ACTLAB_MODELS_DIR"]
    mount = bind_mounts(export)[models_dir]
    assert mount["source"] == "./models"
    assert mount.get("read_only", False) is False
    assert export["command"][:3] == ["python", "-m", "export"]
    assert export["restart"] == "no"
    assert export["user"].split(":")[0] not in ("0", "root")
