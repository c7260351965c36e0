"""Kafka client properties: parsing, checks, the Java translation, and that every
confluent-kafka client of the project is constructed with them (real clients, no broker)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer

from bench.raw_limits import consume_rate
from bench.scoring_job import TopicCounter
from featurestream.cli.consume import consume_command
from featurestream.devstack.endpoints import Endpoints
from featurestream.devstack.kafka import KafkaBroker
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.paths import StackPaths
from featurestream.settings import Settings, SettingsError
from tests.integration.conftest import read_topic

SASL = ("security.protocol=SASL_SSL, sasl.mechanism=PLAIN, sasl.username=key,"
        "sasl.password=pa\\,ss\"word, ssl.ca.location=/etc/ca.pem")


def with_properties(inline: str = "", file: Path | str = "") -> Settings:
    return Settings.from_env({"FEATURESTREAM_KAFKA_PROPERTIES": inline,
                              "FEATURESTREAM_KAFKA_PROPERTIES_FILE": str(file)})


def test_inline_properties_with_escaped_commas_and_newlines() -> None:
    settings = with_properties(SASL + "\nclient.id = fs")
    assert settings.kafka_client_properties() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "key",
        "sasl.password": 'pa,ss"word', "ssl.ca.location": "/etc/ca.pem", "client.id": "fs"}


def test_properties_file_with_comments_and_continued_lines(tmp_path: Path) -> None:
    file = tmp_path / "client.properties"
    file.write_text("# the cluster\n! also a comment\nsecurity.protocol=SASL_SSL\n\n"
                    "sasl.mechanism: SCRAM-SHA-512\nsasl.username = a\\\n    b\n", encoding="utf-8")
    settings = with_properties("sasl.password=pw,security.protocol=SASL_SSL", file)
    assert settings.kafka_client_properties() == {
        "security.protocol": "SASL_SSL", "sasl.password": "pw",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "ab"}


def test_confluent_config_adds_the_brokers_and_lets_the_properties_win() -> None:
    settings = with_properties("linger.ms=50,java.ssl.keystore.type=PEM")
    assert settings.kafka_config({"linger.ms": 5, "group.id": "g"}) == {
        "bootstrap.servers": "127.0.0.1:9092", "linger.ms": "50", "group.id": "g"}


def test_java_properties_translate_credentials_and_ca() -> None:
    java = with_properties(SASL + ",ssl.endpoint.identification.algorithm=none,"
                                  "java.ssl.truststore.type=JKS").kafka_java_properties
    assert java == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required '
                            'username="key" password="pa,ss\\"word";',
        "ssl.truststore.type": "JKS", "ssl.truststore.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": ""}
    scram = with_properties("sasl.mechanisms=SCRAM-SHA-256,sasl.username=u,sasl.password=p")
    assert scram.kafka_java_properties["sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.scram.ScramLoginModule required")


@pytest.mark.parametrize(("inline", "file_text", "variable", "hint"), [
    ("security.protocol", "", "KAFKA_PROPERTIES:", "entry 1 is not key=value"),
    ("a=1,a=2", "", "KAFKA_PROPERTIES:", "a is given twice"),
    ("bootstrap.servers=x:1", "", "KAFKA_PROPERTIES:", "FEATURESTREAM_KAFKA_BOOTSTRAP"),
    ("java.group.id=g", "", "KAFKA_PROPERTIES:", "FEATURESTREAM_CONSUMER_GROUP"),
    ("", "fetch.max.wait.ms=5", "KAFKA_PROPERTIES_FILE=", "KAFKA_FETCH_MAX_WAIT_MS"),
    ("", "just words", "KAFKA_PROPERTIES_FILE=", "line 1 is not key=value"),
    ("acks=all", "acks=1", "KAFKA_PROPERTIES:", "set it in one place"),
    ("sasl.username=u,sasl.password=p", "", "KAFKA_PROPERTIES:", "sasl.mechanism PLAIN"),
    ("ssl.certificate.location=/c.pem", "", "KAFKA_PROPERTIES:", "java.ssl.keystore.location"),
])
def test_bad_properties_name_the_variable_and_the_fix(tmp_path: Path, inline: str,
                                                      file_text: str, variable: str,
                                                      hint: str) -> None:
    file: Path | str = ""
    if file_text:
        file = tmp_path / "client.properties"
        file.write_text(file_text, encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        with_properties(inline, file)
    assert f"FEATURESTREAM_{variable}" in str(raised.value) and hint in str(raised.value)
    assert "\n" not in str(raised.value)


def test_unreadable_properties_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(SettingsError) as raised:
        with_properties(file=missing)
    assert str(raised.value).startswith(
        f"FEATURESTREAM_KAFKA_PROPERTIES_FILE='{missing}': cannot read it (No such file")


def test_librdkafka_accepts_a_sasl_ssl_config() -> None:
    """The names are librdkafka's: a client is built (it connects only when used)."""
    Producer(with_properties(SASL.replace("ssl.ca.location=/etc/ca.pem", "")).kafka_config())


def admin_client(settings: Settings, home: Path) -> None:
    broker = KafkaBroker(settings, StackPaths(home), Endpoints.from_settings(settings))
    broker.ensure_topics(print)


def consume_cli(settings: Settings, home: Path) -> None:
    consume_command(settings, argparse.Namespace(topic="scores", from_beginning=False, limit=1,
                                                 timeout=1, features=False))


CLIENTS = {
    "producer (produce, generate, tests, bench)": lambda s, home: EventProducer(s),
    "admin (the local stack)": admin_client,
    "consumer (featurestream consume)": consume_cli,
    "consumer (tests' read_topic)": lambda s, home: read_topic(s, "events", 1),
    "consumer (bench raw limits)": lambda s, home: consume_rate(s, "events", 1, parse=False),
    "consumer (bench topic counter)": lambda s, home: TopicCounter(s, "scores"),
}


@pytest.mark.parametrize("construct", CLIENTS.values(), ids=CLIENTS.keys())
def test_properties_reach_every_confluent_client(
        tmp_path: Path, construct: Callable[[Settings, Path], object]) -> None:
    """librdkafka rejects a bad property value when a client is constructed: proof that the
    property reached that client's configuration."""
    settings = with_properties("security.protocol=bogus").replace(home=tmp_path)
    with pytest.raises(KafkaException, match=r'"bogus" for configuration property '
                                             r'"security\.protocol"'):
        construct(settings, tmp_path)
