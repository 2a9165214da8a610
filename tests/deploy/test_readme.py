"""README.md stays true: its commands, routes, settings and make targets are the real ones."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import (
    COMPOSE_FILE,
    README,
    REPO,
    app_serves,
    free_port,
    published_models,
    start_replica,
    stop_process,
    url_path,
    wait_for_http,
)
from settings_table import env_name, readme_section, render_table

from service.settings import Settings

MAKEFILE = REPO / "Makefile"
MODELS_DIR = REPO / "models"
DEFAULT_MODEL = "resnet20-relu-digits"


def readme() -> str:
    return README.read_text()


def code_blocks(text: str, language: str = "bash") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(text: str) -> list[str]:
    """Every command line of the README's bash blocks, comments stripped."""
    lines = []
    for block in code_blocks(text):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def curl_commands(text: str) -> list[str]:
    return [c for c in commands(text) if c.startswith("curl ")]


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", MAKEFILE.read_text(), flags=re.MULTILINE))


def make_dry_run(target: str) -> subprocess.CompletedProcess[str]:
    """What ``make <target>`` would run, even when the suite itself runs under make."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"README has no '## {title}' section"
    return match[1]


def test_quickstart_is_exactly_make_run_and_make_test() -> None:
    quickstart = section(readme(), "Quickstart")
    (first, *_) = code_blocks(quickstart)
    assert commands(f"```bash\n{first}```\n") == ["make run", "make test"]


def test_the_flow_picture_names_export_models_and_service() -> None:
    intro = readme().split("## Quickstart")[0]
    (picture,) = re.findall(r"^```\n(.*?)^```", intro, flags=re.MULTILINE | re.DOTALL)
    positions = [picture.index(word) for word in ("export/", "models/", "service/")]
    assert positions == sorted(positions)


def test_make_targets_in_readme_and_ci_exist() -> None:
    targets = makefile_targets()
    assert {"run", "test", "bench", "models", "lint"} <= targets
    mentioned = set(re.findall(r"`make ([\w-]+)`", readme()))
    mentioned |= {c.split()[1] for c in commands(readme()) if c.startswith("make ")}
    assert mentioned >= {"run", "test", "models", "bench", "lint"}
    assert mentioned <= targets
    ci = (REPO / ".ci" / "run").read_text()
    assert re.findall(r"^make .*$", ci, flags=re.MULTILINE) == ["make test"]


def test_make_run_serves_the_quickstart_address_and_prints_the_urls() -> None:
    dry = make_dry_run("run")
    assert dry.returncode == 0, dry.stderr
    assert "http://127.0.0.1:8000" in dry.stdout
    lines = dry.stdout.replace("\\\n", " ").splitlines()
    uvicorn = [line for line in lines if "uvicorn" in line and "echo" not in line]
    assert len(uvicorn) == 1
    words = shlex.split(uvicorn[0])
    # the default model the model repository names, which the image and compose use too
    default = f'ACTLAB_DEFAULT_MODEL="${{ACTLAB_DEFAULT_MODEL:-{DEFAULT_MODEL}}}"'
    assert uvicorn[0].startswith(default + " ")
    assert "service.app:create_app" in words and "--factory" in words
    assert (words[words.index("--host") + 1], words[words.index("--port") + 1]) == (
        "127.0.0.1",
        "8000",
    )
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert any(line.endswith("-e .") for line in installs), "make run installs the service only"


def test_the_default_model_is_the_one_the_repository_names_and_ships() -> None:
    assert f"the default model for `/v1/classify` is `{DEFAULT_MODEL}`" in (
        (MODELS_DIR / "README.md").read_text()
    )
    assert DEFAULT_MODEL in published_models(MODELS_DIR)
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    setting = compose["services"]["api"]["environment"]["ACTLAB_DEFAULT_MODEL"]
    assert setting == f"${{ACTLAB_DEFAULT_MODEL:-{DEFAULT_MODEL}}}"


def test_make_test_installs_everything_and_runs_the_whole_suite() -> None:
    dry = make_dry_run("test")
    assert dry.returncode == 0, dry.stderr
    assert "venv .venv" in dry.stdout
    assert "pip install --quiet -e '.[export,dev]'" in dry.stdout
    pytest_line = dry.stdout.strip().splitlines()[-1]
    assert pytest_line == ".venv/bin/python -m pytest"


def test_settings_table_is_generated_from_settings() -> None:
    table = readme_section(readme())
    assert table == render_table(), (
        "regenerate: .venv/bin/python tests/deploy/settings_table.py --write"
    )
    rows = re.findall(r"^\| `(ACTLAB_\w+)` \| `([^`]*)` \| (.+) \|$", table, flags=re.MULTILINE)
    assert [name for name, _, _ in rows] == [env_name(f) for f in Settings.model_fields]
    defaults = {name: default for name, default, _ in rows}
    assert defaults["ACTLAB_MODELS_DIR"] == "models"
    assert defaults["ACTLAB_MAX_BODY_BYTES"] == "20000000"
    assert defaults["ACTLAB_MAX_PIXELS"] == "40000000"
    assert defaults["ACTLAB_INTRA_OP_THREADS"] == "0"
    assert defaults["ACTLAB_RELOAD_POLL_S"] == "0.0"
    assert all(meaning.strip() for _, _, meaning in rows)


def test_every_curl_example_hits_a_route_the_app_serves() -> None:
    curls = curl_commands(readme())
    assert len(curls) >= 10
    for command in curls:
        words = shlex.split(command.replace("$(", "").replace(")", ""))
        urls = [w for w in words if w.startswith("http://127.0.0.1:8000/")]
        assert len(urls) == 1, command
        method = "POST" if {"-F", "-d", "--data-binary"} & set(words) else "GET"
        assert app_serves(method, url_path(urls[0])), f"{method} {urls[0]}"
    paths = {url_path(re.search(r"http://\S+?(?=[\"'\s]|$)", c)[0]) for c in curls}  # type: ignore[index]
    for required in ("/v1/classify", "/v1/compare", "/v1/activations/mish/eval"):
        assert required in paths
    assert any(re.fullmatch(r"/v1/models/[^/]+/activations", p) for p in paths)
    assert any("base64" in c for c in curls) and any("-F file=@" in c for c in curls)


def test_compose_commands_name_real_services_and_profiles() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for command in commands(readme()):
        if not command.startswith("docker compose"):
            continue
        for profile in re.findall(r"--profile (\S+)", command):
            assert any(profile in s.get("profiles", []) for s in compose["services"].values())
        for service in re.findall(r"--scale (\w+)=", command):
            assert service in compose["services"]
        words = command.split()
        if words[2] == "run":
            assert words[-1] in compose["services"]


def test_scaling_and_extension_sections_exist() -> None:
    text = readme()
    scaling = section(text, "Scaling beyond one machine")
    assert "deploy/k8s/" in scaling and "HorizontalPodAutoscaler" in scaling
    assert "kubectl apply -k deploy/k8s/" in scaling
    section(text, "Open Inference Protocol (v2)")
    assert "BENCHMARKS.md" in section(text, "Benchmarks")


def test_readme_activation_costs_are_the_measured_ones() -> None:
    """The activation-tax numbers the README quotes are those of the committed run."""
    run = json.loads((REPO / "bench" / "results" / "activation_tax.json").read_text())
    rows = {row["activation"]: row for row in run["rows"]}
    text = readme()
    theory = " ".join(section(text, "Seeing the theory").split())
    torch_costs = re.search(
        r"Mish and Softplus as exported by torch cost ([\d.]+)× and ([\d.]+)×", theory
    )
    fast_costs = re.search(
        r"bring Mish to ([\d.]+)× and Softplus to ([\d.]+)× "
        r"\(([\d.]+)× and ([\d.]+)× in single-thread",
        theory,
    )
    within = re.search(r"(\d+) of the (\d+) activations measured", theory)
    assert torch_costs and fast_costs and within, "the 'ReLU is cheap' sentences changed shape"
    assert torch_costs.groups() == tuple(
        f"{rows[name]['torch_ratio']:.1f}" for name in ("mish", "softplus")
    )
    assert fast_costs.groups() == tuple(
        f"{rows[name][key]:.2f}"
        for key in ("fast_ratio", "fast_cpu_ratio")
        for name in ("mish", "softplus")
    )
    assert within.groups() == (str(sum(row["met"] for row in rows.values())), str(len(rows)))
    benchmarks = " ".join(section(text, "Benchmarks").split())
    assert f"against {rows['relu']['torch_ms']:.0f} ms here" in benchmarks


@pytest.mark.slow
def test_export_cli_commands_in_readme_exist() -> None:
    exports = [c for c in commands(readme()) if " -m export " in f"{c} "]
    subcommands: dict[str, set[str]] = {}
    for command in exports:
        words = shlex.split(command)
        assert words[0] == ".venv/bin/python" and words[1:3] == ["-m", "export"], command
        options = {w.split("=")[0] for w in words[4:] if w.startswith("--")} - {"--help"}
        subcommands.setdefault(words[3], set()).update(options)
    assert {"build", "activations", "sweep", "defaults"} <= subcommands.keys()
    for subcommand, options in subcommands.items():
        shown = subprocess.run(
            [sys.executable, "-m", "export", subcommand, "--help"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0, f"{subcommand}: {shown.stderr[-2000:]}"
        for option in options:
            assert option in shown.stdout, f"export {subcommand} has no {option}"


@pytest.mark.slow
@pytest.mark.network
def test_readme_examples_run_against_the_default_models(tmp_path: Path) -> None:
    """The README's own commands, run as written against `models/` (only the address differs)."""
    if not published_models(MODELS_DIR):
        pytest.fail("models/ holds no published model; build the defaults with `make models`")
    text = readme()
    (make_image,) = [c for c in commands(text) if "digit.png" in c and c.startswith(".venv/")]
    subprocess.run(
        [sys.executable, *shlex.split(make_image)[1:]], cwd=tmp_path, check=True, timeout=60
    )
    port = free_port()
    log = tmp_path / "replica.log"
    process = start_replica(sys.executable, port, MODELS_DIR, log, default_model=DEFAULT_MODEL)
    try:
        wait_for_http(
            f"http://127.0.0.1:{port}/health/ready", timeout_s=120, process=process, log_path=log
        )
        checked = 0
        for command in curl_commands(text):
            local = command.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
            local = local.replace("curl ", "curl -sS --fail-with-body ", 1)
            result = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {local}"],
                cwd=tmp_path, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            body = json.loads(result.stdout)
            assert "error" not in body, command
            if url_path(command.split()[1]) == "/v1/classify" and "top_k" not in command:
                # the answer the README shows: the default model reads the 7
                assert body["model"] == DEFAULT_MODEL
                best = body["predictions"][0]["top_k"][0]
                assert (best["label"], best["index"]) == ("7", 7)
                assert best["probability"] > 0.99
                checked += 1
        assert checked == 2  # multipart and raw body
        for block in code_blocks(text, "python"):
            local = block.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
            result = subprocess.run(
                [sys.executable, "-c", local], cwd=tmp_path, capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, f"{block}\n{result.stderr[-2000:]}"
    finally:
        stop_process(process)
