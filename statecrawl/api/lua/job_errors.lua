-- Record pages that failed and URLs robots.txt kept out, while the job runs.
--
-- Each failure counts in `failed`; the first `cap` are kept in errors (a
-- list, oldest first) and the first `cap` robots-blocked URLs in robots.
--
-- ARGV: ttl_ms cap n_errors error1_json ... errorN_json url1 url2 ...
-- Returns {status ('' = no such job), failed}.
local ttl, cap, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local job = redis.call('HMGET', KEYS[1], 'status', 'failed', 'docs', 'total')
if not job[1] then return {'', 0} end
if job[1] ~= 'scraping' then return {job[1], tonumber(job[2])} end
for i = 1, n do
  if redis.call('LLEN', KEYS[4]) < cap then redis.call('RPUSH', KEYS[4], ARGV[3 + i]) end
end
for i = 4 + n, #ARGV do
  if redis.call('SCARD', KEYS[5]) < cap then redis.call('SADD', KEYS[5], ARGV[i]) end
end
local failed = tonumber(job[2]) + n
local total = math.max(tonumber(job[4]), tonumber(job[3]) + failed)
redis.call('HSET', KEYS[1], 'failed', failed, 'total', total)
touch(now_ms(), ttl)
return {job[1], failed}
