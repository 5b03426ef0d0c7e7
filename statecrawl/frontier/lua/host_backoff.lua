-- A host answered 429 or 503: back it off for every worker at once.
-- With a Retry-After (ARGV retry_ms >= 0) the host waits that long (at most
-- max_ms); without one, the first such answer in a row only counts, and the
-- n-th (n >= 2) waits base_ms * 2^(n-2), at most max_ms. The host's next
-- allowed time moves to the end of the wait, and the end is published on the
-- frontier's channel ("backoff <host> <until>") so that workers holding
-- slots of that host take new ones. (polite.lua is prepended.)
--
-- KEYS: hosts ready queue
-- ARGV: host retry_ms base_ms max_ms
-- Returns {until (0 = no wait), now, answers in a row}.
local hosts, ready, queue, host = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local retry, base, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local level = redis.call('HINCRBY', hosts, host .. '|b', 1)
local wait
if retry >= 0 then
  wait = math.min(retry, max)
elseif level >= 2 then
  wait = math.min(max, base * 2 ^ (level - 2))
else
  return {0, string.format('%d', now), level}
end
local untl = now + math.floor(wait)
local c = host_conf(hosts, host, {})
if untl > c.next then defer_host(hosts, ready, host, untl) end
redis.call('PUBLISH', queue, 'backoff ' .. host .. ' ' .. string.format('%d', untl))
return {string.format('%d', untl), string.format('%d', now), level}
