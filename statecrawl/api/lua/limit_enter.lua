-- Admit one API request of one client: its rate (GCRA) and its requests in flight, in one step.
--
-- KEYS: rate inflight -- sc:api:rate:{<who>} sc:api:inflight:{<who>}, one hash tag.
-- ARGV: interval_us (one request per interval; 0 = no rate limit) burst
--       limit (requests in flight at once; 0 = none) lease_us request_id
-- Returns {verdict, n, retry_us}:
--   {1, rate requests left in the burst, 0}   admitted; with a limit, its id is in inflight
--   {2, 0, retry_us}                           the rate is exceeded: one more fits in retry_us
--   {3, requests in flight, 0}                 the concurrency limit is reached
-- Nothing is written unless the request is admitted, so a refused request spends
-- neither a rate token nor a slot. Times are microseconds of Redis' clock (integers:
-- exact in a Lua number until the year 2255).
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, lease, rid = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- GCRA: rate holds the theoretical arrival time (tat) of the next request; a request
-- is admitted while tat stays within burst intervals of now
local tat, left = now, 0
if interval > 0 then
  tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + interval
  local allow_at = tat - interval * burst
  if allow_at > now then return {2, 0, allow_at - now} end
  left = math.floor((now + interval * burst - tat) / interval)
end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)  -- leases of processes that died
  local n = redis.call('ZCARD', KEYS[2])
  if n >= limit then return {3, n, 0} end
  redis.call('ZADD', KEYS[2], string.format('%.0f', now + lease), rid)
  redis.call('PEXPIRE', KEYS[2], math.ceil(lease / 1000))
end
if interval > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
end
return {1, left, 0}
