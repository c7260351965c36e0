"""What udfs.store.redis_layout adds for the reader: batch value decoding, and the score layout
(the JSON blob the scoring job writes and the reader serves; the upsert script itself runs in
tests/integration/test_reader.py); the row upsert's arguments, whose order the script relies
on; entity keys, and values of every kind (numbers, strings, booleans, lists, warming_up)
round-tripping with their types."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.udfs.store.redis_layout import (
    RESERVED_ENTITY_NAMES,
    ROW_META_FIELDS,
    UPSERT_ROWS_LUA,
    UPSERT_SCORE_LUA,
    RowValue,
    Score,
    decode_row,
    decode_rows,
    decode_score,
    decode_scores,
    decode_value,
    decode_values,
    encode_score,
    encode_value,
    entity_key,
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
    scored_at=st.integers(0, 2**53), as_of=st.integers(0, 2**53),
    experiment=st.none() | st.text())


@given(scores)
def test_scores_round_trip_exactly(score: Score) -> None:
    assert decode_score(encode_score(score)) == score
    assert decode_score(encode_score(score).encode()) == score


def test_the_blob_is_a_json_object_with_the_documented_keys() -> None:
    score = Score("purchase_risk", 3, "v3", 0.25, "evt-1", 1_700_000_000_500, 1_700_000_000_000)
    assert json.loads(encode_score(score)) == {
        "model": "purchase_risk", "version": 3, "variant": "v3", "score": 0.25,
        "event_id": "evt-1", "scored_at": 1_700_000_000_500, "as_of": 1_700_000_000_000,
        "experiment": None}
    assert upsert_score_args(score, 600) == [
        "purchase_risk", encode_score(score), "1700000000000", "1700000000500", "600"]
    assert decode_scores({b"purchase_risk": encode_score(score).encode()}) == {
        "purchase_risk": score}


def test_a_score_stored_before_experiments_reads_as_the_settings_split() -> None:
    stored = ('{"model":"m","version":1,"variant":"latest","score":0.5,"event_id":"e",'
              '"scored_at":2,"as_of":1}')
    assert decode_score(stored).experiment is None
    with_id = Score("m", 2, "v2", 0.5, "e", 2, 1, experiment="exp-4")
    assert json.loads(encode_score(with_id))["experiment"] == "exp-4"


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


# --- entities, typed values and warming_up ------------------------------------------------

def test_entity_keys_and_users_keep_their_keys() -> None:
    assert entity_key("fs:", "item", "sku-9") == "fs:item:sku-9"
    assert entity_key("fs:", "merchant_card", "m1|c2") == "fs:merchant_card:m1|c2"
    assert user_key("fs:", "u-1") == "fs:user:u-1" == entity_key("fs:", "user", "u-1")
    assert "score" in RESERVED_ENTITY_NAMES  # score_key's key space is no entity's


scalars = st.one_of(st.none(), st.integers(), st.floats(), st.text(), st.booleans())
row_values = st.one_of(scalars, st.lists(scalars, max_size=6))


@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=8), row_values, max_size=8),
                max_size=6))
def test_decode_rows_is_each_rows_values_decoded_one_by_one(rows: list[dict[str, RowValue]]
                                                            ) -> None:
    """A batch read's rows parsed in one go equal each value decoded on its own, whatever one
    row holds (a list, a huge integer, a non-finite float sends all to the slow path)."""
    replies = [[text for name, value in row.items() for text in (name, encode_value(value))]
               for row in rows]
    expected = [{name: decode_value(text) for name, text in zip(r[::2], r[1::2], strict=True)}
                for r in replies]
    assert repr(decode_rows(replies)) == repr(expected)


@given(row_values)
def test_every_value_round_trips_exactly_with_its_type(value: RowValue) -> None:
    # repr tells 1 from 1.0 from True from "1", and a nan from anything else
    text = encode_value(value)
    assert repr(decode_value(text)) == repr(value)
    assert repr(decode_value(text.encode())) == repr(value)
    assert text.isascii()  # whatever a string holds, the stored text is plain ASCII


@given(st.one_of(st.none(), st.integers(), st.floats()))
def test_numbers_and_null_keep_the_earlier_encoding_byte_for_byte(value: float | None) -> None:
    """Rows written before strings and lists existed read back the same (the old encoder was
    ``"" if value is None else repr(value)``)."""
    assert encode_value(value) == ("" if value is None else repr(value))


def test_look_alike_values_stay_apart() -> None:
    pairs: list[tuple[RowValue, RowValue]] = [
        (1, "1"), (None, ""), (True, 1), (True, "true"), (1.5, "1.5"), (float("inf"), "inf"),
        ([], "[]"), (None, "null"), (False, 0)]
    for a, b in pairs:
        assert encode_value(a) != encode_value(b)
        assert repr(decode_value(encode_value(a))) == repr(a)
        assert repr(decode_value(encode_value(b))) == repr(b)


@given(st.lists(row_values, max_size=30))
def test_decode_values_is_decode_value_of_each_for_every_kind(row: list[RowValue]) -> None:
    texts = [encode_value(v) for v in row]
    assert repr(decode_values(texts)) == repr(row)
    assert repr(decode_values([t.encode() for t in texts])) == repr(row)


def test_lists_keep_integers_beyond_64_bits_and_non_finite_floats() -> None:
    row: list[RowValue] = [[2**70, -(2**64), 1.5], [float("inf"), None, "x"], "ü\U0001f600",
                           True, 3]
    assert repr(decode_values([encode_value(v) for v in row])) == repr(row)


def test_warming_up_is_a_json_object_written_only_when_non_empty() -> None:
    warming = {"views_1h": 1_700_000_060_000, "distinct_buyers_24h": None}
    args = upsert_rows_args([{"as_of": 10, "version": 1, "views_1h": 2, "warming_up": warming}],
                            updated_at_ms=99, ttl_seconds=60)
    assert args[-2:] == ["warming_up",
                         '{"views_1h":1700000060000,"distinct_buyers_24h":null}']
    assert decode_row(dict(zip(args[3::2], args[4::2], strict=True)))["warming_up"] == warming
    empties: tuple[RowValue, ...] = ({}, None)
    for empty in empties:
        assert upsert_rows_args([{"as_of": 10, "version": 1, "views_1h": 2,
                                  "warming_up": empty}], 99, 60) == [
            "60", "99", "6", "as_of", "10", "version", "1", "views_1h", "2"]
    assert "warming_up" in ROW_META_FIELDS


def test_strings_lists_and_booleans_are_written_as_json() -> None:
    args = upsert_rows_args([{"as_of": 1, "version": 1, "last_buyer": "u|2",
                              "recent": ["a", "b"], "flag": False, "empty": ""}], 9, 60)
    assert args[7:] == ["last_buyer", '"u|2"', "recent", '["a","b"]', "flag", "false",
                        "empty", '""']
