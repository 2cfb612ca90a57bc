"""The deployment files, checked by the tools that can check them offline: Kubernetes schemas
(kubernetes-validate, strict), hadolint, and the compose-spec schema (check-jsonschema; the
workflows' are in test_workflows.py); plus what no schema knows -- that they agree with the app
and each other. deploy/kubernetes is the Helm chart rendered (scripts/helm_chart.py; the chart's
own tests are in test_helm.py)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ollama_openai_bridge.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest Kubernetes still supported by its project, and the newest the validator knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def deployment() -> dict[str, Any]:
    return load(K8S / "deployment.yaml")


def container() -> dict[str, Any]:
    spec = deployment()["spec"]["template"]["spec"]
    (proxy,) = spec["containers"]
    assert isinstance(proxy, dict)
    return proxy


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or pytest.fail(f"{name} missing"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_is_valid(path: Path, version: str) -> None:
    kubernetes_validate.validate(load(path), version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    bad = copy.deepcopy(deployment())
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = load(K8S / "kustomization.yaml")["resources"]
    assert sorted(listed) == [p.name for p in MANIFESTS]
    kinds = {load(p)["kind"] for p in MANIFESTS}
    # No Secret: `kubectl create secret` makes it, so keys stay out of files (docs/DEPLOYMENT.md).
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    secret = {"secretRef": {"name": deployment()["metadata"]["name"]}}
    assert secret in container()["envFrom"]


def test_configmap_holds_only_real_settings() -> None:
    known = {name.upper() for name in Settings.model_fields}
    keys = set(load(K8S / "configmap.yaml")["data"])
    assert keys
    assert keys <= known, keys - known
    env = {e["name"] for e in container().get("env", [])}
    assert env <= known


def test_deployment_matches_the_app() -> None:
    spec = deployment()["spec"]
    assert "replicas" not in spec, "the HPA sets the count; apply must not reset it"
    proxy = container()
    assert proxy["ports"][0]["containerPort"] == Settings.model_fields["proxy_port"].default
    assert proxy["startupProbe"]["httpGet"]["path"] == "/health"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/health"
    # /ready needs the inbound key once PROXY_API_KEYS is set: an httpGet probe cannot send it
    ready = proxy["readinessProbe"]["exec"]["command"]
    assert ready == ["python", "-m", "ollama_openai_bridge.healthcheck", "--ready"]
    # readiness asks the backend within HEALTH_CHECK_TIMEOUT (+ 1 s of the probe's own): the
    # probe must wait longer
    assert (
        proxy["readinessProbe"]["timeoutSeconds"]
        > Settings.model_fields["health_check_timeout"].default + 1
    )
    assert proxy["resources"]["requests"]
    assert proxy["resources"]["limits"]["memory"]
    sc = proxy["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # open streams get SHUTDOWN_GRACE_PERIOD after the preStop pause, inside the pod's grace
    grace = float(load(K8S / "configmap.yaml")["data"]["SHUTDOWN_GRACE_PERIOD"])
    pause = float(proxy["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > grace + pause
    # the image runs as the user the pod expects
    user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert user
    assert int(user.group(1)) == pod["securityContext"]["runAsUser"]


def test_service_hpa_and_pdb_select_the_deployment() -> None:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert load(K8S / "service.yaml")["spec"]["selector"].items() <= labels.items()
    assert load(K8S / "pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = load(K8S / "hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment()["metadata"]["name"])
    assert load(K8S / "hpa.yaml")["spec"]["minReplicas"] >= 2


def test_dockerfile_passes_hadolint() -> None:
    out = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_is_really_checking() -> None:
    out = subprocess.run(
        [tool("hadolint"), "-"],
        input="FROM python\nRUN cd /tmp && apt-get install curl\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "DL3006" in out.stdout  # untagged base image


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2, "multi-stage"
    assert all("${PYTHON_VERSION}-slim" in s for s in stages)
    assert "ARG PYTHON_VERSION=3.12" in text
    final = text.split("\nFROM ", 2)[-1]
    assert "EXPOSE 11434" in final
    assert "HEALTHCHECK" in final
    assert "ollama_openai_bridge.healthcheck" in final
    assert not re.search(r"gcc|build-essential|COPY \. ", final), "no build tools in the image"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, ".dockerignore allows only what the build needs"


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        ("docker-compose.yml", "vendor.compose-spec"),
    ],
)
def test_schema(path: str, schema: str) -> None:
    out = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, str(ROOT / path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_services_and_profiles() -> None:
    compose = load(ROOT / "docker-compose.yml")
    services = compose["services"]
    proxy = services["proxy"]
    assert proxy["restart"] == "unless-stopped"
    assert proxy["healthcheck"]["test"][-1] == "ollama_openai_bridge.healthcheck"
    assert services["redis"]["profiles"] == ["redis"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (ROOT / source).exists(), source
    scrape = load(ROOT / "deploy" / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    assert scrape["metrics_path"] == Settings.model_fields["metrics_path"].default
    assert scrape["static_configs"][0]["targets"] == ["proxy:11434"]


def test_dockerfile_copies_only_what_the_build_context_holds() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copies = re.findall(r"^COPY (?!--from)(.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert copies
    for line in copies:
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
                f"{source} is excluded by .dockerignore"
            )
