"""The Redis layout of materialized features: the one place that defines it.

Keys
    ``{prefix}user:{user_id}`` (default prefix ``fs:``): one hash per user.

Fields
    one per feature (see :mod:`udfs.features`), plus
    ``as_of``       event time (epoch ms) the row is valid at;
    ``version``     per-user row counter; ``(as_of, version)`` orders a user's rows;
    ``updated_at``  wall-clock time (epoch ms) of the write.

Values
    integers as decimal text, floats as Python ``repr`` text (round-trips exactly),
    null as the empty string.

Writes
    go through :data:`UPSERT_ROW_LUA`, which compares ``(as_of, version)`` inside Redis and
    ignores a row older than the stored one, so a replay after a restart never leaves an older
    row over a newer one. Every write refreshes the key's TTL.
"""

from __future__ import annotations

from collections.abc import Mapping

FeatureValue = int | float | None

ROW_META_FIELDS = ("as_of", "version", "updated_at")

UPSERT_ROW_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'as_of', 'version')
if cur[1] then
  local as_of, new_as_of = tonumber(cur[1]), tonumber(ARGV[1])
  if new_as_of < as_of then return 0 end
  if new_as_of == as_of and tonumber(ARGV[2]) < (tonumber(cur[2]) or 0) then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


def user_key(prefix: str, user_id: str) -> str:
    """The Redis key of a user's feature hash."""
    return f"{prefix}user:{user_id}"


def encode_value(value: FeatureValue) -> str:
    """Encode one value for a hash field (null -> empty string)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def decode_value(text: str | bytes) -> FeatureValue:
    """Inverse of :func:`encode_value`."""
    if isinstance(text, bytes):
        text = text.decode()
    if text == "":
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    return float(text)


def upsert_args(row: Mapping[str, FeatureValue], updated_at_ms: int,
                ttl_seconds: int) -> list[str]:
    """ARGV for :data:`UPSERT_ROW_LUA`: as_of, version, ttl, then field/value pairs."""
    args = [str(row["as_of"]), str(row["version"]), str(ttl_seconds),
            "updated_at", str(updated_at_ms)]
    for name, value in row.items():
        args.append(name)
        args.append(encode_value(value))
    return args


def decode_row(fields: Mapping[bytes | str, bytes | str]) -> dict[str, FeatureValue]:
    """Decode a hash read back from Redis into ``{field: value}``."""
    return {
        (k.decode() if isinstance(k, bytes) else k): decode_value(v) for k, v in fields.items()
    }
