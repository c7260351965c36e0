"""Where each local server listens, parsed from the settings (loopback addresses only)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from featurestream.errors import UserFacingError
from featurestream.settings import PREFIX, Settings

LOOPBACK = ("127.0.0.1", "localhost")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Endpoint:
    """A local TCP port and the ``FEATURESTREAM_*`` variable that chooses it."""

    port: int
    variable: str

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class Endpoints:
    """The ports of the embedded stack."""

    kafka: Endpoint
    redis: Endpoint
    flink_rest: Endpoint
    flink_rpc: Endpoint
    flink_jobmanager_metrics: Endpoint  # Prometheus reporter of the JobManager
    flink_taskmanager_metrics: Endpoint  # Prometheus reporter of the TaskManager

    @classmethod
    def from_settings(cls, settings: Settings) -> Endpoints:
        """Parse and check the addresses. The REST port's successors are Flink's too: + 1 the
        JobManager RPC, + 2 and + 3 the JobManager's and the TaskManager's Prometheus metrics."""
        kafka_var, redis_var, rest_var = (
            PREFIX + name for name in ("KAFKA_BOOTSTRAP", "REDIS_URL", "FLINK_REST_URL")
        )
        if "," in settings.kafka_bootstrap:
            raise UserFacingError(
                f"{kafka_var}={settings.kafka_bootstrap!r}: the local stack runs one broker; "
                "use a single 127.0.0.1:port"
            )
        kafka = _local_port(f"//{settings.kafka_bootstrap}", kafka_var)
        redis = _local_port(settings.redis_url, redis_var)
        rest = _local_port(settings.flink_rest_url, rest_var)
        if rest > 65535 - 3:
            raise UserFacingError(f"{rest_var}: leave room for the JobManager RPC port (REST + 1) "
                                  "and Flink's metrics ports (REST + 2, REST + 3)")
        return cls(
            kafka=Endpoint(kafka, kafka_var),
            redis=Endpoint(redis, redis_var),
            flink_rest=Endpoint(rest, rest_var),
            flink_rpc=Endpoint(rest + 1, rest_var),
            flink_jobmanager_metrics=Endpoint(rest + 2, rest_var),
            flink_taskmanager_metrics=Endpoint(rest + 3, rest_var),
        )


def _local_port(url: str, variable: str) -> int:
    parsed = urlparse(url)
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = parsed.hostname, None
    if host not in LOOPBACK or not port:
        raise UserFacingError(
            f"{variable} must point at 127.0.0.1:<port> for the local stack "
            f"(got host {host!r}, port {port!r}); unset it or use a local port"
        )
    return int(port)
