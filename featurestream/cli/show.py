"""``featurestream features``: print users' materialized feature rows read back from Redis."""

from __future__ import annotations

import argparse
import json

import redis

from featurestream.errors import UserFacingError
from featurestream.settings import Settings, masked_url
from featurestream.udfs.store.redis_layout import decode_row, user_key


def read_rows(client: redis.Redis, prefix: str, user_ids: list[str]) -> dict[str, dict]:
    """The stored rows of ``user_ids`` (missing users are left out), in one round trip."""
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hgetall(user_key(prefix, user_id))
    return {u: decode_row(h) for u, h in zip(user_ids, pipe.execute(), strict=True) if h}


def some_user_ids(client: redis.Redis, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` user ids that have a row."""
    marker = user_key(prefix, "")
    found: list[str] = []
    for key in client.scan_iter(match=marker + "*", count=1000):
        found.append(key.decode()[len(marker):])
        if len(found) >= limit:
            break
    return sorted(found)


def show_features(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: print each user's row as one JSON line."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        user_ids = args.user_ids or some_user_ids(client, settings.redis_key_prefix, args.limit)
        rows = read_rows(client, settings.redis_key_prefix, user_ids)
    except redis.RedisError as exc:
        raise UserFacingError(f"cannot read Redis at {masked_url(settings.redis_url)} ({exc}); "
                              "check FEATURESTREAM_REDIS_URL or run `featurestream up`") from None
    for user_id in user_ids:
        print(json.dumps({"user_id": user_id, **rows.get(user_id, {"missing": True})}))
    return 0
