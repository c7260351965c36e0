"""``featurestream rematerialize``'s parts without a cluster: the operator's rewrite mode (a
restored shard writes the row of every entity it restores, equal to the last row written
before; without the mode it writes none), and the command's refusal when it cannot reach the
feature job."""

from __future__ import annotations

import argparse

import pytest

from featurestream.cli.rematerialize import rematerialize_command
from featurestream.devstack.private import free_ports
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.operator import FeatureShardOperator, OperatorCounters
from tests.harness import ShardHarness, user_definitions


def events(count: int, users: int = 13) -> list[Event]:
    return [Event(f"e{i}", f"u{i % users}", "purchase" if i % 3 else "view", f"i{i % 4}",
                  float(i % 7), 10_000 + i * 1_500, None) for i in range(count)]


def restarted(rewrite: bool) -> tuple[ShardHarness, dict]:
    """A harness fed, checkpointed and restarted (in the rewrite mode or not), its rows
    cleared; with the rows last written before the restart."""
    h = ShardHarness(user_definitions(("1m", "1h")), shard_count=4)
    h.process_bundle(events(60)[:30])
    h.process_bundle(events(60)[30:])
    h.checkpoint()
    before = h.latest_rows()
    h.restart()
    h.operator = FeatureShardOperator(h.processors, h.shard_count, h.sink, h.dead_letters,
                                      OperatorCounters.register(h.metrics),
                                      clock=lambda: h.now_ms, rewrite_restored=rewrite)
    h.sink.rows.clear()
    return h, before


def test_a_restored_shard_rewrites_every_row_once_in_the_rewrite_mode() -> None:
    h, before = restarted(rewrite=True)
    h.checkpoint()  # the marker ahead of a checkpoint touches (so loads) every shard
    assert len(before) == 13
    assert dict(h.rows) == before and len(h.rows) == len(before)
    h.checkpoint()
    assert len(h.rows) == len(before)  # once: a shard is restored once


def test_without_the_mode_a_restored_shard_writes_only_what_changes() -> None:
    h, _ = restarted(rewrite=False)
    h.checkpoint()
    assert h.rows == []
    h.process(Event("again", "u0", "view", None, None, 200_000, None))
    assert [key for key, _ in h.rows] == ["user:u0"]


def test_rematerialize_without_flink_names_the_setting() -> None:
    (port,) = free_ports(1)
    settings = Settings().replace(flink_rest_url=f"http://127.0.0.1:{port}")
    with pytest.raises(UserFacingError, match="FEATURESTREAM_FLINK_REST_URL or run "
                                              "`featurestream up`"):
        rematerialize_command(settings, argparse.Namespace(timeout=1.0))
