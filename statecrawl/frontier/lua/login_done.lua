-- Record the outcome of a login made under the login lock, and release it.
-- On success the login generation goes up by one: workers that saw
-- generation N fail wait for N+1 and mount it instead of logging in again.
-- The session's cookies were written before this call, so a worker that
-- sees N+1 finds them in Redis.
--
-- KEYS: lock login stats
-- ARGV: value worker ok(1|0) message
-- Returns the new generation, 0 after a recorded failure, -1 if the lock was
-- no longer ours (it expired; another worker may be logging in).
local lock, login, stats = KEYS[1], KEYS[2], KEYS[3]
if redis.call('GET', lock) ~= ARGV[1] then
  return -1
end
redis.call('DEL', lock)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  local gen = redis.call('HINCRBY', login, 'generation', 1)
  redis.call('HSET', login, 'logged_in_at', now, 'worker', ARGV[2])
  redis.call('HDEL', login, 'failed_at', 'error')
  redis.call('HINCRBY', stats, 'logins', 1)
  return gen
end
redis.call('HSET', login, 'failed_at', now, 'error', ARGV[4])
redis.call('HINCRBY', stats, 'login_failures', 1)
return 0
