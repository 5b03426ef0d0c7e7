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

-- The frontier has two parts (statecrawl.frontier.keys): `queue`, a ZSET of
-- request ids whose data is in `reqs` (requests a worker gave back, and those
-- stored by versions before the lists), and the `fifo` lists, one per score,
-- whose entries are the packed requests themselves (`fifo` is a ZSET of the
-- scores that have a list; the list of score s is `fifo:s`).
local function fifo_key(fifo, score)
  return fifo .. ':' .. score
end

-- Appends a packed request to the list of its score.
local function fifo_push(fifo, score, body, known)
  local s = string.format('%d', tonumber(score) or 0)
  redis.call('RPUSH', fifo_key(fifo, s), body)
  if not known[s] then
    redis.call('ZADD', fifo, s, s)
    known[s] = true
  end
end

-- Requests queued in both parts.
local function frontier_size(queue, fifo)
  local n = redis.call('ZCARD', queue)
  for _, s in ipairs(redis.call('ZRANGE', fifo, 0, -1)) do
    n = n + redis.call('LLEN', fifo_key(fifo, s))
  end
  return n
end

-- Pops up to `n` requests, best score first (at equal score, `queue` before
-- the lists: its requests are older), and calls emit(id, score, body) for
-- each. A request from a list gets its id here, and its data goes to `reqs`
-- (where a leased request lives). Returns how many.
local function frontier_pop(seq, queue, fifo, reqs, n, emit)
  local taken = 0
  for _ = 1, 64 do
    if taken >= n then break end
    local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
    local best = redis.call('ZRANGE', fifo, 0, 0, 'WITHSCORES')
    if #head == 0 and #best == 0 then break end
    if #head > 0 and (#best == 0 or tonumber(head[2]) <= tonumber(best[2])) then
      local upto = #best == 0 and '+inf' or best[2]
      local popped = redis.call('ZRANGEBYSCORE', queue, '-inf', upto, 'WITHSCORES',
        'LIMIT', 0, n - taken)
      for j = 1, #popped, 2 do
        local id = popped[j]
        redis.call('ZREM', queue, id)
        local body = redis.call('HGET', reqs, id)
        if body then
          emit(id, popped[j + 1], body)
          taken = taken + 1
        end
      end
    else
      local key = fifo_key(fifo, best[1])
      local got = redis.call('LPOP', key, n - taken) or {}
      if redis.call('EXISTS', key) == 0 then redis.call('ZREM', fifo, best[1]) end
      for _, body in ipairs(got) do
        local id = string.format('%012x', redis.call('INCR', seq))
        redis.call('HSET', reqs, id, body)
        emit(id, best[1], body)
        taken = taken + 1
      end
    end
  end
  return taken
end

-- Leases up to `n` requests to `worker`: records each as leased (with its
-- score, so a reclaim restores its priority) and appends id, request pairs to
-- `out`. Counts them in the stats and, when the crawl was marked finished,
-- marks it running again. Returns how many.
local function take_leases(meta, seq, queue, fifo, reqs, leases, stats, worker, n, out)
  local taken = frontier_pop(seq, queue, fifo, reqs, n, function(id, score, body)
    redis.call('HSET', leases, id, worker .. ' ' .. score)
    out[#out + 1] = id
    out[#out + 1] = body
  end)
  return leased(meta, stats, taken)
end
