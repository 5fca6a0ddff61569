"""Checks on the deployment files: Kubernetes manifests, docker-compose.yml and the Dockerfile.

Each test reads the files as they are in the repository and checks a property
that a deploy depends on (non-root pods, gRPC probes, settings that exist, the
migrate-before-start ordering, a kustomization that matches the directory),
including running the health-check one-liners against a real gRPC health server.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from server.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "kubernetes"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

PREFIX = "DATAMILL_"
JOB_SERVICE = "datamill.v1.JobService"
KUBERNETES_VERSION = "1.30.0"  # oldest version the manifests target (native gRPC probes are GA since 1.27)

K8S_FILES = sorted(K8S_DIR.glob("*.yaml"))
SETTINGS_FIELDS = frozenset(Settings.model_fields)


def _load_all(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: every document must be a mapping"
    return docs


def _k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in K8S_FILES for doc in _load_all(path)]


def _find(kind: str, name: str) -> dict[str, Any]:
    for _, obj in _k8s_objects():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} named {name} under {K8S_DIR}")


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    """(file, pod spec) of every Deployment and Job."""
    return [
        (f"{file}:{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for file, obj in _k8s_objects()
        if obj["kind"] in {"Deployment", "Job"}
    ]


def _compose() -> dict[str, Any]:
    (doc,) = _load_all(COMPOSE_FILE)
    return doc


def _setting_name(var: str) -> str:
    return var.removeprefix(PREFIX).lower()


def _resolve_interpolation(value: str) -> str:
    """Apply compose's `${VAR:-default}` the way it does with VAR unset; `$$` is a literal `$`."""
    unresolved = re.findall(r"\$\{([A-Za-z0-9_]+)\}", value)
    assert not unresolved, f"compose variables without a default: {unresolved}"
    resolved = re.sub(r"\$\{[A-Za-z0-9_]+:?-([^}]*)\}", r"\1", value)
    return resolved.replace("$$", "$")


# --- parsing and schema -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [*K8S_FILES, COMPOSE_FILE], ids=lambda p: p.name)
def test_yaml_parses(path: Path) -> None:
    _load_all(path)


def test_manifests_validate_against_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (dev extra) bundles the Kubernetes JSON schemas"
    )
    for file, obj in _k8s_objects():
        if obj["kind"] == "Kustomization":
            continue  # not an API object; checked by test_kustomization_lists_every_manifest
        # strict: unknown fields (typos such as `readinesProbe`) fail too.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"]["name"], file


def test_namespaced_objects_use_the_one_namespace() -> None:
    (namespace,) = [obj["metadata"]["name"] for _, obj in _k8s_objects() if obj["kind"] == "Namespace"]
    kustomization = _find_kustomization()
    assert kustomization["namespace"] == namespace
    for file, obj in _k8s_objects():
        if obj["kind"] not in {"Namespace", "Kustomization"}:
            assert obj["metadata"].get("namespace") == namespace, file


# --- pod security -----------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "pod"), _workloads(), ids=[where for where, _ in _workloads()])
def test_workload_containers_run_as_non_root(where: str, pod: dict[str, Any]) -> None:
    pod_ctx = pod.get("securityContext", {})
    containers = pod["containers"] + pod.get("initContainers", [])
    assert containers, where
    for container in containers:
        ctx = {**pod_ctx, **container.get("securityContext", {})}
        label = f"{where}/{container['name']}"
        assert ctx.get("runAsNonRoot") is True, label
        assert ctx.get("runAsUser", 1) != 0, label
        assert ctx.get("runAsGroup", 1) != 0, label
        assert ctx.get("allowPrivilegeEscalation") is False, label
        assert ctx.get("privileged", False) is False, label
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], label
        assert ctx.get("readOnlyRootFilesystem") is True, label
        assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", label
        # A read-only root still needs a writable /tmp (tempfile, pyarrow, minio).
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, label
        assert "resources" in container, label
        assert container["resources"].get("requests"), label
        assert container["resources"].get("limits", {}).get("memory"), label
    assert pod.get("automountServiceAccountToken") is False, where


