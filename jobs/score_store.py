"""The scoring job's Redis I/O: feature rows in, latest scores out, one round trip each per batch.

Layout in :mod:`udfs.store.redis_layout`. Latest scores go through its upsert script, which
keeps the newer of two scores, so replayed batches after a restart never roll a user's score
back. :class:`ScoreStore` is both of :class:`~udfs.scoring.scorer.BatchScorer`'s Redis ports.
"""

from __future__ import annotations

from collections.abc import Sequence

from featurestream.jobs.redis_target import RedisTarget
from featurestream.udfs.features.processor import Row
from featurestream.udfs.scoring.score_codec import ScoreRecord
from featurestream.udfs.store.redis_layout import (
    UPSERT_SCORE_LUA,
    Score,
    decode_row,
    score_key,
    upsert_score_args,
    user_key,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage


class ScoreStore:
    """Pipelined reads of users' feature rows and writes of their latest scores."""

    def __init__(self, target: RedisTarget) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_SCORE_LUA)
        self._prefix = target.key_prefix
        self._ttl = target.ttl_seconds

    def rows(self, user_ids: Sequence[str]) -> dict[str, Row | Problem]:
        """The users' rows in one round trip; users without a row are left out."""
        pipe = self._client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hgetall(user_key(self._prefix, user_id))
        rows: dict[str, Row | Problem] = {}
        for user_id, fields in zip(user_ids, pipe.execute(), strict=True):
            if not fields:
                continue
            try:
                rows[user_id] = decode_row(fields)
            except ValueError as exc:
                rows[user_id] = Problem(
                    Stage.FEATURES, ErrorClass.CORRUPT_FEATURE_ROW,
                    f"the feature row of user {user_id!r} is unreadable ({exc})")
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
