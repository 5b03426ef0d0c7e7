-- Fix a crawl's dupefilter when a worker opens it: the first worker's choice
-- wins, so every worker of the crawl checks the same structure.
--
-- A crawl without meta.dupefilter takes the caller's mode, or "set" when it
-- already has a `seen` SET (begun before the compact layouts existed). For
-- "bloom", the first worker's capacity, error rate, m and k are stored in
-- meta, and the bitmap is preallocated to ceil(m / 8) bytes (SETRANGE of its
-- last byte; never over existing bits), with the false-skip estimate at 0.
--
-- With an epoch, a crawl whose meta is gone or holds another epoch (Redis
-- lost it) fails with "SCLOST" and nothing is written (see commit.lua).
--
-- KEYS: meta seen bloom stats
-- ARGV: mode capacity error_rate m k epoch ('' = none)
-- Returns {mode, capacity, error_rate, m, k} as stored (false when not bloom)
local meta, seen, bloom, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if (ARGV[6] or '') ~= '' and redis.call('HGET', meta, 'epoch') ~= ARGV[6] then
  return redis.error_reply('SCLOST the crawl is gone from Redis or was created again')
end
local mode = redis.call('HGET', meta, 'dupefilter')
if not mode then
  mode = ARGV[1]
  if redis.call('EXISTS', seen) == 1 then mode = 'set' end
  redis.call('HSET', meta, 'dupefilter', mode)
  if mode == 'bloom' then
    redis.call('HSET', meta, 'bloom_capacity', ARGV[2], 'bloom_error_rate', ARGV[3],
               'bloom_m', ARGV[4], 'bloom_k', ARGV[5])
  end
end
local p = redis.call('HMGET', meta, 'bloom_capacity', 'bloom_error_rate', 'bloom_m', 'bloom_k')
if mode == 'bloom' then
  local size = math.ceil(tonumber(p[3]) / 8)
  if redis.call('STRLEN', bloom) < size then
    redis.call('SETRANGE', bloom, size - 1, '\0')
  end
  redis.call('HSETNX', stats, 'bloom_estimated_false_skips', 0)
end
return {mode, p[1], p[2], p[3], p[4]}
