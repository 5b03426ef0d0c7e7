-- A worker's heartbeat, and reclaim of dead workers' leases, in one call.
--
-- Records the caller as alive (Redis clock), then finds workers whose last
-- heartbeat is older than the timeout, puts every lease they hold back into
-- the frontier with its original score, and forgets them. Atomic, so each
-- lease is reclaimed exactly once however many workers run this at once.
-- Publishes on the queue channel when it reclaimed anything, so idle
-- workers lease at once.
--
-- KEYS: queue leases workers stats tokens ready hosts
-- ARGV: worker timeout_ms [info]   info: the worker's JSON self-description, kept in
--                                  tokens "<worker>|info" (state.py worker_info)
-- Returns {caller_was_registered(0|1), reclaimed, dead_worker...}
-- (host_done.lua is prepended.)
local queue, leases, workers, stats, tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ready, hosts = KEYS[6], KEYS[7]
local worker, timeout = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)

local was_registered = redis.call('ZSCORE', workers, worker) and 1 or 0
redis.call('ZADD', workers, now, worker)
if ARGV[3] then redis.call('HSET', tokens, worker .. '|info', ARGV[3]) end

local dead = redis.call('ZRANGEBYSCORE', workers, '-inf', '(' .. (now - timeout))
if #dead == 0 then return {was_registered, 0} end

local is_dead = {}
for _, w in ipairs(dead) do is_dead[w] = true end
local reclaimed = 0
local all = redis.call('HGETALL', leases)
for j = 1, #all, 2 do
  local value = all[j + 1]
  local sp = string.find(value, ' ', 1, true)
  if sp and is_dead[string.sub(value, 1, sp - 1)] then
    redis.call('HDEL', leases, all[j])
    redis.call('ZADD', queue, lease_score(string.sub(value, sp + 1)), all[j])
    host_done(ready, hosts, value)
    reclaimed = reclaimed + 1
  end
end
redis.call('ZREM', workers, unpack(dead))
for _, w in ipairs(dead) do
  redis.call('HDEL', tokens, w, w .. '|lease', w .. '|info', w .. '|q+', w .. '|q-')
end
if reclaimed > 0 then
  redis.call('HINCRBY', stats, 'reclaimed', reclaimed)
  redis.call('PUBLISH', queue, 'reclaimed')
end
local out = {was_registered, reclaimed}
for _, w in ipairs(dead) do out[#out + 1] = w end
return out
