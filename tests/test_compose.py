"""docker-compose.yaml and the Dockerfile are consistent with the project (no Docker engine here)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import ROOT

AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def _interpolate_defaults(value: str) -> str:
    """Resolve ${VAR:-default} the way compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_are_present(compose):
    services = set(compose["services"])
    assert AIRFLOW_SERVICES | {"postgres", "redis", "minio"} <= services
    for name in AIRFLOW_SERVICES:
        svc = compose["services"][name]
        assert svc["build"] == ".", f"{name} runs the project's image"
    commands = {str(compose["services"][n].get("command")) for n in AIRFLOW_SERVICES}
    assert {"api-server", "scheduler", "dag-processor", "triggerer", "celery worker"} <= commands
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_every_bind_mount_exists(compose):
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
            else:
                assert source in compose.get("volumes", {}), f"{name} uses undeclared volume {source}"
    mounts = {v.split(":")[1] for v in compose["services"]["airflow-worker"]["volumes"]}
    assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= mounts
    assert compose["services"]["airflow-worker"]["environment"]["PYTHONPATH"] == "/opt/airflow"


def test_connection_ids_match_the_dags(compose):
    from checkpoint_ops import hooks

    env = compose["services"]["airflow-worker"]["environment"]
    conns = {k.removeprefix("AIRFLOW_CONN_").lower(): _interpolate_defaults(v)
             for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}
    expected = {hooks.SQLITE_CONN_ID: "sqlite", hooks.POSTGRES_CONN_ID: "postgres",
                hooks.REDIS_CONN_ID: "redis", hooks.ARTIFACTS_CONN_ID: "aws"}
    assert set(expected) <= set(conns)
    for conn_id, conn_type in expected.items():
        assert json.loads(conns[conn_id])["conn_type"] == conn_type, conn_id
    # The artifacts variable goes through the artifacts connection to the bucket minio-init makes.
    url = env["AIRFLOW_VAR_CHECKPOINT_ARTIFACTS_URL"]
    assert url.startswith(f"s3://{hooks.ARTIFACTS_CONN_ID}@checkpoint-artifacts")
    assert "checkpoint-artifacts" in compose["services"]["minio-init"]["entrypoint"]
    # The tiering archive is the same bucket, read the way checkpoint_tiering parses it.
    from checkpoint_ops.locations import ARCHIVE_VARIABLE

    archive = env[f"AIRFLOW_VAR_{ARCHIVE_VARIABLE.upper()}"]
    assert archive.startswith(f"s3://{hooks.ARTIFACTS_CONN_ID}@checkpoint-artifacts/")
    # The stores the DAGs fall back to when their params name none are all provided.
    assert set(hooks.KNOWN_STORE_CONN_IDS) <= set(conns)


def test_checkpoint_database_is_created_with_the_connections_password(compose):
    init = (ROOT / "docker/postgres/init-checkpoints.sh").read_text()
    raw = compose["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_CHECKPOINTS_POSTGRES"]
    pg = json.loads(_interpolate_defaults(raw))
    assert f"CREATE DATABASE {pg['schema']}" in init and f"CREATE ROLE {pg['login']} LOGIN PASSWORD :'pw'" in init
    # Both sides read the one variable, with the same default.
    assert "${CHECKPOINTS_DB_PASSWORD:-checkpoints}" in raw
    assert compose["services"]["postgres"]["environment"]["CHECKPOINTS_DB_PASSWORD"] == "${CHECKPOINTS_DB_PASSWORD:-checkpoints}"
    assert "CHECKPOINTS_DB_PASSWORD" in init


def test_admin_login_is_stable(compose):
    env = compose["services"]["airflow-apiserver"]["environment"]
    path = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    init = " ".join(compose["services"]["airflow-init"]["command"])
    assert path in init and "AIRFLOW_ADMIN_PASSWORD" in init
    assert compose["services"]["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"] == "${AIRFLOW_ADMIN_PASSWORD:-admin}"
    mounts = {v.split(":")[1] for v in compose["services"]["airflow-apiserver"]["volumes"]}
    assert path.rsplit("/", 1)[0] in mounts


def test_dockerfile_installs_the_pinned_requirements():
    dockerfile = (ROOT / "Dockerfile").read_text()
    requirements = (ROOT / "requirements.txt").read_text()
    airflow_pin = re.search(r"^apache-airflow==([\d.]+)$", requirements, re.M).group(1)
    assert re.search(rf"^FROM apache/airflow:{re.escape(airflow_pin)}-python3\.11$", dockerfile, re.M)
    assert "-r /opt/checkpoint-ops/requirements.txt -c /opt/checkpoint-ops/constraints.txt" in dockerfile
    constraints = (ROOT / "constraints.txt").read_text()
    for line in requirements.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("[")[0].split("==")[0], line.split("==")[1]
            assert re.search(rf"^{re.escape(name)}(\[.*\])?=={re.escape(version)}$", constraints, re.M | re.I), line


