"""Kubernetes manifests (deploy/k8s/), parsed: probes, resources, security, autoscaling."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from deploy_helpers import K8S_DIR, app_serves, read_dockerfile

from service.settings import Settings


def load(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((K8S_DIR / name).read_text()) if d]
    assert len(documents) == 1, name
    return dict(documents[0])


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    manifest = load("deployment.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("apps/v1", "Deployment")
    return manifest


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def quantity_cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|)", value)
    assert match is not None, value
    return int(match[1]) * units[match[2]]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load("kustomization.yaml")
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    kinds = {load(name)["kind"] for name in manifests}
    assert kinds >= {"Deployment", "Service", "HorizontalPodAutoscaler"}


def test_probes_hit_health_routes_the_app_serves(container: dict[str, Any]) -> None:
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["port"] == "http"
        paths[probe] = http_get["path"]
        assert app_serves("GET", http_get["path"]), probe
    assert paths == {
        "startupProbe": "/health/ready",
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health/live",
    }
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # time to load and warm


def test_container_port_is_the_images_port(container: dict[str, Any]) -> None:
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    assert read_dockerfile().stage("api").last("EXPOSE").args == "8000"


def test_resources_have_requests_within_limits(container: dict[str, Any]) -> None:
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert 0 < quantity_cpu(requests["cpu"]) <= quantity_cpu(limits["cpu"])
    assert 0 < quantity_bytes(requests["memory"]) <= quantity_bytes(limits["memory"])


def test_pod_runs_non_root_on_a_read_only_root_filesystem(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    image_user = read_dockerfile().stage("api").last("USER").args.split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == image_user
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_environment_names_settings_fields(container: dict[str, Any]) -> None:
    fields = {f"ACTLAB_{name.upper()}" for name in Settings.model_fields}
    names = [entry["name"] for entry in container["env"]]
    assert set(names) <= fields, set(names) - fields
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ACTLAB_MODELS_DIR"] == "/app/models"
    assert int(env["ACTLAB_MAX_BODY_BYTES"]) == Settings().max_body_bytes
    api_key = next(e for e in container["env"] if e["name"] == "ACTLAB_API_KEY")
    assert "value" not in api_key and api_key["valueFrom"]["secretKeyRef"]["optional"] is True


def test_termination_outlasts_pre_stop_and_graceful_shutdown(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    cmd = read_dockerfile().stage("api").last("CMD").exec_form()
    graceful = float(cmd[cmd.index("--timeout-graceful-shutdown") + 1])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert float(pre_stop[1]) + graceful < grace
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_service_and_autoscaler_point_at_the_deployment(deployment: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = load("service.yaml")
    assert service["kind"] == "Service"
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    hpa = load("hpa.yaml")
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100

    pdb = load("pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # drains can proceed


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"])
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    """Strict: an unknown or misspelt field fails, as `kubectl apply --validate=strict` would."""
    from kubernetes_validate import validate

    for version in ("1.30", "1.32"):
        assert validate(load(name), version, strict=True) == version
