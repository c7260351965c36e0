"""The score encoder writes exactly fastavro's bytes for every score record."""

from __future__ import annotations

from io import BytesIO

from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from featurestream.schemas import load_schema
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec, ScoreRecord

CODEC = ScoreCodec(FileSchemaRegistry(), "scores-value")
SCHEMA = parse_schema(load_schema("score"))
LONGS = st.integers(-(2**63), 2**63 - 1)
INTS = st.integers(-(2**31), 2**31 - 1)
DOUBLES = st.floats(allow_nan=False)
TEXT = st.text(max_size=20)

scores = st.fixed_dictionaries({
    "event_id": TEXT, "user_id": TEXT, "event_type": TEXT, "ts": LONGS, "model": TEXT,
    "version": INTS, "variant": TEXT, "score": DOUBLES,
    "features": st.dictionaries(TEXT, DOUBLES, max_size=30),
    "features_missing": st.booleans(), "as_of": st.none() | LONGS, "scored_at": LONGS,
    "shadow": st.none() | st.fixed_dictionaries({"version": INTS,
                                                 "score": st.none() | DOUBLES}),
}, optional={"experiment": st.none() | TEXT})


@given(scores)
def test_encoding_is_fastavros_and_decodes_back(score: ScoreRecord) -> None:
    encoded = CODEC.encode(score)
    reference = BytesIO()
    schemaless_writer(reference, SCHEMA, score)
    assert encoded[5:] == reference.getvalue()
    assert CODEC.decode(encoded) == {"experiment": None} | score


@given(scores)
def test_scores_of_the_schema_before_experiment_still_decode(score: ScoreRecord) -> None:
    old = FileSchemaRegistry().schema_by_id(10)
    assert [f["name"] for f in load_schema("score")["fields"]] == [
        *(f["name"] for f in old["fields"]), "experiment"]
    body = BytesIO()
    schemaless_writer(body, old, {k: v for k, v in score.items() if k != "experiment"})
    assert CODEC.decode(b"\x00" + (10).to_bytes(4, "big") + body.getvalue()) == (
        score | {"experiment": None})


def test_the_current_schema_is_registered_under_a_new_id() -> None:
    assert FileSchemaRegistry().id_for("scores-value", load_schema("score")) == 11