# --- Metrics: Prometheus, the Pushgateway and Grafana ---------------------------------------------


def _binds(svc: dict) -> list[tuple[str, str, str]]:
    """(host source, container target, mode) of each bind mount."""
    out = []
    for volume in svc.get("volumes", []):
        parts = volume.split(":")
        if parts[0].startswith((".", "/")):
            out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def _host_path(svc: dict, container_path: str):
    """The file in the repo a container path of ``svc`` is, through its bind mounts."""
    for source, target, _ in _binds(svc):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return ROOT / source / container_path[len(target):].lstrip("/")
    raise AssertionError(f"{container_path} is not in a bind mount of {svc.get('image')}")


def _container_ports(svc: dict) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in svc.get("ports", [])}


def test_metrics_services_are_present(compose):
    services = compose["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["pushgateway"]["image"].startswith("prom/pushgateway")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert 9090 in _container_ports(services["prometheus"])
    assert 9091 in _container_ports(services["pushgateway"])
    assert 3000 in _container_ports(services["grafana"])


def test_prometheus_loads_the_repo_config_and_rules(compose):
    prom = compose["services"]["prometheus"]
    command = prom["command"]
    assert "--web.enable-lifecycle" in command
    config_path = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file="))
    config_file = _host_path(prom, config_path)
    assert config_file == ROOT / "observability/prometheus/prometheus.yml" and config_file.is_file()
    assert all(mode == "ro" for source, _, mode in _binds(prom) if source.startswith("./observability"))
    config = yaml.safe_load(config_file.read_text())
    rule_files = [f for pattern in config["rule_files"] for f in config_file.parent.glob(pattern)]
    assert ROOT / "observability/prometheus/rules/checkpoints.rules.yml" in rule_files
    assert not [f for f in rule_files if ".test." in f.name], "unit tests are not rule files"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The Pushgateway is scraped by its service name, keeping the labels the health DAG pushed.
    push_targets = [t for sc in jobs["pushgateway"]["static_configs"] for t in sc["targets"]]
    assert push_targets == [f"pushgateway:{port}" for port in _container_ports(compose["services"]["pushgateway"])]
    assert jobs["pushgateway"]["honor_labels"] is True
    # Persisted: a restart keeps the health DAG's last gauges.
    pushgateway = compose["services"]["pushgateway"]
    store = next(a.split("=", 1)[1] for a in pushgateway["command"] if a.startswith("--persistence.file="))
    assert any(v.split(":")[0] in compose["volumes"] and store.startswith(v.split(":")[1] + "/")
               for v in pushgateway["volumes"])
    assert jobs["checkpoint-app"]["static_configs"][0]["targets"] == ["host.docker.internal:9464"]
    assert "host.docker.internal:host-gateway" in prom.get("extra_hosts", [])
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/prometheus" for v in prom["volumes"])


def test_grafana_is_provisioned_from_the_repo(compose):
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-admin}"
    binds = {target: (source, mode) for source, target, mode in _binds(grafana)}
    # Only the kinds we provision: the image's other provisioning folders (alerting, plugins) stay.
    for kind in ("datasources", "dashboards"):
        assert binds[f"/etc/grafana/provisioning/{kind}"] == (f"./observability/grafana/provisioning/{kind}", "ro")
    provisioning = ROOT / "observability/grafana/provisioning"
    # The dashboard provider's directory is mounted, read-only, and holds the dashboard.
    provider = yaml.safe_load((provisioning / "dashboards/checkpoint-ops.yml").read_text())["providers"][0]
    dashboards_dir = provider["options"]["path"]
    assert binds[dashboards_dir][1] == "ro"
    assert (_host_path(grafana, dashboards_dir) / "checkpoint-ops.json").is_file()
    assert _host_path(grafana, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    # The datasource points at the prometheus service, on the port it listens on.
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"][0]
    host, port = datasource["url"].removeprefix("http://").split(":")
    assert host in compose["services"] and int(port) in _container_ports(compose["services"][host])


def test_health_connections_point_at_the_metrics_services(compose):
    from checkpoint_ops import hooks

    env = compose["services"]["airflow-worker"]["environment"]
    for conn_id, service in ((hooks.PROMETHEUS_CONN_ID, "prometheus"), (hooks.PUSHGATEWAY_CONN_ID, "pushgateway")):
        conn = json.loads(_interpolate_defaults(env[f"AIRFLOW_CONN_{conn_id.upper()}"]))
        assert conn["conn_type"] == "http", conn_id
        host, port = conn["host"].removeprefix("http://").split(":")
        assert host == service and int(port) in _container_ports(compose["services"][service]), conn
