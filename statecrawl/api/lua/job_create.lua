-- Create a job, or find the one already created under this id; one atomic step.
--
-- An idempotency key names the job id (statecrawl.api.jobs), so two starts
-- with one key reach this script with one id: the first creates, every other
-- one finds it and creates nothing.
--
-- ARGV: ttl_ms kind url request_json limit total secret ('' = none: see statecrawl.api.jobs)
-- Returns {created (0/1), <the job hash as field, value, ...>}.
local ttl, kind, url, request, limit, total, secret =
  tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if redis.call('EXISTS', KEYS[1]) == 1 then
  local found = redis.call('HGETALL', KEYS[1])
  table.insert(found, 1, 0)
  return found
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'kind', kind, 'status', 'scraping', 'url', url, 'limit', limit,
           'created_at', string.format('%.0f', now), 'docs', 0, 'failed', 0, 'total', total)
redis.call('SET', KEYS[2], request)
if secret ~= '' then redis.call('SET', KEYS[8], secret) end
touch(now, ttl)
local created = redis.call('HGETALL', KEYS[1])
table.insert(created, 1, 1)
return created