def test_dockerfile_user_matches_manifests() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "the Dockerfile must switch to an unprivileged USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "use a numeric uid so runAsNonRoot can verify it"
    assert int(uid) != 0
    for where, pod in _workloads():
        assert pod["securityContext"]["runAsUser"] == int(uid), where


# --- the server: gRPC probes, graceful shutdown, Service ---------------------------------------


def _server_container() -> dict[str, Any]:
    pod = _find("Deployment", "datamill-server")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert isinstance(container, dict)
    return container


def _container_port() -> int:
    (port,) = [port for port in _server_container()["ports"] if port["name"] == "grpc"]
    return int(port["containerPort"])


def test_server_probes_are_grpc_probes_on_the_container_port() -> None:
    container = _server_container()
    port = _container_port()
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container[probe_name]
        assert set(probe) & {"httpGet", "tcpSocket", "exec"} == set(), probe_name
        assert probe["grpc"]["port"] == port, probe_name
    # Liveness asks for the overall status, so a PostgreSQL or Redis outage
    # does not restart every replica; readiness asks for the service.
    assert container["livenessProbe"]["grpc"].get("service", "") == ""
    assert container["readinessProbe"]["grpc"]["service"] == JOB_SERVICE


def test_server_listens_where_it_is_probed() -> None:
    config = _find("ConfigMap", "datamill-config")["data"]
    host, _, port = config[f"{PREFIX}LISTEN"].rpartition(":")
    assert host in {"0.0.0.0", "[::]"}, "kubelet probes the pod IP, so the server must not bind loopback"
    assert int(port) == _container_port()


def test_termination_grace_outlasts_the_shutdown_grace() -> None:
    config = _find("ConfigMap", "datamill-config")["data"]
    shutdown_grace = float(config[f"{PREFIX}SHUTDOWN_GRACE_SECONDS"])
    pod = _find("Deployment", "datamill-server")["spec"]["template"]["spec"]
    pre_stop = _server_container().get("lifecycle", {}).get("preStop", {})
    sleep = 0.0
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        sleep = float(command[1])
    elif "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    assert pod["terminationGracePeriodSeconds"] > shutdown_grace + sleep


