"""Builds the small jar of Kafka record framers (``jobs/java``) that the jobs ship to Flink.

The jar is compiled with the JDK's ``javac`` against the Flink and Kafka jars of the installed
pyflink package, once per source version, into a cache directory; the job adds it to
``pipeline.jars`` so it travels with the job to any cluster.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from featurestream.errors import UserFacingError
from featurestream.jdk import java_tool

JAVA_SOURCES = Path(__file__).parent / "java"
COMPILE_AGAINST = ("flink-dist-*.jar", "flink-connector-kafka*.jar", "kafka-clients*.jar")
BUILT_WITH = "the job's connector jar is compiled with a JDK"


def pyflink_lib_dir() -> Path:
    """The ``lib/`` directory of the installed pyflink package."""
    import pyflink

    return Path(pyflink.__file__).parent / "lib"


def _sources() -> list[Path]:
    return sorted(JAVA_SOURCES.rglob("*.java"))


def connector_jar(cache_dir: Path) -> Path:
    """Path of the compiled connector jar, building it into ``cache_dir`` if needed."""
    digest = hashlib.sha256()
    for source in _sources():
        digest.update(source.read_bytes())
    jar = cache_dir / f"featurestream-connect-{digest.hexdigest()[:12]}.jar"
    if jar.exists():
        return jar
    lib = pyflink_lib_dir()
    classpath = [str(p) for pattern in COMPILE_AGAINST for p in sorted(lib.glob(pattern))]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as build:
        compile_cmd = [java_tool("javac", BUILT_WITH), "--release", "11", "-nowarn", "-d", build,
                       "-cp", os.pathsep.join(classpath), *map(str, _sources())]
        _run(compile_cmd)
        tmp_jar = jar.with_suffix(".tmp")
        _run([java_tool("jar", BUILT_WITH), "--create", "--file", str(tmp_jar), "-C", build, "."])
        tmp_jar.replace(jar)
    return jar


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserFacingError(f"building the connector jar failed: {' '.join(cmd[:2])}…\n"
                              f"{result.stderr.strip()}")
