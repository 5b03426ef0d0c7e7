-- Give leased requests back to the frontier, with their original score, when
-- the worker holding them will not process them (it is closing). Only the
-- owner's leases are released.
--
-- KEYS: queue leases stats
-- ARGV: worker {request_id}*
-- Returns the number released.
local queue, leases, stats = KEYS[1], KEYS[2], KEYS[3]
local worker = ARGV[1]
local released = 0
for j = 2, #ARGV do
  local id = ARGV[j]
  local lease = redis.call('HGET', leases, id)
  if lease and string.sub(lease, 1, #worker + 1) == worker .. ' ' then
    redis.call('HDEL', leases, id)
    redis.call('ZADD', queue, string.sub(lease, #worker + 2), id)
    released = released + 1
  end
end
if released > 0 then
  redis.call('HINCRBY', stats, 'released', released)
  redis.call('PUBLISH', queue, 'released')
end
return released
