"""The scoring job's Redis I/O: the rows the feature job captured for the batch's events in (of
every entity the models read), latest scores out, one round trip each per batch; and the drift
counts (about once a second).

Layout in :mod:`udfs.store.redis_layout`. Latest scores go through its upsert script, which
keeps the newer of two scores, so replayed batches after a restart never roll a user's score
back. :class:`ScoreStore` is both of :class:`~udfs.scoring.scorer.BatchScorer`'s Redis ports and
the :class:`~udfs.scoring.drift_recorder.DriftSink` (hashes of
:func:`~udfs.telemetry.drift.drift_key`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from featurestream.jobs.redis_target import RedisTarget
from featurestream.udfs.scoring.score_codec import ScoreRecord
from featurestream.udfs.scoring.scorer import CapturedKey
from featurestream.udfs.scoring.vector import Row
from featurestream.udfs.store.redis_layout import (
    UPSERT_SCORE_LUA,
    Score,
    decode_point_in_time,
    point_in_time_key,
    score_key,
    upsert_score_args,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage


class ScoreStore:
    """Pipelined reads of captured feature rows and writes of users' latest scores."""

    def __init__(self, target: RedisTarget) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_SCORE_LUA)
        self._prefix = target.key_prefix
        self._ttl = target.ttl_seconds

    def captured(self, keys: Sequence[CapturedKey]) -> dict[CapturedKey, Row | Problem | None]:
        """The rows captured for ``(entity, id, event id)`` in one round trip; keys not
        captured (yet) are left out."""
        values = self._client.mget([point_in_time_key(self._prefix, entity, event_id)
                                    for entity, _, event_id in keys])
        found: dict[CapturedKey, Row | Problem | None] = {}
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            entity, entity_id, event_id = key
            try:
                stored_id, row = decode_point_in_time(value)
            except ValueError as exc:
                found[key] = Problem(
                    Stage.FEATURES, ErrorClass.CORRUPT_FEATURE_ROW,
                    f"the features of {entity} {entity_id!r} captured for event {event_id!r} "
                    f"are unreadable ({exc})")
                continue
            if stored_id != entity_id:
                found[key] = Problem(
                    Stage.FEATURES, ErrorClass.CORRUPT_FEATURE_ROW,
                    f"event id {event_id!r} was captured for {entity} {stored_id!r}, not "
                    f"{entity_id!r}: two events share the id; give every event a unique event_id")
                continue
            found[key] = row
        return found

    def write_latest(self, scores: Sequence[ScoreRecord]) -> None:
        """Upsert each user's newest score per model, in one round trip."""
        latest = {(s["user_id"], s["model"]): s for s in scores}  # batch order: last wins
        if not latest:
            return
        pipe = self._client.pipeline(transaction=False)
        for (user_id, _), s in latest.items():
            score = Score(model=s["model"], version=s["version"], variant=s["variant"],
                          score=s["score"], event_id=s["event_id"], scored_at=s["scored_at"],
                          as_of=s["as_of"] or 0, experiment=s.get("experiment"))
            self._upsert(keys=[score_key(self._prefix, user_id)],
                         args=upsert_score_args(score, self._ttl), client=pipe)
        pipe.execute()

    def add_counts(self, counts: Mapping[str, Mapping[str, int]], ttl_seconds: int) -> None:
        """``HINCRBY`` each key's fields and ``EXPIRE`` it, in one round trip: counts from
        several tasks add up in the same bucket."""
        pipe = self._client.pipeline(transaction=False)
        for key, fields in counts.items():
            for name, count in fields.items():
                pipe.hincrby(key, name, count)
            pipe.expire(key, ttl_seconds)
        pipe.execute()

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()
