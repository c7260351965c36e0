"""Builds the clean FLINK_HOME of the local stack from the installed pyflink package.

The shigawire-apache-flink-libraries wheel drops flink-core / flink-runtime / flink-streaming-java
2.0.0 jars into ``pyflink/lib`` beside ``flink-dist-2.0.2.jar``; Flink's scripts put flink-dist
last on the classpath, so those stray 2.0.0 classes would win. The clean home's ``lib/`` links
only the apache-flink-libraries 2.0.2 jars plus the Kafka connector jars, chosen by each wheel's
RECORD (``importlib.metadata``), never by file name patterns alone.

``flink-python`` is linked into ``lib/`` too (not only ``opt/``): loaded by the parent classloader,
pemja's native library survives job restarts, so a second thread-mode Python job in the same
TaskManager no longer fails with ``NoSuchFieldException: loadedLibraryNames``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from string import Template

from featurestream.devstack.endpoints import HOST, Endpoints
from featurestream.devstack.paths import StackPaths
from featurestream.errors import UserFacingError
from featurestream.settings import Settings

FLINK_DIST = "apache-flink-libraries"
CONNECTOR_DIST = "shigawire-apache-flink-libraries"
CONNECTOR_JARS = ("flink-connector-kafka.jar", "kafka-clients.jar", "zstd-jni.jar")
LIB_DIR = PurePosixPath("pyflink/lib")
OPT_DIR = PurePosixPath("pyflink/opt")
PYTHON_JAR_PREFIX = "flink-python-"
COPIED_DIRS = ("bin", "conf")  # scripts find FLINK_HOME from their own (resolved) location
LINKED_DIRS = ("opt", "plugins")  # jars only: real directories of symlinks


def select_lib_jars(flink_files: Iterable[PurePosixPath],
                    connector_files: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    """The jars for ``lib/``: Flink's 2.0.2 lib jars, flink-python and the Kafka connector jars.

    Arguments are the files each wheel's RECORD lists, relative to site-packages.
    """
    flink_jars = [f for f in flink_files if f.suffix == ".jar" and (
        f.parent == LIB_DIR or (f.parent == OPT_DIR and f.name.startswith(PYTHON_JAR_PREFIX)))]
    for prefix in ("flink-dist-", PYTHON_JAR_PREFIX):
        if not any(f.name.startswith(prefix) for f in flink_jars):
            raise UserFacingError(
                f"{FLINK_DIST} lists no {prefix}*.jar; reinstall it: "
                f"pip install --force-reinstall {FLINK_DIST}==2.0.2"
            )
    connectors = {f.name: f for f in connector_files
                  if f.parent == LIB_DIR and f.name in CONNECTOR_JARS}
    missing = sorted(set(CONNECTOR_JARS) - connectors.keys())
    if missing:
        raise UserFacingError(
            f"{CONNECTOR_DIST} lacks {', '.join(missing)}; reinstall it: "
            f"pip install --force-reinstall {CONNECTOR_DIST}==2.0.0.post1"
        )
    return sorted([*flink_jars, *connectors.values()], key=lambda f: f.name)


def config_values(settings: Settings, paths: StackPaths, endpoints: Endpoints) -> dict[str, object]:
    """The placeholders of the config template."""
    checkpoints = settings.effective_checkpoint_dir.rstrip("/")
    return {
        "pid_dir": str(paths.run_dir),
        "log_dir": str(paths.flink_log_dir),
        "tmp_dir": str(paths.flink_tmp),
        "jobmanager_rpc_port": endpoints.flink_rpc.port,
        "rest_port": endpoints.flink_rest.port,
        "checkpoint_dir": checkpoints,
        "savepoint_dir": settings.effective_savepoint_dir,
        "python_executable": settings.python_executable,
    }


def render_config(template: str, values: dict[str, object]) -> str:
    """Fill the template; strings become YAML double-quoted scalars (JSON strings)."""
    quoted = {k: json.dumps(v) if isinstance(v, str) else v for k, v in values.items()}
    return Template(template).substitute(quoted)


def config_template() -> str:
    """The repo's Flink config template (package data ``devstack/conf``)."""
    conf = importlib.resources.files("featurestream.devstack") / "conf"
    return (conf / "flink-config.yaml").read_text()


def pyflink_dir() -> Path:
    """The installed pyflink package directory (found without importing pyflink)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise UserFacingError("pyflink is not installed: pip install apache-flink==2.0.2")
    return Path(next(iter(spec.submodule_search_locations)))


def wheel_files(dist: str) -> list[PurePosixPath]:
    """The files an installed distribution's RECORD lists, relative to site-packages."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise UserFacingError(f"{dist} is not installed: pip install -e . installs it") from None
    return [PurePosixPath(f.as_posix()) for f in files]


def build_flink_home(settings: Settings, paths: StackPaths, endpoints: Endpoints) -> None:
    """(Re)create ``paths.flink_home``: copied bin/ conf/, linked jars, rendered config."""
    source = pyflink_dir()
    site_packages = source.parent
    home = paths.flink_home
    for name in (*COPIED_DIRS, *LINKED_DIRS, "lib"):
        shutil.rmtree(home / name, ignore_errors=True)
    for name in COPIED_DIRS:
        shutil.copytree(source / name, home / name)
    for name in LINKED_DIRS:
        shutil.copytree(source / name, home / name, copy_function=os.symlink)
    (home / "lib").mkdir()
    for jar in select_lib_jars(wheel_files(FLINK_DIST), wheel_files(CONNECTOR_DIST)):
        (home / "lib" / jar.name).symlink_to(site_packages / jar)
    for directory in (paths.run_dir, paths.flink_log_dir, paths.flink_tmp):
        directory.mkdir(parents=True, exist_ok=True)
    values = config_values(settings, paths, endpoints)
    (paths.flink_conf / "config.yaml").write_text(render_config(config_template(), values))
    (paths.flink_conf / "masters").write_text(f"{HOST}:{endpoints.flink_rest.port}\n")
    (paths.flink_conf / "workers").write_text(f"{HOST}\n")
