"""The scoring job's Redis I/O: the rows the feature job captured for the batch's events in (of
every entity the models read), latest scores out, one round trip each per batch; and the drift
counts (about once a second).

Layout in :mod:`udfs.store.redis_layout`. Latest scores go through its upsert script, which
keeps the newer of two scores, so replayed batches after a restart never roll a user's score
back. :class:`ScoreStore` is both of :class:`~udfs.scoring.scorer.BatchScorer`'s Redis ports and
the :class:`~udfs.scoring.drift_recorder.DriftSink` (hashes of
:func:`~udfs.telemetry.drift.drift_key`).

On Redis Cluster (``target.cluster``) score keys carry the user id in a hash tag (the slot of
the user's row), the captured rows are read with one ``MGET`` per slot and the scores written
with one pipeline per master (each script call has one key), and every call is retried through
a failover for up to ``target.write_retry_ms`` (:mod:`.redis_retry`). On a single Redis a
failing call fails the job, which restarts from its checkpoint, as it always did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis.cluster import RedisCluster

from featurestream.jobs.node_pipelines import NodePipelines, refresh_slots
from featurestream.jobs.redis_retry import WriteRetry
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

T = TypeVar("T")


class ScoreStore:
    """Pipelined reads of captured feature rows and writes of users' latest scores."""

    def __init__(self, target: RedisTarget) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_SCORE_LUA)
        self._prefix = target.key_prefix
        self._ttl = target.ttl_seconds
        self._cluster = target.cluster
        self._retry = WriteRetry(target.write_retry_ms, cluster=True,
                                 before_retry=lambda error: refresh_slots(self._client))

    def _call(self, call: Callable[[], T]) -> T:
        """``call()``; on a cluster retried through a failover."""
        return self._retry(call) if self._cluster else call()

    def captured(self, keys: Sequence[CapturedKey]) -> dict[CapturedKey, Row | Problem | None]:
        """The rows captured for ``(entity, id, event id)`` in one round trip; keys not
        captured (yet) are left out."""
        names = [point_in_time_key(self._prefix, entity, event_id)
                 for entity, _, event_id in keys]
        if isinstance(self._client, RedisCluster):  # keys of many slots: one MGET per slot
            values = self._call(lambda: self._client.mget_nonatomic(names))
        else:
            values = self._client.mget(names)
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
        upserts = []
        for (user_id, _), s in latest.items():
            score = Score(model=s["model"], version=s["version"], variant=s["variant"],
                          score=s["score"], event_id=s["event_id"], scored_at=s["scored_at"],
                          as_of=s["as_of"] or 0, experiment=s.get("experiment"))
            upserts.append((score_key(self._prefix, user_id, cluster=self._cluster),
                            upsert_score_args(score, self._ttl)))
        if isinstance(self._client, RedisCluster):
            self._call(lambda: self._node_pipelines(upserts).execute())
            return
        pipe = self._client.pipeline(transaction=False)
        for key, args in upserts:
            self._upsert(keys=[key], args=args, client=pipe)
        pipe.execute()

    def _node_pipelines(self, upserts: Sequence[tuple[str, list[str]]]) -> NodePipelines:
        """The score upserts in one pipeline per master (new ones per attempt)."""
        assert isinstance(self._client, RedisCluster)
        pipes = NodePipelines(self._client)
        for key, args in upserts:
            self._upsert(keys=[key], args=args, client=pipes.for_key(key))
        return pipes

    def add_counts(self, counts: Mapping[str, Mapping[str, int]], ttl_seconds: int) -> None:
        """``HINCRBY`` each key's fields and ``EXPIRE`` it, in one round trip: counts from
        several tasks add up in the same bucket. Never retried (a repeat could count twice):
        drift is telemetry, a failed flush's counts are dropped (``BackgroundFlush``). On a
        cluster through :class:`NodePipelines`: redis-py's cluster pipeline re-sends commands
        after a connection error on its own."""
        queue_on: Callable[[str], Any]
        if isinstance(self._client, RedisCluster):
            pipes = NodePipelines(self._client)
            queue_on, send = pipes.for_key, pipes.execute
        else:
            pipe = self._client.pipeline(transaction=False)
            queue_on, send = (lambda key: pipe), pipe.execute
        for key, fields in counts.items():
            for name, count in fields.items():
                queue_on(key).hincrby(key, name, count)
            queue_on(key).expire(key, ttl_seconds)
        send()

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()
