-- Upsert many users' feature rows, keeping the newer of the stored and the given row.
--
-- KEYS: the users' hash keys, one per row.
-- ARGV (built by redis_layout.upsert_rows_args, which owns this order):
--   ARGV[1]  ttl in seconds        ARGV[2]  updated_at (epoch ms)
--   then, for each key in order, starting at ARGV[3]:
--     n                            how many texts follow for this row
--     'as_of', <as_of>             always the first pair
--     'version', <version>         always the second pair
--     n - 4 more texts             the row's other fields as name, value pairs
-- A row is written unless the stored row is newer by (as_of, version): the hash is replaced by
-- the row (DEL, then HSET of all its pairs plus updated_at: a row is the whole truth, so a
-- field the row no longer has, e.g. warming_up, goes), then EXPIRE. Returns how many rows
-- were written.
local ttl, updated_at = tonumber(ARGV[1]), ARGV[2]
local written, at = 0, 3
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  local as_of, version = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 4])
  local cur = redis.call('HMGET', key, 'as_of', 'version')
  local cur_as_of = tonumber(cur[1])
  if not cur_as_of or as_of > cur_as_of
     or (as_of == cur_as_of and version >= (tonumber(cur[2]) or 0)) then
    redis.call('DEL', key)
    redis.call('HSET', key, 'updated_at', updated_at, unpack(ARGV, at + 1, at + n))
    redis.call('EXPIRE', key, ttl)
    written = written + 1
  end
  at = at + n + 1
end
return written
