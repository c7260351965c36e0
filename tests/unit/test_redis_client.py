"""The reader's Redis client at the protocol level, without a Redis: RESP commands out, replies
parsed and handed to their callers in order, failures, and the empty call; ``_Connection``
runs over a fake transport. Timeouts, reconnection, TLS and AUTH against a real redis-server:
``tests/integration/test_reader.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import hiredis
import pytest

from featurestream.serving.redis_client import (
    RedisClient,
    RedisUnavailable,
    _Connection,
    parse_redis_url,
)


class FakeTransport(asyncio.Transport):
    """Records what the connection writes; closing it is only noted."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def connected() -> tuple[_Connection, FakeTransport]:
    connection, transport = _Connection(), FakeTransport()
    connection.connection_made(transport)
    return connection, transport


def on_a_loop(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """The async ``test`` as a plain one: run on a fresh event loop, bounded to 5 s."""
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 5))
    return run


async def next_turn() -> None:
    """Let the loop run the callbacks scheduled so far (the connection's flush)."""
    await asyncio.sleep(0)


@on_a_loop
async def test_commands_go_out_as_resp_arrays_of_bulk_strings() -> None:
    connection, transport = connected()
    connection.send([("HGETALL", "fs:user:a"), ("PING",), ("GET", "é")])
    await next_turn()
    assert transport.writes == [b"*2\r\n$7\r\nHGETALL\r\n$9\r\nfs:user:a\r\n"
                                b"*1\r\n$4\r\nPING\r\n"
                                b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"]  # bytes, not chars


@on_a_loop
async def test_calls_in_one_loop_turn_leave_in_one_write_and_get_their_own_replies() -> None:
    connection, transport = connected()
    first = connection.send([("GET", "a"), ("GET", "b")])
    second = connection.send([("HGETALL", "c")])
    await next_turn()
    assert len(transport.writes) == 1
    replies = b"$1\r\n1\r\n$-1\r\n*4\r\n$1\r\nx\r\n$1\r\n2\r\n$1\r\ny\r\n$0\r\n\r\n"
    for i in range(len(replies)):  # one byte at a time: replies split anywhere
        connection.data_received(replies[i:i + 1])
    assert await first == ["1", None]
    assert await second == [["x", "2", "y", ""]]
    third = connection.send([("PING",)])
    await next_turn()
    assert len(transport.writes) == 2
    connection.data_received(b"+PONG\r\n")
    assert await third == ["PONG"]


@on_a_loop
async def test_reply_types_and_undecodable_bytes() -> None:
    connection, _ = connected()
    pending = connection.send([("X",)] * 5)
    connection.data_received(b":42\r\n*0\r\n*-1\r\n-ERR wrong type\r\n$2\r\n\xff\xfe\r\n")
    number, empty, nil, error, text = await pending
    assert (number, empty, nil) == (42, [], None)
    assert isinstance(error, hiredis.ReplyError) and str(error) == "ERR wrong type"
    assert text == "\ufffd\ufffd"  # replaced, never an exception in the read loop


@on_a_loop
async def test_an_empty_call_writes_nothing_and_does_not_wait() -> None:
    connection, transport = connected()
    assert await connection.send([]) == []
    before = connection.send([("GET", "a")])
    empty = connection.send([])
    after = connection.send([("GET", "b")])
    assert await empty == []
    await next_turn()
    assert transport.writes == [b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"]
    connection.data_received(b"$1\r\nA\r\n$1\r\nB\r\n")
    assert (await before, await after) == (["A"], ["B"])  # nobody's replies shifted


@on_a_loop
async def test_a_caller_that_gave_up_does_not_shift_the_others_replies() -> None:
    connection, _ = connected()
    gone = connection.send([("GET", "a")])
    waiting = connection.send([("GET", "b")])
    gone.cancel()
    connection.data_received(b"$1\r\nA\r\n$1\r\nB\r\n")
    assert await waiting == ["B"]


@on_a_loop
async def test_unreadable_replies_fail_every_waiting_caller_and_close() -> None:
    connection, transport = connected()
    first = connection.send([("GET", "a")])
    second = connection.send([("GET", "b")])
    connection.data_received(b"?garbage\r\n")
    for pending in (first, second):
        with pytest.raises(RedisUnavailable) as err:
            await pending
        assert err.value.kind == "reply"
    assert connection.closed and transport.closed
    with pytest.raises(RedisUnavailable):
        connection.send([("GET", "a")])


@on_a_loop
async def test_a_lost_connection_fails_waiting_callers_and_unsent_commands_are_dropped() -> None:
    connection, transport = connected()
    pending = connection.send([("GET", "a")])
    connection.connection_lost(ConnectionResetError("reset by peer"))
    await next_turn()
    assert transport.writes == []
    with pytest.raises(RedisUnavailable) as err:
        await pending
    assert err.value.kind == "connection" and "reset by peer" in str(err.value)


@on_a_loop
async def test_the_client_answers_an_empty_call_without_connecting() -> None:
    client = RedisClient(parse_redis_url("redis://127.0.0.1:1/0"), 0.05)  # nothing there
    assert await client.execute([]) == []  # connecting would have failed
