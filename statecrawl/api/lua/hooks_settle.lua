-- Settle a group of deliveries a sender has tried: drop the sent ones, put back the retried.
--
-- KEYS: job hooks -- one job's keys, one hash tag.
-- ARGV: n id1 .. idn retry1 .. retryn (the entry to put back, '' = done or dropped)
-- Only the lease holder pops, so the group is still at the head; each entry is
-- matched by its id all the same, so a sender whose lease ran out (another
-- one took the job over and settled first) pops nothing twice. Retried
-- entries go back to the head, in order: a job's deliveries stay in order.
-- Returns the deliveries left.
local n = tonumber(ARGV[1])
local popped = 0
for i = 1, n do
  local id = ARGV[1 + i] .. ' '
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head or string.sub(head, 1, #id) ~= id then break end
  redis.call('LPOP', KEYS[2])
  popped = i
end
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if not expires then
  redis.call('DEL', KEYS[2])
  return 0
end
for i = popped, 1, -1 do
  if ARGV[1 + n + i] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[1 + n + i]) end
end
local left = redis.call('LLEN', KEYS[2])
if left > 0 then redis.call('PEXPIREAT', KEYS[2], expires) end
return left
