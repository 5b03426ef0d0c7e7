-- What workers saw of their hosts since their last report, in one call a
-- second at most: a host that answered other than 429/503 is no longer
-- backed off, and with AutoThrottle on (hosts "*|at" > 0) the host's delay
-- follows Scrapy's AutoThrottle rule, fed by the latencies of every worker:
--   target = latency / target concurrency
--   delay  = min(max(target, (delay + target) / 2), largest delay)
-- where only 200 answers may lower it.
--
-- KEYS: hosts
-- ARGV: {host answers_not_429_503 answers_200 mean_latency_ms}*
local hosts = KEYS[1]
local conf = redis.call('HMGET', hosts, '*|at', '*|as', '*|am')
local target, start, largest = tonumber(conf[1]) or 0, tonumber(conf[2]) or 0,
  tonumber(conf[3]) or 60000
for i = 1, #ARGV, 4 do
  local host, ok, n200, latency = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]),
    tonumber(ARGV[i + 3])
  if ok > 0 then redis.call('HDEL', hosts, host .. '|b') end
  if target > 0 and ok > 0 then
    local delay = tonumber(redis.call('HGET', hosts, host .. '|a')) or start
    local want = latency / target
    local new = math.min(math.max(want, (delay + want) / 2), largest)
    if n200 > 0 or new > delay then
      redis.call('HSET', hosts, host .. '|a', string.format('%d', math.floor(new)))
    end
  end
end
return 1
