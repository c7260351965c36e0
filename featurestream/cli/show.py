"""``featurestream features``: print entities' materialized feature rows read back from Redis."""

from __future__ import annotations

import argparse
import json

import redis

from featurestream.cli.redis_access import redis_client
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.definitions.model import Entity
from featurestream.udfs.store.redis_layout import decode_row, entity_key


def read_rows(client: redis.Redis, prefix: str, entity: str, ids: list[str]) -> dict[str, dict]:
    """The stored rows of the entity's ``ids`` (missing ones are left out), in one round
    trip."""
    pipe = client.pipeline(transaction=False)
    for entity_id in ids:
        pipe.hgetall(entity_key(prefix, entity, entity_id))
    return {i: decode_row(h) for i, h in zip(ids, pipe.execute(), strict=True) if h}


def some_ids(client: redis.Redis, prefix: str, entity: str, limit: int) -> list[str]:
    """Up to ``limit`` ids of the entity that have a row."""
    marker = entity_key(prefix, entity, "")
    found: list[str] = []
    for key in client.scan_iter(match=marker + "*", count=1000):
        found.append(key.decode()[len(marker):])
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
        ids = args.ids or some_ids(client, prefix, entity.name, args.limit)
        rows = read_rows(client, prefix, entity.name, ids)
    for entity_id in ids:
        print(json.dumps({id_field: entity_id, **rows.get(entity_id, {"missing": True})}))
    return 0
