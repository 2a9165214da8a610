"""The Dockerfile's invariants, read without a Docker engine."""

from __future__ import annotations

import re
import shlex

import pytest
from deploy_helpers import (
    DOCKERIGNORE,
    Dockerfile,
    Stage,
    app_serves,
    dockerignore_includes,
    read_dockerfile,
    url_path,
)

from service.settings import Settings

BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|apt-get|apk)\b")


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


def pip_installs(stage: Stage) -> list[list[str]]:
    """The arguments of every ``pip install`` in a stage's RUN lines."""
    found = []
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run.args):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                found.append(words[words.index("install") + 1 :])
    return found


def test_every_stage_builds_on_python_311_slim(dockerfile: Dockerfile) -> None:
    assert {s.name for s in dockerfile.stages} >= {"api", "export"}
    for stage in dockerfile.stages:
        assert dockerfile.resolved_base(stage) == "python:3.11-slim", stage.name


def test_api_image_gets_only_the_service_dependencies(dockerfile: Dockerfile) -> None:
    chain = dockerfile.chain("api")
    installs = [args for stage in chain for args in pip_installs(stage)]
    assert installs == [["."]], "the api image installs the project without extras, once"
    for stage in chain:
        for run in stage.all("RUN"):
            assert "torch" not in run.args, f"{stage.name}: {run.args}"
            assert BUILD_TOOLS.search(run.args) is None, f"{stage.name}: {run.args}"
        sources = [c.positional()[:-1] for c in stage.all("COPY") if "from" not in c.options()]
        copied = {path.rstrip("/") for paths in sources for path in paths}
        assert "export" not in copied, "export/ (torch code) must not enter the api image"
        assert "." not in copied


def test_api_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    api = dockerfile.stage("api")
    user = api.last("USER").args.split(":")[0]
    assert user not in ("", "0", "root")
    assert api.instructions.index(api.last("USER")) > max(
        api.instructions.index(i) for i in api.instructions if i.keyword in ("RUN", "COPY")
    ), "USER comes after every RUN and COPY"


def test_api_cmd_is_exec_form_uvicorn_with_a_graceful_shutdown(dockerfile: Dockerfile) -> None:
    cmd = dockerfile.stage("api").last("CMD").exec_form()
    assert cmd[:3] == ["uvicorn", "service.app:create_app", "--factory"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert float(cmd[cmd.index("--timeout-graceful-shutdown") + 1]) > 0
    assert not dockerfile.stage("api").all("ENTRYPOINT")
    assert dockerfile.stage("api").last("STOPSIGNAL").args == "SIGTERM"


def test_healthcheck_probes_readiness_with_python_not_curl(dockerfile: Dockerfile) -> None:
    healthcheck = dockerfile.stage("api").last("HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert not any(tool in " ".join(command) for tool in ("curl", "wget"))
    urls = re.findall(r"https?://[^'\"]+", command[2])
    assert urls == ["http://127.0.0.1:8000/health/ready"]
    assert app_serves("GET", url_path(urls[0]))
    options = healthcheck.options()
    assert {"interval", "timeout", "start-period", "retries"} <= options.keys()


def test_models_are_baked_in_where_the_service_looks(dockerfile: Dockerfile) -> None:
    api = dockerfile.stage("api")
    copies = [c.positional() for c in api.all("COPY") if "from" not in c.options()]
    assert ["models", "/app/models"] in copies
    chown = next(c for c in api.all("COPY") if c.positional() == ["models", "/app/models"])
    assert chown.options().get("chown", "root:root").split(":")[0] in ("root", "0")
    env = " ".join(e.args for e in api.all("ENV"))
    assert re.search(r"\bACTLAB_MODELS_DIR=/app/models\b", env)
    assert "ACTLAB_MODELS_DIR" in {f"ACTLAB_{name.upper()}" for name in Settings.model_fields}


def test_export_image_has_torch_2_13_cpu_and_the_export_extra(dockerfile: Dockerfile) -> None:
    installs = [args for stage in dockerfile.chain("export") for args in pip_installs(stage)]
    assert [".[export]"] in installs
    torch = [args for args in installs if "torch==2.13.0" in args]
    assert torch and "https://download.pytorch.org/whl/cpu" in torch[0]
    assert all(not a.startswith("torch") or a == "torch==2.13.0" for x in installs for a in x)
    assert dockerfile.stage("export").last("USER").args.split(":")[0] not in ("0", "root")


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_else(
    dockerfile: Dockerfile,
) -> None:
    patterns = DOCKERIGNORE.read_text().splitlines()
    copied = {
        path.rstrip("/")
        for stage in dockerfile.stages
        for copy in stage.all("COPY")
        if "from" not in copy.options()
        for path in copy.positional()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "service", "export", "models"}
    for path in ("pyproject.toml", "README.md", "service/app.py", "export/__main__.py",
                 "models/tiny/1/model.onnx"):  # fmt: skip
        assert dockerignore_includes(patterns, path), path
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "service/__pycache__/a.pyc",
                 "runs/x.log", "models/tiny/1/model.onnx.partial"):  # fmt: skip
        assert not dockerignore_includes(patterns, path), path
