-- Shared head of every job script (prepended to each, loaded with it).
--
-- KEYS: job request docs errors robots index hooks secret -- one job's keys, one hash tag.
-- Every write ends with touch(): the record's expires_at becomes now + ttl
-- (Redis clock) and every key of the job gets that same PEXPIREAT, in the
-- same atomic step, so no key of a job outlives or predeceases another.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function touch(now, ttl_ms)
  local expires = string.format('%.0f', now + ttl_ms)
  redis.call('HSET', KEYS[1], 'updated_at', string.format('%.0f', now), 'expires_at', expires)
  for i = 1, #KEYS do
    redis.call('PEXPIREAT', KEYS[i], expires)
  end
end
