"""Kafka client properties: one passthrough that reaches every Kafka client of the project.

``FEATURESTREAM_KAFKA_PROPERTIES`` (inline) and ``FEATURESTREAM_KAFKA_PROPERTIES_FILE`` (a
``.properties`` file) use librdkafka's property names, the ones confluent-kafka takes, e.g.
``security.protocol=SASL_SSL,sasl.mechanism=PLAIN,sasl.username=KEY,sasl.password=SECRET``.
Why one place: a SASL/SSL cluster needs the same credentials in the Flink jobs' Java source and
sinks and in every confluent-kafka client (producers, admin, consumers), and they name some of
them differently. :func:`java_properties` translates those (``sasl.username``/``sasl.password``
become ``sasl.jaas.config``, ``ssl.ca.location`` a PEM truststore); a name prefixed ``java.``
goes to the Java clients only (``java.ssl.keystore.location=...``). Properties the project sets
itself (``bootstrap.servers``, consumer groups, ...) are refused; the rest win over the
project's tuning defaults (``linger.ms``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

JAVA_ONLY = "java."

# Set by the project from its own settings (or fixed for correctness): refused, with the fix.
RESERVED = {
    "bootstrap.servers": "set FEATURESTREAM_KAFKA_BOOTSTRAP instead",
    "group.id": "set FEATURESTREAM_CONSUMER_GROUP or FEATURESTREAM_SCORING_GROUP instead",
    "transactional.id": "set FEATURESTREAM_SCORING_GROUP (and ..._SCORES_DELIVERY) instead",
    "fetch.max.wait.ms": "set FEATURESTREAM_KAFKA_FETCH_MAX_WAIT_MS instead",
    "enable.auto.commit": "the jobs keep their offsets in Flink checkpoints",
    "isolation.level": "each client reads what it must (committed scores, all events)",
    "key.serializer": "the jobs write Kafka frames with their own serializer",
    "value.serializer": "the jobs write Kafka frames with their own serializer",
    "key.deserializer": "the jobs read Kafka frames with their own deserializer",
    "value.deserializer": "the jobs read Kafka frames with their own deserializer",
}
# Java's login module for each SASL mechanism that takes a username and password.
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
_ENTRY_SEPARATOR = re.compile(r"(?<!\\)[,\n]")  # a comma or newline not escaped as \,
_INLINE_ENTRY = re.compile(r"([^\s=]+)\s*=\s*(.*)", re.DOTALL)
_FILE_LINE = re.compile(r"([^\s=:]+)\s*[=:]\s*(.*)")


class PropertyError(ValueError):
    """A bad Kafka property; ``setting`` is the field that holds it. Never quotes a value."""

    def __init__(self, setting: str, fix: str) -> None:
        super().__init__(fix)
        self.setting = setting


def client_properties(inline: str, file: str) -> dict[str, str]:
    """The inline and file properties merged and checked (:class:`PropertyError` if bad)."""
    merged = parse_inline(inline)
    for key, value in (read_properties_file(file) if file else {}).items():
        if merged.setdefault(key, value) != value:
            raise PropertyError("kafka_properties", f"{key} is also in FEATURESTREAM_KAFKA_"
                                "PROPERTIES_FILE with another value; set it in one place")
    java_properties(merged)  # fail now, not when a job starts
    return merged


def parse_inline(text: str) -> dict[str, str]:
    """``key=value`` entries separated by commas or newlines (``\\,``: a comma in a value)."""
    entries = [entry.replace("\\,", ",") for entry in _ENTRY_SEPARATOR.split(text)]
    return _key_values(entries, _INLINE_ENTRY, "kafka_properties", "entry",
                       "write key=value entries separated by commas (\\, for a comma in a value)")


def read_properties_file(path: str) -> dict[str, str]:
    """A Java-style ``.properties`` file: ``key=value`` or ``key: value`` lines, ``#`` and
    ``!`` comments; a backslash at the end of a line continues it."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise PropertyError("kafka_properties_file", f"cannot read it ({exc.strerror}); "
                            "use a readable .properties file, or leave it empty") from None
    lines = [line if not line.lstrip().startswith(("#", "!")) else ""
             for line in re.sub(r"\\\n[ \t]*", "", text).splitlines()]
    return _key_values(lines, _FILE_LINE, "kafka_properties_file", "line",
                       "write key=value lines")


def confluent_config(bootstrap: str, client: Mapping[str, Any],
                     properties: Mapping[str, str]) -> dict[str, Any]:
    """A confluent-kafka client's config: the brokers, the client's own settings, then the
    user's properties (``java.`` ones left out)."""
    return {"bootstrap.servers": bootstrap, **client,
            **{k: v for k, v in properties.items() if not k.startswith(JAVA_ONLY)}}


def java_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The properties for Flink's KafkaSource and KafkaSink (Java client names)."""
    java = {k: v for k, v in properties.items() if not k.startswith(JAVA_ONLY)}
    if "sasl.mechanisms" in java:  # librdkafka's older name
        java["sasl.mechanism"] = java.pop("sasl.mechanisms")
    username, password = java.pop("sasl.username", None), java.pop("sasl.password", None)
    if username is not None or password is not None:
        mechanism = java.get("sasl.mechanism", "GSSAPI").upper()
        if mechanism not in _LOGIN_MODULES:
            raise PropertyError("kafka_properties", f"sasl.username/sasl.password need "
                                f"sasl.mechanism {', '.join(_LOGIN_MODULES)} (not {mechanism})")
        java["sasl.jaas.config"] = (f'{_LOGIN_MODULES[mechanism]} required username='
                                    f'"{_quoted(username)}" password="{_quoted(password)}";')
    ca = java.pop("ssl.ca.location", "probe")
    if ca != "probe":  # librdkafka's "probe": the system's CAs, Java's default truststore
        java |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": ca}
    if java.get("ssl.endpoint.identification.algorithm") == "none":
        java["ssl.endpoint.identification.algorithm"] = ""  # Java's way to turn it off
    java |= {k.removeprefix(JAVA_ONLY): v for k, v in properties.items()
             if k.startswith(JAVA_ONLY)}
    if "ssl.certificate.location" in java and "ssl.keystore.location" not in java:
        raise PropertyError("kafka_properties", "a client certificate needs "
                            "java.ssl.keystore.location too (with java.ssl.keystore.type=PEM: "
                            "one file with the key and the certificate chain) for the Flink jobs")
    return java


def _key_values(entries: list[str], pattern: re.Pattern[str], setting: str, unit: str,
                fix: str) -> dict[str, str]:
    """Entries as a dict; an error names the entry's number, never its text (secrets)."""
    result: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        if not entry.strip():
            continue
        match = pattern.fullmatch(entry.strip())
        if match is None:
            raise PropertyError(setting, f"{unit} {number} is not key=value: {fix}")
        key, value = match.groups()
        if key in result:
            raise PropertyError(setting, f"{key} is given twice")
        if key.removeprefix(JAVA_ONLY) in RESERVED:
            raise PropertyError(setting, f"{key} is set by featurestream: "
                                f"{RESERVED[key.removeprefix(JAVA_ONLY)]}")
        result[key] = value
    return result


def _quoted(value: str | None) -> str:
    """A JAAS quoted-string body: backslashes and double quotes escaped."""
    return (value or "").replace("\\", "\\\\").replace('"', '\\"')
