-- End a running job: scraping -> completed / failed / cancelled, once.
--
-- Its secret is deleted. A job that has already ended keeps its status (a cancel that comes after
-- the end is told so; the API answers 409 for a crawl).
--
-- ARGV: ttl_ms status error ('' = none)
-- Returns {status after the call ('' = no such job), changed (0/1), kind}.
local ttl, status, err = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local job = redis.call('HMGET', KEYS[1], 'status', 'kind')
local current, kind = job[1], job[2]
if not current then return {'', 0, ''} end
if current ~= 'scraping' then return {current, 0, kind} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', status, 'finished_at', string.format('%.0f', now))
if err ~= '' then redis.call('HSET', KEYS[1], 'error', err) end
redis.call('DEL', KEYS[8])  -- the job's secret (headers for its pages) ends with it
touch(now, ttl)
return {status, 1, kind}
