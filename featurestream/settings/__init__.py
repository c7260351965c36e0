"""One settings object for the jobs, the reader and the CLI.

Every setting is an environment variable prefixed ``FEATURESTREAM_`` (the field name in upper
case, e.g. ``FEATURESTREAM_KAFKA_BOOTSTRAP``). Defaults point at the embedded local stack started
by ``featurestream up``; a remote Kafka, Flink or Redis is just other settings.

Settings are resolved once, in a ``main()`` (job entry point, CLI, reader), and handed to Flink
functions as plain constructor values. Bad values fail at start-up with a :class:`SettingsError`:
one line that names the variable, its value and the fix. Secrets (the reader's token, the Kafka
properties, the registry's credentials) are :class:`~pydantic.SecretStr` and a password in a URL
is masked: none of them appears in a repr, a log line or an error.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from featurestream.settings import kafka
from featurestream.udfs.contract.events import EVENT_TYPES
from featurestream.udfs.contract.schema_registry import RegistryConfig, registry_for
from featurestream.udfs.definitions.load import load_definitions
from featurestream.udfs.definitions.model import DefinitionError, Definitions
from featurestream.udfs.durations import parse_duration_ms
from featurestream.udfs.features.routing import DEFAULT_MAX_FUTURE_SKEW_MS
from featurestream.udfs.scoring.compiled import CHOICES as COMPILED_CHOICES
from featurestream.udfs.scoring.variants import parse_experiment, parse_version

PREFIX = "FEATURESTREAM_"
# A JSON file of secret FEATURESTREAM_* variables that from_env reads over the environment.
SECRETS_FILE = PREFIX + "SECRETS_FILE"
DEFAULT_POINT_IN_TIME_TTL_MS = 6 * 3_600_000  # FEATURESTREAM_POINT_IN_TIME_TTL_MS
MAX_TASKMANAGERS = 8  # FEATURESTREAM_TASKMANAGERS of the local stack
MAX_DRIFT_BUCKETS = 1_000  # FEATURESTREAM_DRIFT_WINDOW_MS / FEATURESTREAM_DRIFT_BUCKET_MS


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def _whole_number(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip().lstrip("-").isdigit():
            raise ValueError("expected a whole number")
        return int(value)
    return value


def _duration_ms(value: Any) -> Any:
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return parse_duration_ms(value)
    return _whole_number(value)


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
DurationMs = Annotated[int, BeforeValidator(_duration_ms)]  # 500ms, 10s, 5m, ... or plain ms
Names = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)]  # a,b,c
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]
NO_SECRET = SecretStr("")


def _default_home() -> Path:
    return Path.home() / ".featurestream"


class Settings(BaseSettings):
    """All featurestream settings. Build with :meth:`from_env` (``Settings()``: the defaults)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid")

    # -- The local stack: where it keeps its runtime files (logs, pids, Flink home, checkpoints)
    home: UserPath = Field(default_factory=_default_home)
    # How many TaskManagers (JVMs of 2 slots, 4 GiB each) `featurestream up` runs.
    taskmanagers: WholeNumber = 1

    # -- Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Client properties for every Kafka client (SASL/SSL...), see settings/kafka.py: inline
    # key=value entries (a secret: it may hold sasl.password) and/or a .properties file.
    kafka_properties: SecretStr = NO_SECRET
    kafka_properties_file: str = ""
    events_topic: str = "events"
    events_dlq_topic: str = "events.dlq"
    scores_topic: str = "scores"
    scores_dlq_topic: str = "scores.dlq"
    topic_partitions: WholeNumber = 2
    # How long a consumer's fetch may wait for data (tansu answers only when it ends).
    kafka_fetch_max_wait_ms: DurationMs = 20
    consumer_group: str = "featurestream-features"
    # Not 0: appended to the jobs' Kafka source uids, so a job resumed from a savepoint drops
    # its source positions (it reads each partition from its earliest offset) and keeps every
    # other state. `featurestream submit --reset-source-positions` (and `up`, after the local
    # broker restarted empty) sets a new one; 0 = the original uids.
    source_epoch: WholeNumber = 0

    # -- Schema registry: a Confluent-compatible registry; empty URL = the file-backed
    # registry built from schemas/. Basic auth (user:password) or a static bearer token.
    schema_registry_url: str = ""
    schema_registry_user_info: SecretStr = NO_SECRET
    schema_registry_bearer_token: SecretStr = NO_SECRET
    schema_registry_logical_cluster: str = ""  # sent with the bearer token (Confluent Cloud)
    schema_registry_ca_location: str = ""  # CA bundle verifying the registry's certificate
    schema_registry_cert_location: str = ""  # client certificate (mutual TLS)
    schema_registry_key_location: str = ""  # its private key
    schema_registry_timeout_ms: DurationMs = 5_000  # per HTTP request
    schema_registry_retries: WholeNumber = 3  # on 408/429/5xx and network errors, with backoff

    # -- Redis (a password goes in the URL: redis://:password@host:port/db; masked in output)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The URL names a Redis Cluster (any one of its nodes; the rest are discovered): writes
    # and reads are routed by slot, and keys carry the entity id in a hash tag.
    redis_cluster: bool = False
    redis_key_prefix: str = "fs:"
    redis_ttl_seconds: WholeNumber = 7 * 86_400
    redis_batch_size: WholeNumber = 1_000
    # How long the feature job retries a Redis write that cannot reach Redis (backoff from
    # 0.1 s doubling to 5 s; meanwhile it backpressures Kafka) before it fails and Flink
    # restarts it from its last checkpoint. 0 = fail at once.
    redis_write_retry_ms: DurationMs = 60_000
    # The feature job writes the row of every entity it restores from a checkpoint or
    # savepoint (set by `featurestream rematerialize`, after Redis lost its data).
    rewrite_rows_on_restore: bool = False

    # -- Flink and the feature job
    flink_rest_url: str = "http://127.0.0.1:8081"
    # The feature definitions: a .py file or an importable module of declarations (see
    # docs/features.md); empty = the built-in user features over `windows` and `events_topic`.
    # Loaded by load_definitions(), not by from_env (importing may be slow or need a path).
    definitions: str = ""
    # Sliding windows, comma separated; each window's hop is its length / 60.
    windows: Names = ("1m", "5m", "1h", "24h")
    max_out_of_orderness_ms: DurationMs = 5_000
    source_idleness_ms: DurationMs = 10_000
    # Events older than watermark - allowed lateness go to the DLQ. 0 = the largest window.
    allowed_lateness_ms: DurationMs = 0
    # Events stamped further ahead of the wall clock go to the DLQ (FutureEvent) and never
    # move the watermark.
    max_future_skew_ms: DurationMs = DEFAULT_MAX_FUTURE_SKEW_MS
    checkpoint_dir: str = ""  # empty = file://<home>/checkpoints
    checkpoint_interval_ms: DurationMs = 10_000
    parallelism: WholeNumber = 1
    # Flink's key groups: the most the job can ever be rescaled to (fixed with its state).
    max_parallelism: WholeNumber = 128
    # The feature job keys its state by shard of users (fixed with its state; >= parallelism).
    # By default one shard per key group: the job rescales to any parallelism up to the max.
    state_shards: WholeNumber = Field(
        default_factory=lambda fields: fields.get("max_parallelism", 128))
    # Kafka records cross into Python in batches of up to this many, or after this long.
    source_batch_size: WholeNumber = 1_000
    source_batch_linger_ms: DurationMs = 10
    # PyFlink bundle: rows reach Redis at the latest when a bundle ends.
    bundle_size: WholeNumber = 10_000
    bundle_time_ms: DurationMs = 50
    state_cache_size: WholeNumber = 100_000
    python_executable: str = sys.executable

    # -- The reader (`featurestream serve`): HTTP over the materialized features and scores
    serve_host: str = "127.0.0.1"
    serve_port: WholeNumber = 8000
    serve_workers: WholeNumber = 2  # processes, each with one pipelined Redis connection
    auth_token: SecretStr = NO_SECRET  # bearer token required on /v1/*; empty = no auth
    redis_timeout_ms: DurationMs = 100  # bound on every Redis call; past it the request gets a 503
    # In-process cache of rows and scores (0 = off); on by default, as invalidation keeps its
    # reads as fresh as Redis's (docs/performance.md, "Reader cache").
    cache_ttl_ms: DurationMs = 1_000
    cache_max_entries: WholeNumber = 100_000
    # With the cache on: evict a key as soon as Redis says it changed (client-side caching,
    # CLIENT TRACKING; see docs/performance.md, "Reader cache"); false = the TTL alone.
    cache_invalidation: bool = True
    max_batch_size: WholeNumber = 1_000  # user ids per POST /v1/features/batch
    # Circuit breakers (Redis, the model): open after this many failures in a row, reject at
    # once while open, let one probe through this long after opening (docs/operations.md).
    breaker_failures: WholeNumber = 5
    breaker_reset_ms: DurationMs = 1_000
    # Rows last read from Redis, kept for ?max_staleness_ms= while Redis is down (LRU bound;
    # ~1.3 KB per row of the built-in user features, so ~25 MB per worker at the default).
    fallback_max_entries: WholeNumber = 20_000

    # -- The scoring job
    models_dir: str = ""  # the model registry directory; empty = <home>/models
    model_name: str = "purchase_risk"
    scored_event_types: Names = ("purchase",)
    # Point in time (docs/point-in-time.md): the feature job keeps the rows captured for each
    # scored event this long in Redis; the scoring job scores from them, so it can replay (or
    # lag) that far behind.
    point_in_time_ttl_ms: DurationMs = DEFAULT_POINT_IN_TIME_TTL_MS
    # How long the scoring job waits for the feature job to capture an event's rows before the
    # event goes to scores.dlq (FeaturesNotReady).
    point_in_time_wait_ms: DurationMs = 60_000
    # Version:weight pairs split users by a stable hash, e.g. v3:90,v4:10; empty = latest.
    # With the shadow, in effect while the registry holds no experiment record (`featurestream
    # models promote|canary|shadow` write one; it wins; docs/operations.md "Model rollout").
    experiment: str = ""
    shadow_model: str = ""  # a version scored on every record but not served; empty = none
    scoring_group: str = "featurestream-scoring"  # consumer group and transactional id prefix
    score_batch_size: WholeNumber = 1_000  # records per micro-batch (Redis round trip, predict)
    model_poll_interval_ms: DurationMs = 5_000  # how often the registry is checked for versions
    # What scores a version: auto (lleaves: compiled once per version, cached beside it in the
    # registry, checked against LightGBM), lleaves, or off (Booster.predict); docs/operations.md.
    compiled_predictor: str = "auto"
    scores_delivery: str = "exactly_once"  # or at_least_once (see README, "The scoring job")
    # The scoring job's checkpoints (offsets only): exactly-once scores appear as each completes.
    scoring_checkpoint_interval_ms: DurationMs = 300
    # Drift against training (udfs/telemetry/drift.py): the scoring job adds its counts to
    # Redis time buckets of drift_bucket_ms; PSI is taken over the last drift_window_ms.
    drift_window_ms: DurationMs = 300_000
    drift_bucket_ms: DurationMs = 10_000

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the constructor's arguments: ``Settings()`` is the defaults, whatever the
        process environment holds; :meth:`from_env` reads an environment explicitly."""
        return (init_settings,)

    # -- Derived values

    @property
    def window_ms(self) -> tuple[int, ...]:
        """Window lengths in milliseconds, in the configured order."""
        return tuple(parse_duration_ms(w) for w in self.windows)

    def effective_allowed_lateness_ms(self, definitions: Definitions) -> int:
        """Allowed lateness; 0 (the default) means the largest sliding window of the
        definitions."""
        return self.allowed_lateness_ms or definitions.largest_window_ms

    @property
    def effective_models_dir(self) -> Path:
        """The model registry directory (``<home>/models`` unless set)."""
        return Path(self.models_dir).expanduser() if self.models_dir else self.home / "models"

    @property
    def effective_checkpoint_dir(self) -> str:
        """Checkpoint directory URL (file:// under ``home`` unless set)."""
        return self.checkpoint_dir or (self.home / "checkpoints").resolve().as_uri()

    @property
    def effective_savepoint_dir(self) -> str:
        """Where ``featurestream stop --savepoint`` puts savepoints: beside the checkpoints."""
        return f"{self.effective_checkpoint_dir.rstrip('/')}/savepoints"

    def load_definitions(self) -> Definitions:
        """The validated feature definitions; a mistake in them is one :class:`SettingsError`
        naming ``FEATURESTREAM_DEFINITIONS``, the definition, the field and the fix. Sources
        declared with ``registry_subject`` get their schema from :attr:`schema_registry`."""
        try:
            return load_definitions(self.definitions, self.windows, self.events_topic,
                                    lambda: registry_for(self.schema_registry))
        except DefinitionError as exc:
            # load_definitions starts its messages with the location, which _bad shows already
            detail = str(exc).removeprefix(f"{self.definitions}: ")
            raise self._bad("definitions", detail) from None

    def kafka_client_properties(self) -> dict[str, str]:
        """The Kafka properties (librdkafka names) of the inline and file settings, checked
        (the file is read on each call)."""
        try:
            return kafka.client_properties(self.kafka_properties.get_secret_value(),
                                           self.kafka_properties_file)
        except kafka.PropertyError as exc:
            raise self._bad(exc.setting, str(exc)) from None

    def kafka_config(self, client: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A confluent-kafka client's config: the brokers, the client's own ``client``
        settings, then the Kafka properties (which win over the client's tuning)."""
        return kafka.confluent_config(self.kafka_bootstrap, client or {},
                                      self.kafka_client_properties())

    @property
    def kafka_java_properties(self) -> dict[str, str]:
        """The Kafka properties for the jobs' Java KafkaSource and KafkaSinks."""
        return kafka.java_properties(self.kafka_client_properties())

    @property
    def schema_registry(self) -> RegistryConfig:
        """Where Avro schemas come from, as one plain (picklable) value."""
        return RegistryConfig(
            url=self.schema_registry_url, user_info=self.schema_registry_user_info,
            bearer_token=self.schema_registry_bearer_token,
            logical_cluster=self.schema_registry_logical_cluster,
            ca_location=self.schema_registry_ca_location,
            cert_location=self.schema_registry_cert_location,
            key_location=self.schema_registry_key_location,
            timeout_ms=self.schema_registry_timeout_ms, retries=self.schema_registry_retries)

    # -- Environment in and out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``FEATURESTREAM_*`` variables over the defaults and validate them (and the
        secret ones from :data:`SECRETS_FILE`, when it names a file: see :meth:`secret_env`)."""
        environ = os.environ if environ is None else environ
        if environ.get(SECRETS_FILE):
            environ = {**environ, **_secrets(environ[SECRETS_FILE])}
        return cls._validated(_Environment(cls, environ)())

    def to_env(self) -> dict[str, str]:
        """Every field as its ``FEATURESTREAM_*`` variable, secrets included (``from_env``
        reads them back)."""
        return {PREFIX + name.upper(): _render(value, reveal=True) for name, value in self}

    def secret_env(self) -> dict[str, str]:
        """The variables of :meth:`to_env` that hold a secret: the secret fields and URLs with
        a password. ``featurestream submit`` hands these to the job's ``main()`` in a file
        (:data:`SECRETS_FILE`), not its environment: Flink's client logs the environment of
        the Python process it starts, hiding only names with "password", "secret" or
        "token"."""
        return {PREFIX + name.upper(): _render(value, reveal=True) for name, value in self
                if isinstance(value, SecretStr) or (isinstance(value, str)
                                                    and masked_url(value) != value)}

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed."""
        return self._validated({**dict(self), **changes})

    @classmethod
    def _validated(cls, values: Mapping[str, Any]) -> Settings:
        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise _one_line(exc, values) from None
        settings._validate()
        return settings

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Passwords in URLs masked (secrets mask themselves); ``repr`` and ``str`` use this."""
        for name, value in super().__repr_args__():
            yield name, masked_url(value) if isinstance(value, str) else value

    # -- Validation

    def _bad(self, name: str, fix: str) -> SettingsError:
        """The one-line error for field ``name``; a secret's value is never shown."""
        value = getattr(self, name)
        shown = "" if isinstance(value, SecretStr) else f"={masked_url(_render(value))!r}"
        return SettingsError(f"{PREFIX}{name.upper()}{shown}: {fix}")

    def _validate(self) -> None:
        """Raise :class:`SettingsError` naming the variable and the fix for any bad value."""
        bad = self._bad
        if not self.windows:
            raise bad("windows", "list at least one window, e.g. 1m,5m,1h,24h")
        try:
            lengths = self.window_ms
        except ValueError as exc:
            raise bad("windows", str(exc)) from None
        for w, ms in zip(self.windows, lengths, strict=True):
            if ms < 60_000 or ms % 60_000:
                raise bad("windows", f"{w}: windows must be whole minutes (hop = window / 60)")
        if len(set(lengths)) != len(lengths):
            raise bad("windows", "each window may appear once")
        if not 0 <= self.allowed_lateness_ms <= max(lengths):
            raise bad("allowed_lateness_ms", "use 0 (= largest window) up to the largest window")
        for name in ("checkpoint_interval_ms", "parallelism", "topic_partitions",
                     "redis_batch_size", "bundle_size", "bundle_time_ms", "state_cache_size",
                     "redis_ttl_seconds", "max_parallelism", "state_shards", "source_batch_size",
                     "source_batch_linger_ms", "kafka_fetch_max_wait_ms"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be a positive integer")
        for name in ("max_out_of_orderness_ms", "source_idleness_ms", "source_epoch"):
            if getattr(self, name) < 0:
                raise bad(name, "must be zero or positive")
        if not 1 <= self.taskmanagers <= MAX_TASKMANAGERS:
            raise bad("taskmanagers", f"use 1 to {MAX_TASKMANAGERS}, also as `featurestream up "
                      "--taskmanagers N` (each is a 4 GiB JVM with 2 slots)")
        if self.max_future_skew_ms <= 0:
            raise bad("max_future_skew_ms", "must be positive, e.g. 1h")
        if self.max_parallelism < self.parallelism:
            raise bad("max_parallelism", f"use at least FEATURESTREAM_PARALLELISM "
                      f"({self.parallelism}); it is fixed for the life of the job's state")
        if not self.parallelism <= self.state_shards <= self.max_parallelism:
            raise bad("state_shards", f"use FEATURESTREAM_PARALLELISM ({self.parallelism}) to "
                      f"FEATURESTREAM_MAX_PARALLELISM ({self.max_parallelism}), or leave it unset "
                      "(= max parallelism, one shard per key group); it is fixed for the life "
                      "of the feature job's state")
        if not all(":" in hp for hp in self.kafka_bootstrap.split(",")):
            raise bad("kafka_bootstrap", "use host:port[,host:port...]")
        self.kafka_client_properties()  # parsed and checked now, not when a client starts
        if urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise bad("redis_url", "use redis://[:password@]host:port/db or rediss:// for TLS")
        if self.redis_cluster:
            self._validate_redis_cluster(bad)
        if urlsplit(self.flink_rest_url).scheme not in ("http", "https"):
            raise bad("flink_rest_url", "use http://host:port of the JobManager's REST endpoint")
        if self.checkpoint_dir and "://" not in self.checkpoint_dir:
            raise bad("checkpoint_dir", "use a URL such as file:///var/lib/featurestream/ckpt")
        if self.redis_write_retry_ms < 0:
            raise bad("redis_write_retry_ms", "use 0 (fail at once) or a duration, e.g. 60s")
        if not self.redis_key_prefix or any(c.isspace() for c in self.redis_key_prefix):
            raise bad("redis_key_prefix", "use a non-empty prefix without spaces, e.g. fs:")
        self._validate_schema_registry(bad)
        self._validate_scoring(bad)
        self._validate_drift(bad)  # the scoring job's and the reader's
        self._validate_reader(bad)

    def _validate_redis_cluster(self, bad: Callable[[str, str], SettingsError]) -> None:
        """A cluster is reached over TCP and has database 0 only."""
        url = urlsplit(self.redis_url)
        if url.scheme == "unix":
            raise bad("redis_url", "FEATURESTREAM_REDIS_CLUSTER=true needs the TCP address of "
                      "any node of the cluster, redis://[:password@]host:port (rediss:// for "
                      "TLS), not a unix socket; or set FEATURESTREAM_REDIS_CLUSTER=false for a "
                      "single Redis")
        dbs = {url.path.strip("/") or "0", *parse_qs(url.query).get("db", [])}
        if dbs != {"0"}:
            raise bad("redis_url", "a Redis Cluster has database 0 only: end "
                      "FEATURESTREAM_REDIS_URL with /0 (or no /db) while "
                      "FEATURESTREAM_REDIS_CLUSTER=true; or set FEATURESTREAM_REDIS_CLUSTER=false "
                      "for a single Redis")

    def _validate_schema_registry(self, bad: Callable[[str, str], SettingsError]) -> None:
        """The remote registry's address, credentials and TLS files."""
        if self.schema_registry_timeout_ms <= 0:
            raise bad("schema_registry_timeout_ms", "must be positive, e.g. 5s")
        if self.schema_registry_retries < 0:
            raise bad("schema_registry_retries", "must be zero or positive")
        if not self.schema_registry_url:
            for name in ("schema_registry_user_info", "schema_registry_bearer_token",
                         "schema_registry_ca_location", "schema_registry_cert_location",
                         "schema_registry_key_location"):
                if getattr(self, name):
                    raise bad(name, "set FEATURESTREAM_SCHEMA_REGISTRY_URL too (without it the "
                              "file-backed registry of schemas/ is used)")
            return
        url = urlsplit(self.schema_registry_url)
        if url.scheme not in ("http", "https"):
            raise bad("schema_registry_url", "use http(s)://host:port, or leave empty")
        if url.username is not None or url.password is not None:
            raise bad("schema_registry_url", "move the credentials to "
                      "FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO (user:password), a secret")
        if self.schema_registry_user_info and ":" not in (
                self.schema_registry_user_info.get_secret_value()):
            raise bad("schema_registry_user_info", "use user:password (HTTP basic auth)")
        if self.schema_registry_user_info and self.schema_registry_bearer_token:
            raise bad("schema_registry_bearer_token", "use basic auth "
                      "(FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO) or a bearer token, not both")
        if self.schema_registry_key_location and not self.schema_registry_cert_location:
            raise bad("schema_registry_key_location",
                      "set FEATURESTREAM_SCHEMA_REGISTRY_CERT_LOCATION (its certificate) too")

    def _validate_reader(self, bad: Callable[[str, str], SettingsError]) -> None:
        """The reader's settings (see README, "The reader")."""
        if not self.serve_host.strip():
            raise bad("serve_host", "use an address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
        if not 1 <= self.serve_port <= 65_535:
            raise bad("serve_port", "use a TCP port between 1 and 65535")
        for name in ("serve_workers", "redis_timeout_ms", "cache_max_entries", "max_batch_size",
                     "breaker_failures", "breaker_reset_ms", "fallback_max_entries"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be a positive integer")
        if self.cache_ttl_ms < 0:
            raise bad("cache_ttl_ms", "use 0 (cache off) or a short TTL such as 250ms")
        token = self.auth_token.get_secret_value()
        if token and (len(token) < 16 or any(c.isspace() for c in token)):
            raise bad("auth_token", "use at least 16 characters without spaces, or leave it "
                      "empty to turn auth off")

    def _validate_scoring(self, bad: Callable[[str, str], SettingsError]) -> None:
        """The scoring job's settings (see README, "The scoring job")."""
        for name in ("score_batch_size", "model_poll_interval_ms",
                     "scoring_checkpoint_interval_ms", "point_in_time_ttl_ms",
                     "point_in_time_wait_ms"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be a positive integer")
        if self.score_batch_size > self.bundle_size:
            raise bad("score_batch_size", f"use at most FEATURESTREAM_BUNDLE_SIZE "
                      f"({self.bundle_size}): a bundle's end always ends a batch")
        unknown = set(self.scored_event_types) - set(EVENT_TYPES)
        if not self.scored_event_types or unknown:
            raise bad("scored_event_types", f"list event types among {','.join(EVENT_TYPES)}")
        if not self.model_name or not self.model_name.replace("_", "").isalnum():
            raise bad("model_name", "use letters, digits and underscores, e.g. purchase_risk")
        if self.compiled_predictor not in COMPILED_CHOICES:
            raise bad("compiled_predictor", f"use one of {', '.join(COMPILED_CHOICES)}")
        try:
            parse_experiment(self.experiment)
        except ValueError as exc:
            raise bad("experiment", f"{exc}; use version:weight pairs such as v3:90,v4:10, "
                      "or leave empty to serve the latest version") from None
        if self.shadow_model:
            try:
                parse_version(self.shadow_model)
            except ValueError as exc:
                raise bad("shadow_model", f"{exc}; or leave empty for no shadow") from None
        if self.scores_delivery not in ("exactly_once", "at_least_once"):
            raise bad("scores_delivery", "use exactly_once (Kafka transactions) or at_least_once")
        if not self.scoring_group.strip():
            raise bad("scoring_group", "use a non-empty name, e.g. featurestream-scoring")

    def _validate_drift(self, bad: Callable[[str, str], SettingsError]) -> None:
        """The drift window and its buckets (a read fetches every bucket of the window)."""
        if self.drift_bucket_ms < 1_000:
            raise bad("drift_bucket_ms", "use at least 1s: the scoring job flushes its counts "
                      "about once a second, e.g. 10s")
        if not self.drift_bucket_ms <= self.drift_window_ms <= MAX_DRIFT_BUCKETS * \
                self.drift_bucket_ms:
            raise bad("drift_window_ms", f"use from FEATURESTREAM_DRIFT_BUCKET_MS "
                      f"({self.drift_bucket_ms}) up to {MAX_DRIFT_BUCKETS} buckets, e.g. 5m")


class _Environment(EnvSettingsSource):
    """The ``FEATURESTREAM_*`` variables of one mapping (``os.environ`` or a test's dict)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by _load_env_vars, which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


def _one_line(exc: ValidationError, values: Mapping[str, Any]) -> SettingsError:
    """The first of pydantic's errors as ``VARIABLE='value': fix`` (no value for a secret)."""
    error = exc.errors()[0]
    name = str(error["loc"][0])
    cause = error.get("ctx", {}).get("error")
    fix = str(cause) if isinstance(cause, Exception) else error["msg"]
    field = Settings.model_fields.get(name)
    if field is None or field.annotation is SecretStr:
        return SettingsError(f"{PREFIX}{name.upper()}: {fix}")
    shown = masked_url(_render(values.get(name, error.get("input"))))
    return SettingsError(f"{PREFIX}{name.upper()}={shown!r}: {fix}")


def _secrets(path: str) -> dict[str, str]:
    """The variables in a :data:`SECRETS_FILE` (a JSON object of strings)."""
    try:
        secrets = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        secrets = exc
    if not (isinstance(secrets, dict) and all(isinstance(v, str) for v in secrets.values())):
        raise SettingsError(f"{SECRETS_FILE}={path!r}: not a readable JSON object of strings "
                            f"({type(secrets).__name__}); point it at a JSON object of "
                            "FEATURESTREAM_* values (featurestream submit writes one for the "
                            "job's main(); on Kubernetes, mount the Secret there), or unset it")
    return secrets


def _render(value: Any, reveal: bool = False) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value() if reveal else str(value)
    return ",".join(value) if isinstance(value, tuple) else str(value)


def masked_url(text: str) -> str:
    """``text`` with the password of a URL's ``user:password@`` replaced by ``***``."""
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
