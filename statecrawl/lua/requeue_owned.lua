-- Shared by release.lua, reconcile.lua and leave.lua (prepended to each).
-- Puts every lease owned by `worker` whose id `wanted(id)` accepts back into
-- the frontier with its score; counts them as released and wakes idle
-- workers. Returns how many.
local function requeue_owned(queue, leases, stats, worker, wanted)
  local prefix = worker .. ' '
  local released = 0
  local all = redis.call('HGETALL', leases)
  for j = 1, #all, 2 do
    local id, value = all[j], all[j + 1]
    if string.sub(value, 1, #prefix) == prefix and wanted(id) then
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
end
