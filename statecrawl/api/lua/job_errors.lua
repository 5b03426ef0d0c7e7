-- Record pages that failed and URLs robots.txt kept out, while the job runs.
--
-- Each failure counts in `failed`, once per key (its page's URL, or "#<n>"
-- for a batch's n-th URL; "" = count it whatever): a page that fails again
-- after a worker was killed is not counted twice, and neither is a page that
-- already has a document. The first `cap` are kept in errors (a list, oldest
-- first) and the first `cap` robots-blocked URLs in robots. A batch completes
-- when docs + failed reach its total.
--
-- KEYS: job request docs errors robots index hooks secret
-- ARGV: ttl_ms cap n_errors key1 error1_json ... keyN errorN_json url1 url2 ...
-- Returns {status ('' = no such job), failed, ended (1: this call completed the batch)}.
local ttl, cap, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local job = redis.call('HMGET', KEYS[1], 'status', 'failed', 'docs', 'total', 'kind')
if not job[1] then return {'', 0, 0} end
if job[1] ~= 'scraping' then return {job[1], tonumber(job[2]), 0} end
local failed = tonumber(job[2])
for i = 1, n do
  local key, entry = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if key == '' or redis.call('HSETNX', KEYS[6], key, 'failed') == 1 then
    failed = failed + 1
    if redis.call('LLEN', KEYS[4]) < cap then redis.call('RPUSH', KEYS[4], entry) end
  end
end
for i = 4 + 2 * n, #ARGV do
  if redis.call('SCARD', KEYS[5]) < cap then redis.call('SADD', KEYS[5], ARGV[i]) end
end
local docs = tonumber(job[3])
local total = math.max(tonumber(job[4]), docs + failed)
redis.call('HSET', KEYS[1], 'failed', failed, 'total', total)
local status, ended = job[1], 0
local now = now_ms()
if job[5] == 'batch' and docs + failed >= total then
  status, ended = 'completed', 1
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', string.format('%.0f', now))
  redis.call('DEL', KEYS[8])
end
touch(now, ttl)
return {status, failed, ended}
