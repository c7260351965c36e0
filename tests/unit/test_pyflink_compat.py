"""The PyFlink behaviour :mod:`jobs.pyflink_compat` relies on, checked against the installed
PyFlink without a cluster: an upgrade that changes any of it fails here.

- The end-of-bundle hook: PyFlink's keyed operation, driven here with a real keyed state
  backend, calls ``commit()`` when its bundle finishes (so Redis writes happen then), keys the
  state by ``Row(key)`` and hands the function the key and the value of ``Row(key, value)``;
  Beam finishes every operation at the end of a bundle.
- Switching the key: state and timers follow the backend's current key, set to ``Row(key)``.
- Keying in Java: a subtask record's key lands in the key group ``ShardKeys`` picked for it.
- The Java builders, ``transform``, side outputs, the keyed stream and the table conversion:
  the feature job's graph builds with only two Python operators, and the scoring job's
  table-to-stream conversion yields Java byte arrays.

The JVM tests start PyFlink's py4j gateway and compile the job jar (seconds, no cluster).
"""

from __future__ import annotations

import inspect
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyflink.common import Row, Types, WatermarkStrategy
from pyflink.datastream import DataStream, KeyedProcessFunction, StreamExecutionEnvironment
from pyflink.fn_execution import coders, flink_fn_execution_pb2
from pyflink.fn_execution.datastream.process.operations import StatefulOperation
from pyflink.fn_execution.state_impl import RemoteKeyedStateBackend
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, StreamTableEnvironment
from pyflink.util.java_utils import to_jarray

from featurestream.jobs import pyflink_compat
from featurestream.jobs.environment import create_env, java_package
from featurestream.jobs.features.job import build_feature_job, shard_keys
from featurestream.jobs.kafka_io import FRAME_TYPE, batched, framed_sink, framed_source
from featurestream.settings import Settings
from featurestream.udfs.features.routing import (
    MARKER_TIME,
    ShardEvent,
    ShardGroup,
    checkpoint_marker,
    encode_subtask_record,
    subtask_record,
)

CALLS: list[tuple[Any, ...]] = []  # what the probe and the backend saw, in order


class Probe(KeyedProcessFunction):
    """Records its calls; asks for the end-of-bundle hook as ``MaterializeFeatures`` does."""

    def open(self, runtime_context: Any) -> None:
        pyflink_compat.before_bundle_commit(runtime_context,
                                            lambda: CALLS.append(("end of bundle",)))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        CALLS.append(("element", ctx.get_current_key(), value))
        yield from ()

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        CALLS.append(("timer", ctx.get_current_key(), timestamp))
        return iter(())


class RecordingBackend(RemoteKeyedStateBackend):
    """PyFlink's keyed state backend, recording when it commits."""

    def commit(self) -> None:
        CALLS.append(("commit",))
        super().commit()


class Switcher(KeyedProcessFunction):
    """Works on another key as ``MaterializeFeatures`` does for each shard group of a record:
    switches to ``value`` (a key), registers a timer, switches back."""

    def open(self, runtime_context: Any) -> None:
        self.runtime_context = runtime_context

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        backend = self.runtime_context._keyed_state_backend
        pyflink_compat.switch_key(self.runtime_context, value)
        CALLS.append(("state key", backend.get_current_key(), backend._encoded_current_key))
        ctx.timer_service().register_event_time_timer(60_000)
        pyflink_compat.switch_key(self.runtime_context, ctx.get_current_key())
        CALLS.append(("state key", backend.get_current_key(), backend._encoded_current_key))
        yield from ()


KEY_CODER = coders.from_type_info(Types.ROW([Types.INT()]))  # Row(key), as Java keys state


def keyed_operation(function: KeyedProcessFunction | None = None
                    ) -> tuple[StatefulOperation, RecordingBackend]:
    """PyFlink's keyed process operation running ``function`` (a :class:`Probe`), as a Python
    worker builds it (``beam_operations.create_data_stream_keyed_process_function``), on a real
    backend."""
    no_state_service = SimpleNamespace(_state_cache=None, _underlying=None, _context=None)
    backend = RecordingBackend(no_state_service, KEY_CODER, None, 1000, 1000, 1000)
    spec = flink_fn_execution_pb2.UserDefinedDataStreamFunction(
        function_type=flink_fn_execution_pb2.UserDefinedDataStreamFunction.KEYED_PROCESS,
        payload=pickle.dumps(function or Probe()))
    return StatefulOperation(spec, backend, None), backend


def test_switching_the_key_moves_state_requests_and_timers_to_that_key() -> None:
    CALLS.clear()
    operation, _ = keyed_operation(Switcher())
    timers = operation.internal_timer_service
    timers._set_timer = lambda kind, ts, key, namespace: CALLS.append(("timer", ts, key))
    operation.open()
    list(operation.process_element(Row(7, -5, Row(42, 43))))
    encoded = KEY_CODER.get_impl().encode
    want = [("state key", Row(43), encoded(Row(43))), ("timer", 60_000, Row(43)),
            ("state key", Row(42), encoded(Row(42)))]
    assert want == CALLS


