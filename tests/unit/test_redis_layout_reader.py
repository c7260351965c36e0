"""What udfs.store.redis_layout adds for the reader: batch value decoding, and the score layout
(the JSON blob the scoring job writes and the reader serves; the upsert script itself runs in
tests/integration/test_reader.py); and the row upsert's arguments, whose order the script
relies on."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.udfs.store.redis_layout import (
    UPSERT_ROWS_LUA,
    UPSERT_SCORE_LUA,
    Score,
    decode_row,
    decode_score,
    decode_scores,
    decode_value,
    decode_values,
    encode_score,
    encode_value,
    score_key,
    upsert_rows_args,
    upsert_score_args,
    user_key,
)

values = st.one_of(st.none(), st.integers(), st.floats())


@given(st.lists(values, max_size=40))
def test_decode_values_is_decode_value_of_each(row: list) -> None:
    texts = [encode_value(v) for v in row]
    expected = [decode_value(t) for t in texts]
    assert repr(decode_values(texts)) == repr(expected)  # repr: nan, -0.0 and int vs float
    assert repr(decode_values([t.encode() for t in texts])) == repr(expected)


def test_decode_values_is_exact_beyond_64_bits_and_for_non_finite_floats() -> None:
    texts = [encode_value(v) for v in (2**70, -(2**64), float("inf"), float("nan"), 1.5, None)]
    assert repr(decode_values(texts)) == repr([2**70, -(2**64), float("inf"), float("nan"),
                                               1.5, None])
    assert decode_row({b"a": b"3", b"b": b""}) == {"a": 3, "b": None}

scores = st.builds(
    Score, model=st.text(min_size=1), version=st.integers(1, 10_000), variant=st.text(),
    score=st.floats(allow_nan=False, allow_infinity=False), event_id=st.text(),
    scored_at=st.integers(0, 2**53), as_of=st.integers(0, 2**53))


@given(scores)
def test_scores_round_trip_exactly(score: Score) -> None:
    assert decode_score(encode_score(score)) == score
    assert decode_score(encode_score(score).encode()) == score


def test_the_blob_is_a_json_object_with_the_documented_keys() -> None:
    score = Score("purchase_risk", 3, "v3", 0.25, "evt-1", 1_700_000_000_500, 1_700_000_000_000)
    assert json.loads(encode_score(score)) == {
        "model": "purchase_risk", "version": 3, "variant": "v3", "score": 0.25,
        "event_id": "evt-1", "scored_at": 1_700_000_000_500, "as_of": 1_700_000_000_000}
    assert upsert_score_args(score, 600) == [
        "purchase_risk", encode_score(score), "1700000000000", "1700000000500", "600"]
    assert decode_scores({b"purchase_risk": encode_score(score).encode()}) == {
        "purchase_risk": score}


def test_score_keys_live_beside_user_keys() -> None:
    assert score_key("fs:", "u1") == "fs:score:u1"
    assert score_key("fs:", "u1") != user_key("fs:", "u1")


@pytest.mark.parametrize("bad", [
    Score("", 1, "v1", 0.5, "e", 1, 1),
    Score("m", 1, "v1", float("nan"), "e", 1, 1),
    Score("m", 1, "v1", float("inf"), "e", 1, 1),
])
def test_unwritable_scores_are_refused(bad: Score) -> None:
    with pytest.raises(ValueError):
        encode_score(bad)


@pytest.mark.parametrize("text", ['{"model": "m"}', "[]", "not json",
                                  '{"model": "m", "version": "x", "variant": "v", "score": 1, '
                                  '"event_id": "e", "scored_at": 1, "as_of": 1}'])
def test_undecodable_blobs_are_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        decode_score(text)


def test_row_upsert_args_lead_with_as_of_and_version_wherever_the_row_has_them() -> None:
    """The script compares the texts at fixed positions; the row dict's order must not matter."""
    first = {"as_of": 10, "version": 3, "events_1m": 2, "avg_spend_1h": None}
    last = {"events_1m": 2, "avg_spend_1h": None, "version": 3, "as_of": 10}
    expected = ["60", "99", "8", "as_of", "10", "version", "3", "events_1m", "2",
                "avg_spend_1h", ""]
    assert upsert_rows_args([first], updated_at_ms=99, ttl_seconds=60) == expected
    assert upsert_rows_args([last], updated_at_ms=99, ttl_seconds=60) == expected
    two = upsert_rows_args([last, {"version": 1, "as_of": 11}], 99, 60)
    assert two == [*expected, "4", "as_of", "11", "version", "1"]


def test_a_row_without_as_of_or_version_cannot_be_upserted() -> None:
    with pytest.raises(KeyError, match="as_of"):
        upsert_rows_args([{"version": 1, "events_1m": 2}], 99, 60)
    with pytest.raises(KeyError, match="version"):
        upsert_rows_args([{"as_of": 1, "events_1m": 2}], 99, 60)


def test_the_upsert_scripts_ship_as_package_data_and_document_their_arguments() -> None:
    assert "upsert_rows_args" in UPSERT_ROWS_LUA and "ARGV[at + 2]" in UPSERT_ROWS_LUA
    assert "upsert_score_args" in UPSERT_SCORE_LUA and "ARGV[5]" in UPSERT_SCORE_LUA
