-- Shared by release.lua, reconcile.lua and leave.lua (prepended to each, after
-- host_done.lua).
-- Puts every lease owned by `worker` whose id `wanted(id)` accepts back into
-- the frontier with its score; counts them under `reason` ('released' or
-- 'reclaimed') in the stats and publishes `reason` on the frontier's channel,
-- which makes idle workers lease at once. Returns how many.
local function requeue_owned(queue, leases, stats, ready, hosts, worker, wanted, reason)
  local prefix = worker .. ' '
  local released = 0
  local all = redis.call('HGETALL', leases)
  for j = 1, #all, 2 do
    local id, value = all[j], all[j + 1]
    if string.sub(value, 1, #prefix) == prefix and wanted(id) then
      redis.call('HDEL', leases, id)
      redis.call('ZADD', queue, lease_score(string.sub(value, #prefix + 1)), id)
      host_done(ready, hosts, value)
      released = released + 1
    end
  end
  if released > 0 then
    redis.call('HINCRBY', stats, reason, released)
    redis.call('PUBLISH', queue, reason)
  end
  return released
end
