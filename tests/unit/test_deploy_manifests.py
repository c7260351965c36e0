"""The production stack's files, checked statically (no container engine or Kubernetes runs
here): docker-compose.yml validates against the Compose specification's schema and its
services agree with each other and with the settings module; the Dockerfile's pins are
pyproject.toml's; the Kubernetes manifests (the Flink Kubernetes Operator's FlinkDeployment for
each job, the reader) name what exists: the image, the Flink version, the job modules, the
settings, the volumes."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from featurestream.devstack.flink_home import pyflink_dir
from featurestream.jobs import JOB_NAMES
from featurestream.serving.redis_cluster_client import check_cluster_settings
from featurestream.settings import PREFIX, SECRETS_FILE, Settings

ROOT = Path(__file__).resolve().parents[2]
# compose-spec/compose-spec schema/compose-spec.json at 170098ba07d9 (2026-06-23), vendored.
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
KUBERNETES = ROOT / "deploy" / "kubernetes"
JOB_MODULES = {"features": "featurestream.jobs.features.job",
               "scoring": "featurestream.jobs.scoring.job"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def pins() -> dict[str, str]:
    """pyproject.toml's ``name==version`` dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(d.split("==", 1) for d in project["dependencies"] if "==" in d)


CLUSTER_ENV = ROOT / "deploy" / "compose" / "redis-cluster.env"
_VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")


def variables(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of a compose ``--env-file``."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def environment(service: dict[str, Any], given: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as compose resolves it: ``${NAME:-default}`` takes ``given``'s
    value (the variables of an ``--env-file``), else the default."""
    given = given or {}
    return {k: _VARIABLE.sub(lambda m: given.get(m[1], m[2]), str(v))
            for k, v in service.get("environment", {}).items()}


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            yield path.name, document


def test_compose_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text())).validate(compose)
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", [])
        assert set(depends) <= services.keys(), f"{name} depends on a service that is not here"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"


def test_the_stack_has_what_production_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "schema-registry", "topics", "redis", "jobmanager", "taskmanager", "reader",
            "setup"} <= services.keys()
    assert services["taskmanager"]["deploy"]["replicas"] == 2
    kraft = environment(services["kafka"])
    assert kraft["KAFKA_PROCESS_ROLES"] == "broker,controller", "Kafka in KRaft mode"


@pytest.mark.parametrize("env_file", [None, CLUSTER_ENV], ids=["redis", "redis-cluster"])
def test_every_featurestream_variable_validates_as_settings(
        compose: dict[str, Any], env_file: Path | None) -> None:
    """Each service's FEATURESTREAM_* values are accepted by the settings module (a typo in a
    value, not only in a name, fails here rather than at start-up in a container), as they
    are by default and with the Redis Cluster's env file."""
    given = variables(env_file) if env_file else {}
    for service in compose["services"].values():
        env = {k: v for k, v in environment(service, given).items() if k.startswith(PREFIX)}
        if env:
            assert "${" not in "".join(env.values()), env
            Settings.from_env(env)


def test_the_redis_cluster_profile_forms_a_cluster_the_services_point_at(
        compose: dict[str, Any]) -> None:
    """3 masters with a replica each, formed from the addresses the nodes have; with the env
    file every service that talks to Redis names one of them, in cluster mode."""
    services = compose["services"]
    nodes = {name: service for name, service in services.items()
             if service.get("profiles") == ["redis-cluster"] and "networks" in service}
    assert len(nodes) == 6
    addresses = {f"{n['networks']['default']['ipv4_address']}:6379" for n in nodes.values()}
    for node in nodes.values():
        command = node["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
    init = services["redis-cluster-init"]
    create = init["command"][0].split("--cluster create", 1)[1].split()
    assert set(create[:6]) == addresses and create[6:9] == ["--cluster-replicas", "1",
                                                            "--cluster-yes"]
    assert set(init["depends_on"]) == nodes.keys()
    assert services["setup"]["depends_on"]["redis-cluster-init"] == {
        "condition": "service_completed_successfully", "required": False}
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert all(a.startswith(subnet.rsplit(".", 1)[0] + ".") for a in addresses)
    given = variables(CLUSTER_ENV)
    talkers = [name for name, service in services.items()
               if PREFIX + "REDIS_URL" in environment(service)]
    assert {"jobmanager", "taskmanager", "reader", "setup"} <= set(talkers)
    for name in talkers:
        env = environment(services[name], given)
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(PREFIX)})
        assert settings.redis_cluster, name
        if name == "reader":
            check_cluster_settings(settings)  # what the reader refuses on a cluster at start-up
        assert urlsplit(env[PREFIX + "REDIS_URL"]).netloc in addresses, name