def test_service_routes_to_the_server_grpc_port() -> None:
    service = _find("Service", "datamill-server")
    deployment = _find("Deployment", "datamill-server")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = (p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert port["targetPort"] in {"grpc", _container_port()}
    assert port["appProtocol"] == "kubernetes.io/h2c"


# --- workers and autoscaling ------------------------------------------------------------------


def test_worker_hpa_targets_the_worker_deployment_on_cpu() -> None:
    hpa = _find("HorizontalPodAutoscaler", "datamill-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    worker = _find(target["kind"], target["name"])
    assert worker["kind"] == "Deployment"
    assert "replicas" not in worker["spec"], "the HPA owns the replica count; apply would reset it"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # CPU utilisation is relative to requests, so every container needs one.
    for container in worker["spec"]["template"]["spec"]["containers"]:
        assert container["resources"]["requests"]["cpu"], container["name"]


def test_worker_has_no_grpc_port_or_probes() -> None:
    pod = _find("Deployment", "datamill-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][0] == "datamill-worker"
    assert [port["name"] for port in container.get("ports", [])] == ["metrics"]
    assert "readinessProbe" not in container
    assert "livenessProbe" not in container or "grpc" not in container["livenessProbe"]


@pytest.mark.parametrize("name", ["datamill-server", "datamill-worker"])
def test_metrics_port_is_where_the_config_says_and_is_scraped(name: str) -> None:
    listen = _find("ConfigMap", "datamill-config")["data"]["DATAMILL_METRICS_LISTEN"]
    port = int(listen.rpartition(":")[2])
    template = _find("Deployment", name)["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(port)


def test_dashboard_port_is_where_the_config_says_and_served_by_the_service() -> None:
    listen = _find("ConfigMap", "datamill-config")["data"]["DATAMILL_DASHBOARD_LISTEN"]
    port = int(listen.rpartition(":")[2])
    (container,) = _find("Deployment", "datamill-server")["spec"]["template"]["spec"]["containers"]
    assert {"name": "dashboard", "containerPort": port, "protocol": "TCP"} in container["ports"]
    service_ports = {p["name"]: p for p in _find("Service", "datamill-server")["spec"]["ports"]}
    assert service_ports["dashboard"]["targetPort"] == "dashboard"


def test_workloads_reference_existing_config_and_secret() -> None:
    config_names = {obj["metadata"]["name"] for _, obj in _k8s_objects() if obj["kind"] == "ConfigMap"}
    secret_names = {obj["metadata"]["name"] for _, obj in _k8s_objects() if obj["kind"] == "Secret"}
    image_names = {image["name"] for image in _find_kustomization().get("images", [])}
    for where, pod in _workloads():
        for container in pod["containers"]:
            refs = container.get("envFrom", [])
            assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= config_names, where
            assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} <= secret_names, where
            assert container["image"] in image_names, f"{where}: image not pinned by kustomization"
    migrate = _find("Job", "datamill-migrate")["spec"]["template"]["spec"]
    assert migrate["containers"][0]["command"] == ["datamill", "migrate"]


# --- settings: every DATAMILL_* name is real, every value validates ---------------------------


def _k8s_env_names() -> set[str]:
    names: set[str] = set()
    for _, obj in _k8s_objects():
        if obj["kind"] == "ConfigMap":
            names |= set(obj.get("data", {}))
        elif obj["kind"] == "Secret":
            names |= set(obj.get("stringData", {})) | set(obj.get("data", {}))
    for _, pod in _workloads():
        for container in pod["containers"]:
            names |= {env["name"] for env in container.get("env", [])}
    return names


def _compose_env_names() -> set[str]:
    names: set[str] = set()
    for service in _compose()["services"].values():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            names |= {item.split("=", 1)[0] for item in environment}
        else:
            names |= set(environment)
    # Interpolated variables too: `${DATAMILL_...}` would read like a setting.
    names |= set(re.findall(r"\$\{(DATAMILL_[A-Z0-9_]+)", COMPOSE_FILE.read_text(encoding="utf-8")))
    names |= set(re.findall(r"\b(DATAMILL_[A-Z0-9_]+)", DOCKERFILE.read_text(encoding="utf-8")))
    return names


@pytest.mark.parametrize(
    "name",
    sorted(n for n in _k8s_env_names() | _compose_env_names() if n.startswith(PREFIX)),
)
def test_datamill_variable_is_a_settings_field(name: str) -> None:
    assert _setting_name(name) in SETTINGS_FIELDS, f"{name} is not a field of server.core.settings.Settings"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings also falls back to the process environment; keep a developer's DATAMILL_* out."""
    for var in list(os.environ):
        if var.startswith(PREFIX):
            monkeypatch.delenv(var)


def _settings_from(env: dict[str, str]) -> Settings:
    # The same string coercion and cross-field checks as loading from DATAMILL_* variables.
    return Settings.model_validate({_setting_name(k): v for k, v in env.items() if k.startswith(PREFIX)})


@pytest.mark.usefixtures("clean_env")
def test_kubernetes_config_and_example_secret_make_valid_settings() -> None:
    env = dict(_find("ConfigMap", "datamill-config")["data"])
    env |= _find("Secret", "datamill-secrets")["stringData"]
    settings = _settings_from(env)
    assert settings.object_store == "s3"


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("service", ["migrate", "server", "worker"])
def test_compose_environment_makes_valid_settings(service: str) -> None:
    environment = _compose()["services"][service]["environment"]
    assert isinstance(environment, dict)
    settings = _settings_from({k: _resolve_interpolation(str(v)) for k, v in environment.items()})
    assert settings.object_store == "s3"
    assert settings.s3_endpoint.split(":")[0] in _compose()["services"]
    if service == "server":
        assert settings.listen.rpartition(":")[0] == "0.0.0.0"


# --- docker compose ---------------------------------------------------------------------------


def test_compose_server_and_worker_wait_for_migrate() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["datamill", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("server", "worker"):
        depends_on = services[name]["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name


def test_compose_backing_services_have_health_checks() -> None:
    services = _compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:7")
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "healthcheck" in services["minio"]
    for name in ("server", "worker"):
        for backing in ("postgres", "redis", "minio"):
            assert services[name]["depends_on"][backing]["condition"] == "service_healthy", name


def test_compose_worker_scales() -> None:
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed container_name breaks --scale"
    assert "ports" not in worker, "a published host port breaks --scale"
    assert worker["deploy"]["replicas"] == 2
    assert worker["command"][0] == "datamill-worker"
    # The image's HEALTHCHECK probes the server's gRPC port, which a worker lacks.
    assert worker["healthcheck"] == {"disable": True}


def test_compose_server_publishes_the_grpc_port() -> None:
    server = _compose()["services"]["server"]
    published = [_resolve_interpolation(p) for p in server["ports"]]
    assert any(p.endswith(":50051") for p in published), published


def test_compose_credentials_are_dev_only_defaults() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "must be overridden" in text.lower() or "override them" in text.lower()
    for match in re.finditer(r"\$\{((?:POSTGRES|MINIO_ROOT)_PASSWORD):-([^}]*)\}", text):
        assert "dev" in match[2], f"{match[1]} default must be obviously dev-only"


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_docker_compose_config_is_valid() -> None:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode:
        pytest.skip("docker compose plugin not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# --- kustomization ----------------------------------------------------------------------------


def _find_kustomization() -> dict[str, Any]:
    (doc,) = _load_all(K8S_DIR / "kustomization.yaml")
    assert doc["kind"] == "Kustomization"
    return doc


def test_kustomization_lists_every_manifest() -> None:
    listed = _find_kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    manifests = {
        path.name for path in K8S_FILES if path.name != "kustomization.yaml" and not path.name.endswith(".example.yaml")
    }
    assert set(listed) == manifests
    # Applying the example Secret would overwrite the real one with placeholders.
    assert not [name for name in listed if name.endswith(".example.yaml")]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc}
    assert {"Namespace", "ConfigMap", "Job", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds


# --- the health-check one-liners, run against a real health server ----------------------------


def _compose_healthcheck_code() -> str:
    test = _compose()["services"]["server"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    return str(test[3])


def _dockerfile_healthcheck_code() -> str:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, flags=re.MULTILINE)
    assert match, "the Dockerfile needs an exec-form HEALTHCHECK"
    command = yaml.safe_load(match[1])  # a JSON array is YAML too
    assert command[:2] == ["python", "-c"]
    return str(command[2])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None).wait()


def _run_check(code: str, port: int) -> int:
    code = code.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
    env = {"DATAMILL_LISTEN": f"0.0.0.0:{port}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=30, check=False
    ).returncode


@pytest.mark.parametrize("source", ["compose", "dockerfile"])
def test_health_check_exits_zero_only_when_serving(
    source: str, health_server: tuple[int, health.HealthServicer]
) -> None:
    code = _compose_healthcheck_code() if source == "compose" else _dockerfile_healthcheck_code()
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # Registered but NOT_SERVING (as while PostgreSQL is down, or after SIGTERM).
    servicer.set(JOB_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert _run_check(code, port) != 0
    servicer.set(JOB_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert _run_check(code, port) == 0
    # Nothing listening.
    assert _run_check(code, _free_port()) != 0
