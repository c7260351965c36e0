"""docker-compose.yml's observability, checked statically (no container engine runs here):
Prometheus scrapes services that exist on the ports they listen on, the Flink services enable
the Prometheus reporter on the port scraped, and Grafana's provisioning is where compose mounts
it from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from featurestream.devstack.flink_home import pyflink_dir
from featurestream.jdk import java_tool
from featurestream.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
FLINK_SERVICES = ("jobmanager", "taskmanager")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    services: dict[str, Any] = load(ROOT / "docker-compose.yml")["services"]
    return services


def flink_properties(service: dict[str, Any]) -> dict[str, Any]:
    """A Flink service's FLINK_PROPERTIES (flat YAML keys, as Flink reads them)."""
    properties: dict[str, Any] = yaml.safe_load(service["environment"]["FLINK_PROPERTIES"])
    return properties


def listening_ports(service: dict[str, Any]) -> set[int]:
    """The container ports a service answers on: its Flink reporter's, the reader's, and its
    published container ports."""
    environment = service.get("environment", {})
    ports = {int(str(p).rsplit(":", 1)[-1])
             for p in (*service.get("ports", []), *service.get("expose", []))}
    if "FLINK_PROPERTIES" in environment:
        reporter_port = flink_properties(service).get("metrics.reporter.prom.port")
        if reporter_port is not None:
            ports.add(int(reporter_port))
    if "FEATURESTREAM_SERVE_PORT" in environment:
        ports.add(int(environment["FEATURESTREAM_SERVE_PORT"]))
    return ports


def mounts(service: dict[str, Any]) -> dict[PurePosixPath, Path]:
    """A service's bind mounts: container path -> the repository path mounted there."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("./"):
            found[PurePosixPath(target)] = ROOT / source
    return found


def scrape_targets(config: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(job, host, port) of every static and DNS-discovered target."""
    targets = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            targets += [(job["job_name"], name, int(dns["port"])) for name in dns["names"]]
    return targets


def test_compose_parses_with_the_observability_services(services: dict[str, Any]) -> None:
    assert {"prometheus", "grafana", "reader", "kafka-exporter", *FLINK_SERVICES} <= services.keys()


def test_prometheus_scrapes_existing_services_on_their_ports(services: dict[str, Any]) -> None:
    prometheus_dir = mounts(services["prometheus"])[PurePosixPath("/etc/prometheus")]
    config = load(prometheus_dir / "prometheus.yml")
    targets = scrape_targets(config)
    assert {host for _, host, _ in targets} == {"reader", "kafka-exporter", *FLINK_SERVICES}
    for job, host, port in targets:
        assert host in services, f"scrape job {job}: no compose service {host}"
        assert port in listening_ports(services[host]), f"scrape job {job}: {host} not on {port}"
    for rules in config["rule_files"]:
        assert (prometheus_dir / rules).is_file(), rules


@pytest.mark.parametrize("name", FLINK_SERVICES)
def test_flink_services_enable_the_prometheus_reporter(services: dict[str, Any],
                                                       name: str) -> None:
    properties = flink_properties(services[name])
    assert properties["metrics.reporter.prom.factory.class"] == REPORTER_FACTORY
    # Flink's default filter rewrites label values to [a-zA-Z0-9:_]: le="0.05" would become
    # le="0_05" and histogram_quantile would drop the freshness buckets.
    assert properties["metrics.reporter.prom.filterLabelValueCharacters"] is False


def entrypoint_options(properties: str) -> list[str]:
    """FLINK_PROPERTIES as the image's docker-entrypoint.sh turns them into options: each line
    without its whitespace, split at the first ':', as ``-Dkey=value``."""
    options = []
    for line in properties.splitlines():
        prop = "".join(line.split())
        if prop:
            key, _, value = prop.partition(":")
            options.append(f"-D{key}={value}")
    return options


def test_the_images_config_writer_keeps_the_label_filter_off(services: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """The entrypoint hands FLINK_PROPERTIES to Flink's config-parser-utils.sh, which writes
    config.yaml. The reporter reads its options as strings, so a YAML boolean ``false`` would
    read as unset (the filter on); the writer must store the string."""
    home = pyflink_dir()
    (tmp_path / "config.yaml").write_text("jobmanager.rpc.address: localhost\n")
    java_bin = str(Path(java_tool("java", "Flink's config writer")).parent)
    env = os.environ | {"FLINK_HOME": str(home), "PATH": f"{java_bin}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(home / "bin" / "config-parser-utils.sh"), str(tmp_path),
                    str(home / "bin"), str(home / "lib"),
                    *entrypoint_options(services["taskmanager"]["environment"]["FLINK_PROPERTIES"])],
                   env=env, check=True, capture_output=True, timeout=120)
    written = load(tmp_path / "config.yaml")
    prom = written["metrics"]["reporter"]["prom"]
    assert prom["filterLabelValueCharacters"] == "false"
    assert prom["factory"]["class"] == REPORTER_FACTORY and int(prom["port"]) == 9249


def test_grafana_provisioning_is_mounted_from_the_repository(services: dict[str, Any]) -> None:
    grafana = mounts(services["grafana"])
    provisioning = grafana[PurePosixPath("/etc/grafana/provisioning")]
    datasources = load(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    assert 9090 in listening_ports(services["prometheus"])
    providers = load(provisioning / "dashboards" / "featurestream.yml")["providers"]
    for provider in providers:
        dashboards = grafana[PurePosixPath(provider["options"]["path"])]
        assert (dashboards / "featurestream.json").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_path = PurePosixPath(home)
    assert (grafana[home_path.parent] / home_path.name).is_file()


def test_featurestream_variables_are_settings(services: dict[str, Any]) -> None:
    """A misspelt FEATURESTREAM_* variable would be ignored silently: each names a setting."""
    fields = {PREFIX + name.upper() for name in Settings.model_fields}
    for name, service in services.items():
        unknown = {v for v in service.get("environment", {})
                   if v.startswith(PREFIX) and v not in fields}
        assert not unknown, f"{name}: {sorted(unknown)} are not settings"