def test_the_services_addresses_point_at_services_that_listen_there(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka_listeners = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    registry = environment(services["schema-registry"])
    for name, service in services.items():
        env = environment(service)
        if f"{PREFIX}KAFKA_BOOTSTRAP" in env:
            assert f"//{env[PREFIX + 'KAFKA_BOOTSTRAP']}" in kafka_listeners, name
        if f"{PREFIX}REDIS_URL" in env:
            url = urlsplit(env[PREFIX + "REDIS_URL"])
            assert url.hostname in services and (url.port or 6379) == 6379, name
        if f"{PREFIX}SCHEMA_REGISTRY_URL" in env:
            url = urlsplit(env[PREFIX + "SCHEMA_REGISTRY_URL"])
            assert url.hostname == registry["SCHEMA_REGISTRY_HOST_NAME"], name
            assert registry["SCHEMA_REGISTRY_LISTENERS"].endswith(f":{url.port}"), name
        if f"{PREFIX}FLINK_REST_URL" in env:
            url = urlsplit(env[PREFIX + "FLINK_REST_URL"])
            assert url.hostname == "jobmanager" and f"{url.port}:{url.port}" in \
                services["jobmanager"]["ports"], name


def test_every_process_that_reads_models_mounts_the_one_registry(compose: dict[str, Any]) -> None:
    """train (setup) writes it, the scoring job's TaskManagers and the reader read it."""
    for name in ("jobmanager", "taskmanager", "reader", "setup"):
        service = compose["services"][name]
        models_dir = environment(service)[PREFIX + "MODELS_DIR"]
        assert any(str(v).split(":")[:2] == ["models", models_dir] for v in service["volumes"]), \
            f"{name} does not mount the models volume at {models_dir}"


def test_the_jobs_checkpoint_on_the_volume_every_flink_process_mounts(
        compose: dict[str, Any]) -> None:
    """The submitting process's FEATURESTREAM_CHECKPOINT_DIR is the jobs' (it overrides the
    cluster's): it must be the shared volume, or a task restored on the other TaskManager
    finds no state."""
    services = compose["services"]
    directory = urlsplit(environment(services["setup"])[PREFIX + "CHECKPOINT_DIR"]).path
    for name in ("jobmanager", "taskmanager"):
        assert any(str(v).split(":")[:2] == ["checkpoints", directory]
                   for v in services[name]["volumes"]), f"{name} does not mount {directory}"


def test_the_setup_script_is_valid_shell_and_submits_both_jobs(compose: dict[str, Any]) -> None:
    script = ROOT / "deploy" / "compose" / "setup.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert "for job in features scoring" in text and set(JOB_NAMES) == {"features", "scoring"}
    assert compose["services"]["setup"]["entrypoint"][-1] == "/opt/featurestream/deploy/setup.sh"


def test_the_dockerfile_pins_are_pyprojects(dockerfile: str) -> None:
    flink = re.search(r"^FROM flink:(\d+\.\d+\.\d+)-scala_[\d.]+-java(\d+)", dockerfile, re.M)
    python = re.search(r"^FROM python:(\d+\.\d+)-", dockerfile, re.M)
    assert flink and python
    assert flink.group(1) == pins()["apache-flink"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={python.group(1)}" in requires
    assert "pip install --no-cache-dir ." in dockerfile, "the image installs pyproject's pins"


def test_the_dockerfile_copies_every_package_and_the_pinned_connector_jars(dockerfile: str) -> None:
    setup = (ROOT / "setup.py").read_text()
    folders = set(re.findall(r'"featurestream[\w.]*": "(\w+)"', setup))
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.M))
    assert folders and folders <= copied, f"not in the image: {sorted(folders - copied)}"
    jars = re.findall(r'"\$site/lib/([\w.-]+\.jar)"', dockerfile)
    assert jars and all((pyflink_dir() / "lib" / jar).is_file() for jar in jars), \
        "the jars the image copies come from the pinned flink libraries package"


