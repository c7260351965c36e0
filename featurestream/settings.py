"""One settings object for the jobs, the reader and the CLI.

Every setting is an environment variable prefixed ``FEATURESTREAM_`` (the field name in upper
case, e.g. ``FEATURESTREAM_KAFKA_BOOTSTRAP``). Defaults point at the embedded local stack started
by ``featurestream up``; a remote Kafka, Flink or Redis is just other settings.

Settings are resolved once, in a ``main()`` (job entry point, CLI, reader), and handed to Flink
functions as plain constructor values. Bad values fail at start-up with a :class:`SettingsError`
that names the variable and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from featurestream.udfs.contract.events import EVENT_TYPES
from featurestream.udfs.durations import parse_duration_ms
from featurestream.udfs.scoring.variants import parse_experiment, parse_version

PREFIX = "FEATURESTREAM_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def _default_home() -> Path:
    return Path.home() / ".featurestream"


@dataclass(frozen=True)
class Settings:
    """All featurestream settings. Build with :meth:`from_env`."""

    # Where the local stack keeps its runtime files (logs, pids, Flink home, checkpoints).
    home: Path = field(default_factory=_default_home)
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Confluent Schema Registry; empty = file-backed registry built from schemas/.
    schema_registry_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    flink_rest_url: str = "http://127.0.0.1:8081"
    events_topic: str = "events"
    events_dlq_topic: str = "events.dlq"
    scores_topic: str = "scores"
    scores_dlq_topic: str = "scores.dlq"
    topic_partitions: int = 2
    # How long a consumer's fetch may wait for data (tansu answers only when it ends).
    kafka_fetch_max_wait_ms: int = 20
    consumer_group: str = "featurestream-features"
    # Sliding windows, comma separated; each window's hop is its length / 60.
    windows: tuple[str, ...] = ("1m", "5m", "1h", "24h")
    max_out_of_orderness_ms: int = 5_000
    source_idleness_ms: int = 10_000
    # Events older than watermark - allowed lateness go to the DLQ. 0 = the largest window.
    allowed_lateness_ms: int = 0
    checkpoint_dir: str = ""  # empty = file://<home>/checkpoints
    checkpoint_interval_ms: int = 10_000
    parallelism: int = 1
    # Flink's key groups: the most the job can ever be rescaled to (fixed with its state).
    max_parallelism: int = 128
    # The feature job keys its state by shard of users (fixed with its state; >= parallelism).
    state_shards: int = 16
    # Kafka records cross into Python in batches of up to this many, or after this long.
    source_batch_size: int = 1_000
    source_batch_linger_ms: int = 10
    redis_key_prefix: str = "fs:"
    redis_ttl_seconds: int = 7 * 86_400
    redis_batch_size: int = 1_000
    # PyFlink bundle: rows reach Redis at the latest when a bundle ends.
    bundle_size: int = 10_000
    bundle_time_ms: int = 50
    state_cache_size: int = 100_000
    python_executable: str = sys.executable
    # The reader (`featurestream serve`): HTTP over the materialized features and scores
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_workers: int = 2  # processes, each with one pipelined Redis connection (bench/reader.py)
    auth_token: str = ""  # bearer token required on /v1/*; empty = no auth
    redis_timeout_ms: int = 100  # bound on every Redis call; past it the request gets a 503
    cache_ttl_ms: int = 0  # in-process cache of rows and scores; 0 = off
    cache_max_entries: int = 100_000
    max_batch_size: int = 1_000  # user ids per POST /v1/features/batch
    # The scoring job
    models_dir: str = ""  # the model registry directory; empty = <home>/models
    model_name: str = "purchase_risk"
    scored_event_types: tuple[str, ...] = ("purchase",)
    # Version:weight pairs split users by a stable hash, e.g. v3:90,v4:10; empty = latest.
    experiment: str = ""
    shadow_model: str = ""  # a version scored on every record but not served; empty = none
    scoring_group: str = "featurestream-scoring"  # consumer group and transactional id prefix
    score_batch_size: int = 1_000  # records per micro-batch (Redis round trip, predict call)
    model_poll_interval_ms: int = 5_000  # how often the registry is checked for new versions
    scores_delivery: str = "exactly_once"  # or at_least_once (see README, "The scoring job")
    # The scoring job's checkpoints (offsets only): exactly-once scores appear as each completes.
    scoring_checkpoint_interval_ms: int = 300

    @property
    def window_ms(self) -> tuple[int, ...]:
        """Window lengths in milliseconds, in the configured order."""
        return tuple(parse_duration_ms(w) for w in self.windows)

    @property
    def effective_allowed_lateness_ms(self) -> int:
        """Allowed lateness; defaults to (and never exceeds) the largest window."""
        largest = max(self.window_ms)
        return largest if self.allowed_lateness_ms == 0 else self.allowed_lateness_ms

    @property
    def effective_models_dir(self) -> Path:
        """The model registry directory (``<home>/models`` unless set)."""
        return Path(self.models_dir).expanduser() if self.models_dir else self.home / "models"

    @property
    def effective_checkpoint_dir(self) -> str:
        """Checkpoint directory URL (file:// under ``home`` unless set)."""
        return self.checkpoint_dir or (self.home / "checkpoints").resolve().as_uri()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``FEATURESTREAM_*`` variables over the defaults and validate them."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = PREFIX + f.name.upper()
            if var not in environ:
                continue
            raw = environ[var]
            try:
                values[f.name] = _convert(f, raw)
            except ValueError as exc:
                raise SettingsError(f"{var}={raw!r}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """Every field as its ``FEATURESTREAM_*`` variable (``from_env`` reads them back)."""
        return {PREFIX + f.name.upper(): _render(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the variable and the fix for any bad value."""

        def bad(name: str, fix: str) -> SettingsError:
            value = _render(getattr(self, name))
            return SettingsError(f"{PREFIX}{name.upper()}={value!r}: {fix}")

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
        for name in ("max_out_of_orderness_ms", "source_idleness_ms"):
            if getattr(self, name) < 0:
                raise bad(name, "must be zero or positive")
        if self.max_parallelism < self.parallelism:
            raise bad("max_parallelism", f"use at least FEATURESTREAM_PARALLELISM "
                      f"({self.parallelism}); it is fixed for the life of the job's state")
        if not self.parallelism <= self.state_shards <= self.max_parallelism:
            raise bad("state_shards", f"use FEATURESTREAM_PARALLELISM ({self.parallelism}) to "
                      f"FEATURESTREAM_MAX_PARALLELISM ({self.max_parallelism}); it is fixed for "
                      "the life of the feature job's state")
        if not all(":" in hp for hp in self.kafka_bootstrap.split(",")):
            raise bad("kafka_bootstrap", "use host:port[,host:port...]")
        if urlparse(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise bad("redis_url", "use redis://[:password@]host:port/db or rediss:// for TLS")
        if urlparse(self.flink_rest_url).scheme not in ("http", "https"):
            raise bad("flink_rest_url", "use http://host:port of the JobManager's REST endpoint")
        if self.schema_registry_url and urlparse(self.schema_registry_url).scheme not in (
            "http", "https"
        ):
            raise bad("schema_registry_url", "use http(s)://host:port, or leave empty")
        if self.checkpoint_dir and "://" not in self.checkpoint_dir:
            raise bad("checkpoint_dir", "use a URL such as file:///var/lib/featurestream/ckpt")
        if not self.redis_key_prefix or any(c.isspace() for c in self.redis_key_prefix):
            raise bad("redis_key_prefix", "use a non-empty prefix without spaces, e.g. fs:")
        self._validate_scoring(bad)
        self._validate_reader(bad)

    def _validate_reader(self, bad: Callable[[str, str], SettingsError]) -> None:
        """The reader's settings (see README, "The reader")."""
        if not self.serve_host.strip():
            raise bad("serve_host", "use an address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
        if not 1 <= self.serve_port <= 65_535:
            raise bad("serve_port", "use a TCP port between 1 and 65535")
        for name in ("serve_workers", "redis_timeout_ms", "cache_max_entries", "max_batch_size"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be a positive integer")
        if self.cache_ttl_ms < 0:
            raise bad("cache_ttl_ms", "use 0 (cache off) or a short TTL such as 250ms")
        if self.auth_token and (len(self.auth_token) < 16
                                or any(c.isspace() for c in self.auth_token)):
            # The token is a secret: name the variable, never echo the value.
            raise SettingsError(f"{PREFIX}AUTH_TOKEN: use at least 16 characters without "
                                "spaces, or leave it empty to turn auth off")

    def _validate_scoring(self, bad: Callable[[str, str], SettingsError]) -> None:
        """The scoring job's settings (see README, "The scoring job")."""
        for name in ("score_batch_size", "model_poll_interval_ms",
                     "scoring_checkpoint_interval_ms"):
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


def _render(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "int":
        if raw.strip().lstrip("-").isdigit():
            return int(raw)
        if f.name.endswith("_ms"):
            return parse_duration_ms(raw)
        raise ValueError("expected a whole number")
    if kind == "Path":
        return Path(raw).expanduser()
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