def test_a_bundle_ends_with_our_hook_then_the_keyed_state_commit() -> None:
    CALLS.clear()
    operation, backend = keyed_operation()
    operation.open()
    # The input of a keyed Python operator: (timestamp, watermark, Row(key, value)).
    list(operation.process_element(Row(7, -5, Row(42, b"record"))))
    assert backend.get_current_key() == Row(42)  # the state key Java hashes: Row.of(key)
    operation.finish()  # what Beam calls when the bundle ends
    # A timer: (event time, watermark, timestamp, key as Row, namespace).
    list(operation.process_timer((0, 5, 60_000, Row(42), b"")))
    operation.finish()
    assert CALLS == [("element", 42, b"record"), ("end of bundle",), ("commit",),
                     ("timer", 42, 60_000), ("end of bundle",), ("commit",)]


def test_beam_finishes_every_operation_at_the_end_of_a_bundle() -> None:
    """The Beam side of the hook, where it cannot run without a Beam runner: the source."""
    from apache_beam.runners.worker.bundle_processor import BundleProcessor
    from pyflink.fn_execution.beam import beam_operations, beam_operations_slow

    assert "op.finish()" in inspect.getsource(BundleProcessor.process_bundle)
    fast = Path(beam_operations.__file__).with_name("beam_operations_fast.pyx").read_text()
    finish = fast[fast.index("cpdef finish(self):"):fast.index("cpdef teardown(self):")]
    assert "self.operation.finish()" in finish
    assert "self.operation.finish()" in inspect.getsource(
        beam_operations_slow.FunctionOperation.finish)
    keyed = inspect.getsource(beam_operations.create_data_stream_keyed_process_function)
    assert "operations.StatefulOperation" in keyed


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the job jar is compiled, once for the module."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture()
def env(home: Path) -> StreamExecutionEnvironment:
    """A local environment with the job jar on the gateway's classpath."""
    return create_env(Settings().replace(home=home, parallelism=2))


def kafka_frames(env: StreamExecutionEnvironment) -> DataStream:
    """Source frames from a framed Kafka source (never run: the graph is only built)."""
    return env.from_source(framed_source("127.0.0.1:9", ["events"], "group", 10, {}),
                           WatermarkStrategy.no_watermarks(), "events", type_info=FRAME_TYPE)


def test_a_subtask_record_is_keyed_into_the_key_group_shard_keys_picked(
        env: StreamExecutionEnvironment) -> None:
    jvm = get_gateway().jvm
    records = java_package().ShardRecords
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignToKeyGroup

    def row_of(key: int) -> Any:
        return jvm.org.apache.flink.types.Row.of(to_jarray(jvm.java.lang.Object, [key]))

    event = ShardEvent("user", "user:u", 1_700_000_000_000, 0, ("view", None, None), b"frame")
    for shards, max_parallelism in ((16, 128), (7, 4096), (1, 128), (128, 128)):
        for shard, key in enumerate(shard_keys(shards, max_parallelism)):
            for record in (subtask_record([ShardGroup(key, [event]), ShardGroup(-1, [event])]),
                           checkpoint_marker([key, -1])):
                encoded = encode_subtask_record(record)
                keyed = records.WithShardKey().map(encoded)
                state_key = records.ShardKey().getKey(keyed)
                assert state_key.equals(row_of(key))  # what ShardKeys hashes
                assert bytes(keyed.getField(1)) == encoded
                assert assign(state_key, max_parallelism) == shard * max_parallelism // shards
                assert records.newestEventTime(encoded) == record.newest_ts
    assert records.newestEventTime(encode_subtask_record(checkpoint_marker([3]))) == MARKER_TIME
    # Each key is the smallest of its key group: the 16 shards of earlier releases kept theirs.
    for shard, key in enumerate(shard_keys(16, 128)):
        assert all(assign(row_of(k), 128) != shard * 8 for k in range(key))


def test_the_feature_job_builds_with_two_python_operators(
        env: StreamExecutionEnvironment) -> None:
    """``java_builder``, ``java_operator``, ``key_by_in_java`` and ``side_output`` in the
    feature job's graph: no Python timestamp, key-by or identity map operators."""
    frames = kafka_frames(env)
    settings = Settings()
    build_feature_job(frames, framed_sink("127.0.0.1:9", {}), settings,
                      settings.load_definitions())
    nodes = {node["id"]: node for node in json.loads(env.get_execution_plan())["nodes"]}
    names = [node["contents"] for node in nodes.values()]
    assert names == ["Source: events", "batch frames", "decode and shard events", "event time",
                     "key by shard", "entity features -> redis", "events dlq: Writer",
                     "events dlq: Committer"]
    by_name = {node["contents"]: node for node in nodes.values()}
    edges = {(nodes[p["id"]]["contents"], name, p["ship_strategy"])
             for name, node in by_name.items() for p in node.get("predecessors", [])}
    assert {("key by shard", "entity features -> redis", "HASH"),
            ("decode and shard events", "events dlq: Writer", "FORWARD"),
            ("entity features -> redis", "events dlq: Writer", "FORWARD")} <= edges


def test_java_operators_and_table_conversion_keep_their_types(
        env: StreamExecutionEnvironment) -> None:
    frames = kafka_frames(env)
    assert batched(frames, 10, 10).get_type() == FRAME_TYPE
    t_env = StreamTableEnvironment.create(env)
    stream = pyflink_compat.table_to_stream(t_env, t_env.from_data_stream(frames),
                                            DataTypes.BYTES())
    assert stream.get_type().get_java_type_info().getTypeClass().getName() == "[B"
