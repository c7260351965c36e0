"""The Kafka client properties reach the jobs' Java KafkaSource and KafkaSinks: built through
``jobs/kafka_io.py`` in this process's JVM (no cluster, no broker) and read back from the Java
objects. The local tansu broker speaks neither SASL nor SSL, so no job runs against one here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from featurestream.jobs.environment import create_env
from featurestream.jobs.kafka_io import framed_sink, framed_source
from featurestream.settings import Settings

pytestmark = pytest.mark.flink

SASL = ("security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username=key,"
        "sasl.password=secret,ssl.ca.location=/etc/ca.pem,linger.ms=20")


def java_properties_of(java_object: Any, field_name: str) -> dict[str, str]:
    """The ``java.util.Properties`` a connector keeps in a private field."""
    field = java_object.getClass().getDeclaredField(field_name)
    field.setAccessible(True)
    properties = field.get(java_object)
    return {name: properties.getProperty(name) for name in properties.stringPropertyNames()}


def test_properties_reach_the_flink_source_and_sinks(tmp_path: Path) -> None:
    settings = Settings.from_env({"FEATURESTREAM_HOME": str(tmp_path),
                                  "FEATURESTREAM_KAFKA_PROPERTIES": SASL})
    create_env(settings)  # puts the job jar (the framers) on this JVM's class path
    expected = settings.kafka_java_properties
    assert "ScramLoginModule" in expected["sasl.jaas.config"]
    source = framed_source(settings.kafka_bootstrap, ["events"], "group", 20, expected)
    sinks = (framed_sink(settings.kafka_bootstrap, expected),
             framed_sink(settings.kafka_bootstrap, expected, "tx-prefix"))
    built = [java_properties_of(source.get_java_function(), "props"),
             *(java_properties_of(sink.get_java_function(), "kafkaProducerConfig")
               for sink in sinks)]
    for properties in built:
        assert {key: properties.get(key) for key in expected} == expected
    assert built[0]["fetch.max.wait.ms"] == "20"  # the project's own still there
    assert built[2]["transaction.timeout.ms"] == str(15 * 60_000)
