-- Keep a long request's slot: its lease ends lease_us from now again (re-added if it lapsed).
--
-- KEYS: inflight -- sc:api:inflight:{<who>}
-- ARGV: lease_us request_id
local lease = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000))
return 1
