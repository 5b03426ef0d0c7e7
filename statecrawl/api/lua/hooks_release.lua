-- Release a job claimed by hooks_claim.lua: due again after a delay, or out of the index.
--
-- KEYS: sc:api:hooks
-- ARGV: id lease delay_ms (-1: nothing left, remove the id)
-- Does nothing unless the job still carries this claim's lease score (a
-- sender whose lease ran out must not move another sender's claim).
-- Returns 1 if released, 0 if the claim was no longer this sender's.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
local delay = tonumber(ARGV[3])
if delay < 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + delay), ARGV[1])
end
return 1
