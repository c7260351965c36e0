"""The scoring job's Redis I/O: feature rows in (of every entity a batch's models read), latest
scores out, one round trip each per batch.

Layout in :mod:`udfs.store.redis_layout`. Latest scores go through its upsert script, which
keeps the newer of two scores, so replayed batches after a restart never roll a user's score
back. :class:`ScoreStore` is both of :class:`~udfs.scoring.scorer.BatchScorer`'s Redis ports.
"""

from __future__ import annotations

from collections.abc import Sequence

from featurestream.jobs.redis_target import RedisTarget
from featurestream.udfs.scoring.score_codec import ScoreRecord
from featurestream.udfs.scoring.scorer import RowKey
from featurestream.udfs.scoring.vector import Row
from featurestream.udfs.store.redis_layout import (
    UPSERT_SCORE_LUA,
    Score,
    decode_row,
    entity_key,
    score_key,
    upsert_score_args,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage


class ScoreStore:
    """Pipelined reads of entities' feature rows and writes of users' latest scores."""

    def __init__(self, target: RedisTarget) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_SCORE_LUA)
        self._prefix = target.key_prefix
        self._ttl = target.ttl_seconds

    def rows(self, keys: Sequence[RowKey]) -> dict[RowKey, Row | Problem]:
        """The ``(entity, id)`` rows in one round trip; those without a row are left out."""
        pipe = self._client.pipeline(transaction=False)
        for entity, entity_id in keys:
            pipe.hgetall(entity_key(self._prefix, entity, entity_id))
        rows: dict[RowKey, Row | Problem] = {}
        for key, fields in zip(keys, pipe.execute(), strict=True):
            if not fields:
                continue
            try:
                rows[key] = decode_row(fields)
            except ValueError as exc:
                rows[key] = Problem(
                    Stage.FEATURES, ErrorClass.CORRUPT_FEATURE_ROW,
                    f"the feature row of {key[0]} {key[1]!r} is unreadable ({exc})")
        return rows

    def write_latest(self, scores: Sequence[ScoreRecord]) -> None:
        """Upsert each user's newest score per model, in one round trip."""
        latest = {(s["user_id"], s["model"]): s for s in scores}  # batch order: last wins
        if not latest:
            return
        pipe = self._client.pipeline(transaction=False)
        for (user_id, _), s in latest.items():
            score = Score(model=s["model"], version=s["version"], variant=s["variant"],
                          score=s["score"], event_id=s["event_id"], scored_at=s["scored_at"],
                          as_of=s["as_of"] or 0)
            self._upsert(keys=[score_key(self._prefix, user_id)],
                         args=upsert_score_args(score, self._ttl), client=pipe)
        pipe.execute()

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()
