"""The Flink execution environment every featurestream job runs in, with the job jar
(``jobs/java``) on its classpath."""

from __future__ import annotations

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway

from featurestream.jobs.connector_jar import connector_jar
from featurestream.jobs.pyflink_compat import JavaObject
from featurestream.settings import Settings

_BUFFER_TIMEOUT_MS = 10


def create_env(settings: Settings, checkpoint_interval_ms: int | None = None
               ) -> StreamExecutionEnvironment:
    """An environment with checkpointing (every ``checkpoint_interval_ms``, by default
    ``settings.checkpoint_interval_ms``), PyFlink bundle/state-cache settings and our jar.

    Bundles bound freshness: a Python operator sees its input when a bundle ends, and rows
    reach Redis then, so the bundle time is short; network buffers are flushed every 10 ms
    (Flink's default is 100) for the same reason.
    """
    config = Configuration()
    config.set_string("python.executable", settings.python_executable)
    config.set_string("python.fn-execution.bundle.size", str(settings.bundle_size))
    config.set_string("python.fn-execution.bundle.time", str(settings.bundle_time_ms))
    config.set_string("python.state.cache-size", str(settings.state_cache_size))
    config.set_string("execution.buffer-timeout.interval", f"{_BUFFER_TIMEOUT_MS} ms")
    interval = checkpoint_interval_ms or settings.checkpoint_interval_ms
    config.set_string("execution.checkpointing.interval", f"{interval} ms")
    config.set_string("execution.checkpointing.dir", settings.effective_checkpoint_dir)
    # Aligned, exactly-once barriers: the feature job stores its users when a shard's last
    # checkpoint marker arrives, which relies on nothing passing the marker before the snapshot.
    config.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
    config.set_string("execution.checkpointing.unaligned.enabled", "false")
    config.set_string("execution.checkpointing.externalized-checkpoint-retention",
                      "RETAIN_ON_CANCELLATION")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(settings.parallelism)
    env.set_max_parallelism(settings.max_parallelism)
    env.add_jars(connector_jar(settings.home / "jars").as_uri())
    return env


def java_package() -> JavaObject:
    """The job jar's Java package (``jobs/java``), as a py4j view (after :func:`create_env`)."""
    return get_gateway().jvm.io.featurestream.flink
