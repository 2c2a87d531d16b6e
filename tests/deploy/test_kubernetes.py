"""The Kubernetes manifests of deploy/kubernetes: schema-valid offline (`kubernetes-validate`, strict), and
consistent with the code, which schema validation cannot see: probe paths are routes of the app, the container
port is the one the HTTP address gives, every PREBUILDD_* variable is a real option's, its value parses, the
Service and the PodDisruptionBudget select the server pods, and the scrape annotations name /metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import httpx
import kubernetes_validate
import pytest
import yaml

from prebuildd.api.app import create_app
from prebuildd.runtime.config import ServerConfig, config_options
from prebuildd.server.process import Server
from tests.support.deploy import DEPLOY, command_envvars, parse_command, walk

MANIFESTS = DEPLOY / "kubernetes"
# The oldest Kubernetes the manifests are for (the preStop `sleep` action is on by default from 1.30), and
# the newest the validator knows.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
# Process variables that are not prebuildd options but that the containers may set.
PROCESS_VARIABLES = {"HOME"}


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def _resources() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/kubernetes` applies, plus the example Secrets."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    names = [*kustomization["resources"], "secrets.example.yaml"]
    return [doc for name in names for doc in _documents(name)]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _container(deployment: str) -> dict[str, Any]:
    containers = _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return cast(dict[str, Any], containers[0])


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _get_routes() -> set[str]:
    """The GET routes of the app, from its OpenAPI document (the routes are listed, never called, so the app
    needs no services)."""
    app = create_app(cast(Any, object()))
    return {path for path, operations in app.openapi()["paths"].items() if "get" in operations}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    resources = _resources()
    assert {d["kind"] for d in resources} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Secret",
        "Namespace",
    }
    for doc in resources:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    """What the check above relies on: strict validation refuses an unknown field."""
    server = _one("Deployment", "prebuildd-server")
    probe = server["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(server, KUBERNETES_VERSIONS[0], strict=True)


def test_the_kustomization_lists_files_that_exist_and_names_the_containers_image() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (MANIFESTS / name).is_file(), name
    shipped = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert shipped == set(kustomization["resources"]), "every manifest is applied"
    images = {image["name"] for image in kustomization["images"]}
    for deployment in ("prebuildd-server", "prebuildd-provisioner"):
        assert _container(deployment)["image"] in images, "the operator sets one image for both"
    for doc in _resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace", kustomization["namespace"]) == kustomization["namespace"]


def test_the_server_probes_are_routes_of_the_app_on_the_http_port() -> None:
    container = _container("prebuildd-server")
    routes = _get_routes()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Liveness never touches the database (docs/health.md): an outage must not restart every replica.
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes, f"{probe}: {get['path']} is not a route of the app"
        assert get["port"] in ports, f"{probe}: port {get['port']!r} is not a container port"
    address = _env(container)["PREBUILDD_HTTP_ADDRESS"]["value"]
    config = ServerConfig(http_address=address)
    assert config.host == "0.0.0.0", "the pod must listen beyond its loopback"
    assert ports["http"] == config.port


def test_the_scrape_annotations_name_the_metrics_route_and_port() -> None:
    pod = _one("Deployment", "prebuildd-server")["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] in _get_routes()
    assert annotations["prometheus.io/path"] == "/metrics"
    assert (
        int(annotations["prometheus.io/port"]) == _container("prebuildd-server")["ports"][0]["containerPort"]
    )


def test_every_server_variable_is_an_option_and_its_value_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {o.env: o for o in config_options()}
    env = _env(_container("prebuildd-server"))
    unknown = {name for name in env if name not in options and name not in PROCESS_VARIABLES}
    assert not unknown, f"not options of `prebuildd server`: {sorted(unknown)}"
    # External PostgreSQL, from a Secret that exists (with the key the Deployment reads).
    secret_ref = env["PREBUILDD_POSTGRES_URL"]["valueFrom"]["secretKeyRef"]
    assert secret_ref["key"] in _one("Secret", secret_ref["name"])["stringData"]
    # /metrics needs a token: the server reads it from a Secret that exists (the one Prometheus mounts).
    metrics_ref = env["PREBUILDD_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert metrics_ref["key"] in _one("Secret", metrics_ref["name"])["stringData"]
    # Each replica its own id, stable across container restarts: the pod's name.
    assert env["PREBUILDD_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    for name in [n for n in os.environ if n.startswith("PREBUILDD_")]:
        monkeypatch.delenv(name)
    stand_ins = {
        "PREBUILDD_POSTGRES_URL": "postgresql://prebuildd:secret@db.example.com/prebuildd?sslmode=verify-full",
        "PREBUILDD_REPLICA_ID": "prebuildd-server-5d8f7c9b4-x2k9q",
        "PREBUILDD_METRICS_TOKEN": "a-random-metrics-token",
    }
    for name, item in env.items():
        if name.startswith("PREBUILDD_"):
            monkeypatch.setenv(name, item["value"] if "value" in item else stand_ins[name])
    config = ServerConfig()  # what the container's `prebuildd server` reads from these variables
    assert config.postgres_url is not None
    assert str(config.data_dir) == _mount("prebuildd-server", "data")
    assert config.log_format == "json"
    assert config.metrics_token == "a-random-metrics-token" and not config.metrics_public
    command, _ = parse_command(_container("prebuildd-server")["args"])
    assert command.name == "server"


def _mount(deployment: str, volume: str) -> str:
    mounts = {m["name"]: m["mountPath"] for m in _container(deployment)["volumeMounts"]}
    return mounts[volume]


def test_the_provisioner_runs_a_command_the_cli_accepts_with_its_key_from_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = _container("prebuildd-provisioner")
    env = _env(container)
    key_ref = env["PREBUILDD_PROVISIONER_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref["key"] in _one("Secret", key_ref["name"])["stringData"]
    assert container["command"] == ["prebuildd"]
    monkeypatch.setenv("PREBUILDD_PROVISIONER_KEY", "pbk_example")
    monkeypatch.setenv("PREBUILDD_URL", env["PREBUILDD_URL"]["value"])
    command, params = parse_command(container["args"])
    reads = command_envvars(command)
    unknown = {name for name in env if name not in reads and name not in PROCESS_VARIABLES}
    assert not unknown, f"not read by `prebuildd provisioner start`: {sorted(unknown)}"
    assert str(params["work_dir"]) == _mount("prebuildd-provisioner", "work")
    # The provisioners reach the servers through the Service, on its port.
    service = _one("Service", "prebuildd")
    port = service["spec"]["ports"][0]["port"]
    assert env["PREBUILDD_URL"]["value"] == (
        f"http://{service['metadata']['name']}.prebuildd.svc.cluster.local:{port}"
    )
    server_env = _env(_container("prebuildd-server"))
    assert server_env["PREBUILDD_ACCESS_URL"]["value"] == env["PREBUILDD_URL"]["value"]


def test_the_service_and_the_disruption_budget_select_the_server_pods() -> None:
    server = _one("Deployment", "prebuildd-server")
    pod_labels = server["spec"]["template"]["metadata"]["labels"]
    assert server["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = _one("Service", "prebuildd")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    provisioner_labels = _one("Deployment", "prebuildd-provisioner")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= provisioner_labels.items(), "only servers serve the API"
    budget = _one("PodDisruptionBudget", "prebuildd-server")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] < server["spec"]["replicas"], "a drain can proceed"


def test_containers_run_unprivileged_on_a_read_only_root() -> None:
    for deployment in ("prebuildd-server", "prebuildd-provisioner"):
        spec = _one("Deployment", deployment)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        container = spec["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        # Writable places are volumes: the data (or work) directory and /tmp.
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
        names = {v["name"] for v in spec["volumes"]}
        assert {m["name"] for m in container["volumeMounts"]} <= names


def test_no_secret_value_is_written_into_a_deployment() -> None:
    for doc in _resources():
        if doc["kind"] != "Deployment":
            continue
        for node in walk(doc):
            if isinstance(node, dict) and node.get("name") in {
                "PREBUILDD_POSTGRES_URL",
                "PREBUILDD_PROVISIONER_KEY",
            }:
                assert "value" not in node and "secretKeyRef" in node["valueFrom"]


def test_the_manifests_directory_has_no_container_image_definition() -> None:
    """No image is built in CI, so none is shipped (docs/operations.md says so)."""
    assert not [p for p in DEPLOY.rglob("*") if p.name in {"Dockerfile", "Containerfile"}]
    assert isinstance(MANIFESTS, Path)


async def test_a_server_configured_as_the_manifest_answers_its_probes(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server pod's configuration, run for real: its probes and the scrape path answer on a live server.

    Three stand-ins: the test database for the Secret's URL, a temporary data directory for the volume, and a
    free loopback port for 0.0.0.0:7080 (this machine runs other servers)."""
    container = _container("prebuildd-server")
    for name in [n for n in os.environ if n.startswith("PREBUILDD_")]:
        monkeypatch.delenv(name)
    for name, item in _env(container).items():
        if name.startswith("PREBUILDD_"):
            monkeypatch.setenv(name, item.get("value", "prebuildd-server-5d8f7c9b4-x2k9q"))
    monkeypatch.setenv("PREBUILDD_POSTGRES_URL", database_url)
    monkeypatch.setenv("PREBUILDD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREBUILDD_HTTP_ADDRESS", "127.0.0.1:0")
    server = Server(ServerConfig())
    await server.start()
    try:
        annotations = _one("Deployment", "prebuildd-server")["spec"]["template"]["metadata"]["annotations"]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                path = container[probe]["httpGet"]["path"]
                response = await client.get(path)
                assert response.status_code == 200, f"{probe} {path}: {response.text}"
            ready = (await client.get(container["readinessProbe"]["httpGet"]["path"])).json()
            assert "daemons" not in ready["checks"], "the manifest's servers run no embedded daemons"
            scrape = annotations["prometheus.io/path"]
            assert (await client.get(scrape)).status_code == 401, "the scrape path needs the metrics token"
            # The Secret's value stands in as the token (the container's variable holds the same string).
            token = os.environ["PREBUILDD_METRICS_TOKEN"]
            metrics = await client.get(scrape, headers={"Authorization": f"Bearer {token}"})
            assert metrics.status_code == 200
            assert "prebuildd_reconcile_seconds_since_success" in metrics.text
    finally:
        await server.stop()
