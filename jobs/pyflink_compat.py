"""Every use of a PyFlink private API, in one place (PyFlink as pinned in pyproject.toml).

PyFlink's Python API covers less than the jobs need: Kafka framers, Java operators, keying in
Java, side outputs and table conversions without an extra Python stage, an end-of-bundle hook,
switching the current key.
Each function says which private behaviour it relies on, and ``tests/unit/test_pyflink_compat.py``
checks each against the installed PyFlink without a cluster, so an upgrade that changes one
fails there in seconds instead of in a long integration run -- or silently in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyflink.common import Row
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import DataStream, KeyedStream, OutputTag, RuntimeContext
from pyflink.table import StreamTableEnvironment, Table
from pyflink.table.types import DataType, _to_java_data_type

JavaObject = Any  # a py4j proxy of a Java object


def java_builder(builder: Any) -> JavaObject:
    """The Java builder behind a PyFlink ``KafkaSource``/``KafkaSink`` builder.

    Relies on: the builders keep it as ``_j_builder`` (PyFlink offers no way to set a custom
    ``KafkaRecordDeserializationSchema`` or ``KafkaRecordSerializationSchema``).
    """
    return builder._j_builder


def java_operator(stream: DataStream, name: str, output_type: TypeInformation,
                  operator: JavaObject) -> DataStream:
    """``stream`` through a Java ``OneInputStreamOperator``.

    Relies on: ``DataStream._j_data_stream`` is the Java ``DataStream``, whose
    ``transform(name, TypeInformation, operator)`` PyFlink itself uses for Python operators.
    """
    return DataStream(stream._j_data_stream.transform(name, output_type.get_java_type_info(),
                                                      operator))


def key_by_in_java(stream: DataStream, key_by: Callable[[JavaObject], JavaObject]
                   ) -> KeyedStream:
    """``stream`` keyed by Java code, for a Python ``KeyedProcessFunction``.

    ``key_by`` takes the Java ``DataStream`` and returns a Java ``KeyedStream`` of
    ``Row(key, value)`` keyed by ``Row.of(key)``: the form PyFlink's own ``key_by`` builds with
    a Python map. Relies on: ``KeyedStream(j_keyed_stream, original_type, origin_stream)``;
    ``KeyedStream.process`` builds its Python operator (``ExternalPythonKeyedProcessOperator``)
    for the Java keyed stream's element type, and that operator's Python side keys state and
    timers by ``Row(element[0])`` and hands the function ``element[1]`` with
    ``ctx.get_current_key()`` = ``element[0]``.
    """
    return KeyedStream(key_by(stream._j_data_stream), stream.get_type(), stream)


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """The side output ``tag`` of the Python operator of ``stream``, without a Python stage.

    PyFlink's ``get_side_output`` appends a Python identity map (one more Python operator and
    bundle); for a tag whose type Java serializes natively (a byte array) the Java side output
    is already what follows needs. Relies on: ``_j_data_stream.getSideOutput``, and PyFlink
    registering the tag with the Python operator upstream when ``execute()`` builds the job
    graph (``PythonConfigUtil.processSideOutput``; ``execute_and_collect`` does not), so that
    the operator decodes the side output with the tag's type.
    """
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


def table_to_stream(t_env: StreamTableEnvironment, table: Table, data_type: DataType
                    ) -> DataStream:
    """A one-column table as a stream of that column's Java type, converted in Java.

    PyFlink's ``to_data_stream`` yields ``Row``s (unwrapping them would take a Python map).
    Relies on: ``_j_tenv``, ``_j_table`` and ``pyflink.table.types._to_java_data_type``.
    """
    return DataStream(t_env._j_tenv.toDataStream(table._j_table, _to_java_data_type(data_type)))



def before_bundle_commit(runtime_context: RuntimeContext, end_bundle: Callable[[], None]
                         ) -> None:
    """Run ``end_bundle`` at the end of every bundle, just before the keyed state is committed.

    PyFlink offers no end-of-bundle hook. Relies on: the keyed Python operation
    (``StatefulOperation.finish`` in ``pyflink/fn_execution/datastream/process/operations.py``),
    which Beam calls when a bundle ends -- and a checkpoint always ends the bundle first --
    calls ``commit()`` on the keyed state backend, which the runtime context holds as
    ``_keyed_state_backend``.
    """
    backend = runtime_context._keyed_state_backend
    commit = backend.commit

    def end_bundle_then_commit() -> None:
        end_bundle()
        commit()

    backend.commit = end_bundle_then_commit


def switch_key(runtime_context: RuntimeContext, key: int) -> None:
    """Make ``key`` the current key of the keyed state and timers of a Python function whose
    stream :func:`key_by_in_java` keyed by ``Row.of(key)``.

    The feature job's keyed subtask gets one record per batch holding the groups of all the
    shards it owns, and works on each under that shard's key. PyFlink offers no key switch.
    Relies on: the runtime context's ``_keyed_state_backend.set_current_key(Row(key))``, the
    call the keyed operation itself makes before each element and timer (it caches the old
    key's state, and ``commit()`` writes every cached key's), and the timer service registering
    timers under the backend's current key. The key must be in one of this subtask's key
    groups: Flink's state backend would not check it before writing.
    """
    runtime_context._keyed_state_backend.set_current_key(Row(key))
