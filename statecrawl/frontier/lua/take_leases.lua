-- Shared by lease.lua and commit.lua (prepended to each).

-- Work appeared in a crawl marked finished (an enqueue, a lease): it runs again,
-- and its items (kept in Redis) lose the expiry they got when it finished.
local function mark_running(meta)
  if redis.call('HGET', meta, 'state') == 'finished' then
    redis.call('HSET', meta, 'state', 'running')
    redis.call('HDEL', meta, 'finished_at', 'forgotten_at')
    redis.call('PERSIST', string.sub(meta, 1, -5) .. 'items')  -- "sc:{id}:meta" -> "sc:{id}:items"
  end
end

-- Counts `taken` leases in the stats and, when the crawl was marked finished,
-- marks it running again. Returns `taken`. (Also used by polite.lua.)
local function leased(meta, stats, taken)
  if taken > 0 then
    redis.call('HINCRBY', stats, 'leased', taken)
    mark_running(meta)
  end
  return taken
end

-- Pops up to `n` request ids from the frontier, records each as leased by
-- `worker` (with its score, so a reclaim restores its priority) and appends
-- id, request JSON pairs to `out`. Counts them in the stats and, when the
-- crawl was marked finished, marks it running again. Returns how many.
local function take_leases(meta, queue, reqs, leases, stats, worker, n, out)
  local taken = 0
  local popped = redis.call('ZPOPMIN', queue, n)
  for j = 1, #popped, 2 do
    local id, score = popped[j], popped[j + 1]
    local body = redis.call('HGET', reqs, id)
    if body then
      redis.call('HSET', leases, id, worker .. ' ' .. score)
      out[#out + 1] = id
      out[#out + 1] = body
      taken = taken + 1
    end
  end
  return leased(meta, stats, taken)
end
