-- After an outage, a worker cannot be sure which of its leases Redis still
-- has: a lease whose reply was lost, or state rolled back by a Redis restart
-- (appendfsync everysec), can leave a lease under its id that it does not
-- know about. Such a lease would never be processed nor reclaimed (the
-- worker is alive), and the crawl would never finish. This gives back every
-- lease the worker holds in Redis that it did not list as known.
--
-- KEYS: queue leases stats
-- ARGV: worker {known_request_id}*
-- Returns the number given back.
local queue, leases, stats = KEYS[1], KEYS[2], KEYS[3]
local worker = ARGV[1]
local prefix = worker .. ' '
local known = {}
for j = 2, #ARGV do known[ARGV[j]] = true end
local released = 0
local all = redis.call('HGETALL', leases)
for j = 1, #all, 2 do
  local id, value = all[j], all[j + 1]
  if not known[id] and string.sub(value, 1, #prefix) == prefix then
    redis.call('HDEL', leases, id)
    redis.call('ZADD', queue, string.sub(value, #prefix + 1), id)
    released = released + 1
  end
end
if released > 0 then
  redis.call('HINCRBY', stats, 'released', released)
  redis.call('PUBLISH', queue, 'released')
end
return released
