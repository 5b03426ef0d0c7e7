-- A worker leaves the crawl: every lease it still holds goes back to the
-- frontier (with its score), and it is forgotten. Nothing it held can be
-- orphaned, even a lease whose reply it never received.
--
-- KEYS: queue leases workers stats tokens
-- ARGV: worker
-- Returns the number of leases given back.
local queue, leases, workers, stats, tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker = ARGV[1]
local prefix = worker .. ' '
local released = 0
local all = redis.call('HGETALL', leases)
for j = 1, #all, 2 do
  local value = all[j + 1]
  if string.sub(value, 1, #prefix) == prefix then
    redis.call('HDEL', leases, all[j])
    redis.call('ZADD', queue, string.sub(value, #prefix + 1), all[j])
    released = released + 1
  end
end
redis.call('ZREM', workers, worker)
redis.call('HDEL', tokens, worker, worker .. '|lease')
if released > 0 then
  redis.call('HINCRBY', stats, 'released', released)
  redis.call('PUBLISH', queue, 'released')
end
return released
