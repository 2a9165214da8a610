"""The load-balancer rules (deploy/nginx/), read as nginx reads them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from deploy_helpers import (
    NGINX_COMPOSE,
    NGINX_RULES,
    Directive,
    find_directives,
    nginx_seconds,
    nginx_size_bytes,
    parse_nginx,
    read_dockerfile,
    render_local_lb_config,
    uvicorn_args_from_dockerfile,
)
from nginx_fixtures import require_nginx

from service.settings import Settings


@pytest.fixture(scope="module")
def rules() -> list[Directive]:
    return parse_nginx(NGINX_RULES.read_text())


@pytest.fixture(scope="module")
def site() -> list[Directive]:
    return parse_nginx(NGINX_COMPOSE.read_text())


def only(directives: list[Directive], name: str) -> Directive:
    found = find_directives(directives, name)
    assert len(found) == 1, f"expected exactly one {name!r}, found {len(found)}"
    return found[0]


def test_body_limit_is_the_service_limit(rules: list[Directive]) -> None:
    limit = only(rules, "client_max_body_size").args
    assert len(limit) == 1
    assert nginx_size_bytes(limit[0]) == Settings().max_body_bytes == 20_000_000


def test_read_timeout_outlasts_the_service_deadline(rules: list[Directive]) -> None:
    read = nginx_seconds(only(rules, "proxy_read_timeout").args[0])
    connect = nginx_seconds(only(rules, "proxy_connect_timeout").args[0])
    assert read > Settings().inference_timeout_s
    assert connect <= 5
    total = nginx_seconds(only(rules, "proxy_next_upstream_timeout").args[0])
    assert total >= read


def test_retries_are_safe_and_bounded(rules: list[Directive]) -> None:
    conditions = set(only(rules, "proxy_next_upstream").args)
    # a refused/dropped connection and a not-ready/overloaded 503 are retried, POST included
    assert {"error", "timeout", "http_503", "non_idempotent"} <= conditions
    # work that was attempted and failed is not repeated on another replica
    assert conditions.isdisjoint({"http_500", "http_504", "http_403", "http_404", "http_429"})
    tries = int(only(rules, "proxy_next_upstream_tries").args[0])
    assert 2 <= tries <= 3
    assert only(rules, "proxy_request_buffering").args == ["on"]


def test_retry_after_and_upstream_errors_pass_through(rules: list[Directive]) -> None:
    hidden = [d.args[0].lower() for d in find_directives(rules, "proxy_hide_header")]
    assert "retry-after" not in hidden
    assert only(rules, "proxy_intercept_errors").args == ["off"]


def test_upstream_keepalive_is_configured_on_both_sides(
    rules: list[Directive], site: list[Directive]
) -> None:
    assert only(rules, "proxy_http_version").args == ["1.1"]
    headers = {d.args[0].lower(): d.args[1] for d in find_directives(rules, "proxy_set_header")}
    assert headers["connection"] == ""
    upstream = only(site, "upstream")
    assert upstream.args == ["actlab_api"]
    assert int(upstream.find("keepalive")[0].args[0]) >= 8
    nginx_idle = nginx_seconds(upstream.find("keepalive_timeout")[0].args[0])
    # uvicorn must not close an idle connection nginx is about to reuse
    uvicorn_args = uvicorn_args_from_dockerfile("127.0.0.1", 8000)
    uvicorn_idle = float(uvicorn_args[uvicorn_args.index("--timeout-keep-alive") + 1])
    assert uvicorn_idle > nginx_idle


def test_every_request_goes_to_the_upstream(rules: list[Directive]) -> None:
    locations = {tuple(d.args): d for d in find_directives(rules, "location")}
    assert locations[("/",)].find("proxy_pass")[0].args == ["http://actlab_api"]


def test_compose_site_resolves_scaled_replicas_through_docker_dns(site: list[Directive]) -> None:
    upstream = only(site, "upstream")
    servers = upstream.find("server")
    assert len(servers) == 1
    assert servers[0].args[0] == "api:8000"
    assert "resolve" in servers[0].args
    assert upstream.find("zone"), "'resolve' needs a shared memory zone"
    assert upstream.find("resolver")[0].args[0] == "127.0.0.11"
    server = next(d for d in site if d.name == "server")
    assert [d.args for d in server.find("include")] == [["/etc/nginx/actlab/actlab.conf"]]
    assert [d.args for d in server.find("listen")] == [["8080"]]


def test_api_listens_where_the_upstream_points() -> None:
    api = read_dockerfile().stage("api")
    assert api.last("EXPOSE").args == "8000"
    cmd = api.last("CMD").exec_form()
    assert cmd[cmd.index("--port") + 1] == "8000"


def test_rendered_local_config_is_valid_nginx(tmp_path: Path) -> None:
    nginx = require_nginx()
    conf = render_local_lb_config(tmp_path, [18001, 18002, 18003], 18080)
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    site = parse_nginx((tmp_path / "site.conf").read_text())
    assert [d.args[0] for d in only(site, "upstream").find("server")] == [
        "127.0.0.1:18001",
        "127.0.0.1:18002",
        "127.0.0.1:18003",
    ]
