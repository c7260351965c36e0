-- Upsert one model's latest score of one user, keeping the newer of the stored and the given.
--
-- KEYS[1]: the user's score hash key.
-- ARGV (built by redis_layout.upsert_score_args, which owns this order):
--   ARGV[1]  the model name (the hash field)
--   ARGV[2]  the score's JSON text (redis_layout.encode_score)
--   ARGV[3]  its as_of          ARGV[4]  its scored_at          ARGV[5]  ttl in seconds
-- The score is written (HSET, then EXPIRE) unless the stored one of that model is newer by
-- (as_of, scored_at). Returns 1 if written, 0 if not.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local old = cjson.decode(cur)
  local as_of, scored_at = tonumber(ARGV[3]), tonumber(ARGV[4])
  if as_of < old.as_of then return 0 end
  if as_of == old.as_of and scored_at < old.scored_at then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