def test_kubernetes_flink_deployments_run_both_jobs_from_the_image(
        compose: dict[str, Any], dockerfile: str) -> None:
    deployments = {d["spec"]["job"]["args"][-1]: d for _, d in manifests()
                   if d["kind"] == "FlinkDeployment"}
    assert set(deployments) == set(JOB_MODULES.values())
    version = pins()["apache-flink"]
    venv_python = re.search(r"python\.executable: (\S+)\\n", dockerfile)
    assert venv_python
    for module, deployment in deployments.items():
        spec = deployment["spec"]
        assert deployment["apiVersion"] == "flink.apache.org/v1beta1"
        assert spec["image"] == compose["services"]["reader"]["image"]
        assert spec["flinkVersion"] == "v" + "_".join(version.split(".")[:2])
        jar = spec["job"]["jarURI"].removeprefix("local:///opt/flink/opt/")
        assert (pyflink_dir() / "opt" / jar).is_file(), f"{jar} is not in Flink {version}"
        assert spec["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
        assert spec["job"]["args"][0] == "-pym" and importlib.util.find_spec(module)
        assert spec["job"]["upgradeMode"] == "savepoint"
        assert spec["flinkConfiguration"]["high-availability.type"] == "kubernetes"
        assert spec["flinkConfiguration"]["python.executable"] == venv_python.group(1)


def test_kubernetes_settings_validate_secrets_are_files_and_volumes_exist(
        tmp_path: Path) -> None:
    """Every pod's settings validate, the secret ones read from the Secret mounted as the file
    FEATURESTREAM_SECRETS_FILE names -- never as environment variables (Flink logs the
    environment of the job's Python); every volume claim exists."""
    documents = list(manifests())
    claims = {d["metadata"]["name"] for _, d in documents
              if d["kind"] == "PersistentVolumeClaim"}
    configs: dict[str, dict[str, str]] = {
        d["metadata"]["name"]: d["data"] for _, d in documents if d["kind"] == "ConfigMap"}
    secrets: dict[str, dict[str, str]] = {
        d["metadata"]["name"]: d["stringData"] for _, d in documents if d["kind"] == "Secret"}
    pods = 0
    for name, document in documents:
        spec = document.get("spec", {})
        pod = spec.get("podTemplate", spec.get("template", {}))
        if not pod:
            continue
        pods += 1
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for container in pod["spec"]["containers"]:
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, f"{name}: secrets in the environment"
                env.update(configs[source["configMapRef"]["name"]])
            for variable in container.get("env", []):
                assert "valueFrom" not in variable, f"{name}: a secret in the environment"
                env[variable["name"]] = variable["value"]
            path = PurePosixPath(env[SECRETS_FILE])
            [mount] = [m for m in container["volumeMounts"]
                       if path.parent == PurePosixPath(m["mountPath"])]
            secret = secrets[volumes[mount["name"]]["secret"]["secretName"]]
            local = tmp_path / f"{name}-{path.name}"
            local.write_text(secret[path.name])
            settings = Settings.from_env({**env, SECRETS_FILE: str(local)})
            assert settings.redis_url.startswith("redis://:CHANGE-ME@"), name
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    assert pods == 3
