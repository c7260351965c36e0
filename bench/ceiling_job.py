"""The feature job's ceilings, as Flink programs the benchmark submits (``bench/ceilings.py``):
what the feature job could reach if its own work cost nothing.

- ``discard``: the feature job's Kafka source (the same client, framing and settings) into a
  discarding sink, all in Java: what Flink reads from Kafka on this box.
- ``python``: the same source, batched by the same Java batcher into a Python operator that
  only counts the frames of each batch: what handing batches to Python costs (serialization,
  the Beam runner, the Python worker), with no decoding, windows or Redis.

Run by ``flink run --python bench/ceiling_job.py MODE`` with the job's ``FEATURESTREAM_*``
settings in the environment, like the real job's ``main()``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from pyflink.datastream import ProcessFunction, RuntimeContext
from pyflink.datastream.connectors import Sink

from featurestream.jobs.environment import create_env
from featurestream.jobs.kafka_io import FRAME_TYPE, batched, events_frames
from featurestream.jobs.metrics import FlinkMetricGroup
from featurestream.settings import Settings
from featurestream.udfs.telemetry.catalog import SOURCE_EVENTS
from featurestream.udfs.telemetry.metrics import counter
from featurestream.udfs.wire.frames import CHECKPOINT_MARKER, split_batch

MODES = ("discard", "python")
DISCARDING_SINK = "org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink"


class CountFrames(ProcessFunction):
    """Counts the frames of each batch as the feature job's first Python stage does (its
    ``source_events`` counter), and emits nothing."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self._metrics = FlinkMetricGroup(runtime_context.get_metrics_group())
        self._events = counter(self._metrics, SOURCE_EVENTS)

    def process_element(self, batch: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        if self._metrics.untouched:
            self._metrics.touch()
        if batch != CHECKPOINT_MARKER:
            self._events.inc(len(split_batch(batch)))
        return iter(())


def main(mode: str) -> None:
    if mode not in MODES:
        raise SystemExit(f"ceiling job mode {mode!r}: use one of {', '.join(MODES)}")
    settings = Settings.from_env()
    env = create_env(settings)
    frames = events_frames(env, settings, settings.consumer_group, "events-source")
    if mode == "python":
        frames = (batched(frames, settings.source_batch_size, settings.source_batch_linger_ms)
                  .process(CountFrames(), output_type=FRAME_TYPE).name("count frames"))
    frames.sink_to(Sink(DISCARDING_SINK)).name("discard")
    env.execute(f"featurestream-ceiling-{mode}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
