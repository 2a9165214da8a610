"""One pyproject.toml: runtime deps = the service's only; extras export and dev; lint is clean."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BIN = Path(sys.executable).parent

# distribution name → the module it installs, where they differ
IMPORT_NAMES = {
    "pillow": "PIL",
    "python-multipart": "multipart",
    "prometheus-client": "prometheus_client",
    "pydantic-settings": "pydantic_settings",
}
# installed with a runtime dependency and part of its public interface
VIA_RUNTIME = {"starlette": "fastapi", "pydantic_core": "pydantic", "python_multipart": "multipart"}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requirements}


def third_party_imports(package: Path) -> set[str]:
    local = {p.name for p in REPO.iterdir() if p.is_dir()} | {"tests"}
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in local}


def test_runtime_dependencies_are_the_services_and_nothing_heavy() -> None:
    runtime = requirement_names(PYPROJECT["project"]["dependencies"])
    assert runtime.isdisjoint({"torch", "onnxscript", "scikit-learn", "matplotlib", "tqdm"})
    modules = {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in runtime}
    imported = third_party_imports(REPO / "service")
    missing = {m for m in imported if m not in modules and VIA_RUNTIME.get(m) not in modules}
    assert missing == set(), f"service imports modules no runtime dependency provides: {missing}"
    assert "torch" not in imported


def test_extras_export_pins_torch_and_dev_has_the_tools() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) >= {"export", "dev"}
    torch = [r for r in extras["export"] if requirement_names([r]) == {"torch"}]
    assert torch == ["torch==2.13.0"]
    assert requirement_names(extras["dev"]) >= {"pytest", "ruff", "mypy", "pyyaml", "httpx"}


def test_ruff_and_mypy_are_configured() -> None:
    tool = PYPROJECT["tool"]
    assert tool["ruff"]["line-length"] and tool["ruff"]["lint"]["select"]
    assert set(tool["mypy"]["packages"]) == {"service", "export"}
    assert "--strict-markers" in tool["pytest"]["ini_options"]["addopts"]
    assert "error" in tool["pytest"]["ini_options"]["filterwarnings"]


def test_ruff_is_clean_on_the_whole_project() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [str(BIN / "ruff"), *args], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout[-4000:]}"


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    result = subprocess.run(
        [str(BIN / "mypy")], cwd=REPO, capture_output=True, text=True, timeout=540
    )
    assert result.returncode == 0, result.stdout[-4000:]
