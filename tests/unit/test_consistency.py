"""What ``featurestream verify`` compares: recorded vectors against replayed ones, and the rows the
operator left in the store against the replay's rows at their as_of -- zero mismatches for the
same log, and every difference found, counted per feature, with examples."""

from __future__ import annotations

import itertools

import pytest

from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.udfs.offline.consistency import RowCheck, ScoreCheck, same
from featurestream.udfs.offline.replay import Replay
from tests.harness import DAY, EVENTS, PickleDecoder, ShardHarness, user_definitions

DEFINITIONS = user_definitions(("1m", "1h"))


def test_values_are_the_same_only_when_equal() -> None:
    assert same(1, 1.0) and same(float("nan"), float("nan")) and same(None, None)
    assert not same(True, 1) and not same(0.1 + 0.2, 0.3) and not same(None, 0)
    assert same(["a", None], ["a", None]) and not same("1", 1)


def test_score_check_counts_differences_per_feature_and_keeps_late_ones_apart() -> None:
    check = ScoreCheck()
    check.add("e1", {"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, late=False)
    check.add("e2", {"a": 1.0, "b": 2.5}, {"a": 1.0, "b": 2.0}, late=False)
    check.add("e3", {"a": 9.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, late=True)
    check.add("e4", {"a": 1.0}, None, late=False)
    assert (check.exact.compared, check.exact.mismatched) == (2, 1)
    assert check.exact.by_feature == {"b": 1}
    assert [(m.where, m.feature, m.online, m.offline) for m in check.exact.examples] == [
        ("e2", "b", 2.5, 2.0)]
    assert (check.late.compared, check.late.mismatched, check.missing) == (1, 1, 1)


def replayed(events: list, expire: bool) -> tuple[ShardHarness, Replay]:
    """The operator (online) and the replay (offline) over the same log."""
    h = ShardHarness(DEFINITIONS, lateness=DAY)
    replay = Replay(DEFINITIONS, {EVENTS: PickleDecoder()}, None, out_of_orderness_ms=5_000,
                    allowed_lateness_ms=DAY, keep_rows=True, expire=expire)
    frames = [h.frame(e) for e in events]
    for start in range(0, len(events), 250):
        h.process_bundle(events[start:start + 250])
        h.advance_watermark(max(e.ts for e in events[:start + 250]) - 5_001)
    for start in range(0, len(frames), 400):
        replay.feed(frames[start:start + 400])
    replay.finish()
    return h, replay


@pytest.mark.parametrize("expire", [True, False])
def test_the_rows_the_operator_left_equal_the_replay_at_their_as_of(expire: bool) -> None:
    """With expiry the replay ends where the operator's watermark did; without (verify's
    mode: the job's watermark may have stopped anywhere) it is put at each row's time."""
    events = list(itertools.islice(generate_events(StreamConfig(users=40, seed=5)), 3_000))
    h, replay = replayed(events, expire)
    online = h.latest_rows()
    check = RowCheck()
    for key, row in online.items():
        check.add(key, row, replay.row_at(key, row["as_of"], row["version"]))
    assert check.compared == len(online) > 30 and check.mismatched == 0, check.examples
    assert not check.not_compared

    key, row = next(iter(online.items()))
    tampered = RowCheck()
    tampered.add(key, {**row, "events_1h": row["events_1h"] + 1},
                 replay.row_at(key, row["as_of"], row["version"]))
    assert tampered.by_feature == {"events_1h": 1}
    behind = RowCheck()
    behind.add(key, row, replay.row_at(key, row["as_of"], row["version"] - 1))
    assert behind.not_compared == {"the job has not counted every event of the log yet": 1}
