"""``featurestream features``: print entities' materialized feature rows read back from Redis."""

from __future__ import annotations

import argparse
import json

import redis
from redis.cluster import RedisCluster

from featurestream.cli.redis_access import redis_client
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.definitions.model import Entity
from featurestream.udfs.store.redis_layout import decode_row, entity_key, hash_untagged


def read_rows(client: redis.Redis | RedisCluster, prefix: str, entity: str, ids: list[str],
              cluster: bool = False) -> dict[str, dict]:
    """The stored rows of the entity's ``ids`` (missing ones are left out), in one round
    trip (a cluster: one per node)."""
    pipe = client.pipeline(transaction=False)
    for entity_id in ids:
        pipe.hgetall(entity_key(prefix, entity, entity_id, cluster=cluster))
    return {i: decode_row(h) for i, h in zip(ids, pipe.execute(), strict=True) if h}


def some_ids(client: redis.Redis | RedisCluster, prefix: str, entity: str, limit: int,
             cluster: bool = False) -> list[str]:
    """Up to ``limit`` ids of the entity that have a row (a cluster: scanned on every
    master)."""
    marker = f"{prefix}{entity}:"
    found: list[str] = []
    for key in client.scan_iter(match=marker + "*", count=1000):
        found.append(hash_untagged(key.decode()[len(marker):], cluster))
        if len(found) >= limit:
            break
    return sorted(found)


def declared_entity(settings: Settings, name: str) -> Entity:
    """The entity ``name`` of the definitions (one line naming the declared ones if none)."""
    definitions = settings.load_definitions()
    try:
        return definitions.entity(name)
    except KeyError:
        declared = ", ".join(e.name for e in definitions.entities)
        raise UserFacingError(f"no entity {name!r} in the definitions; they declare: {declared} "
                              "(choose one with --entity)") from None


def show_features(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: print each entity instance's row as one JSON line, its id under the
    entity's key field names (``user_id``; several keys joined with ``|``, as the id is)."""
    entity = declared_entity(settings, args.entity)
    id_field = "|".join(entity.keys)
    prefix = settings.redis_key_prefix
    with redis_client(settings) as client:
        cluster = settings.redis_cluster
        ids = args.ids or some_ids(client, prefix, entity.name, args.limit, cluster)
        rows = read_rows(client, prefix, entity.name, ids, cluster)
    for entity_id in ids:
        print(json.dumps({id_field: entity_id, **rows.get(entity_id, {"missing": True})}))
    return 0
