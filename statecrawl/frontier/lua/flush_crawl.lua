-- SCHEDULER_FLUSH_ON_START: start a crawl over, unless another worker is running it.
--
-- Counts the workers other than the caller whose heartbeat is younger than
-- the timeout. None: deletes the crawl's state (KEYS[2..]: the `fifo` lists
-- of the frontier and their index, meta, the rest of the frontier, the dupefilter, stats, tokens, spider state; never its items or
-- sessions), so the next open_crawl.lua makes it anew with a fresh epoch.
-- Either way it registers the caller as alive, in the same step: of workers
-- started together with the flag, the first flushes and the others see it
-- live and join.
--
-- KEYS: workers fifo key_to_delete...
-- ARGV: worker timeout_ms
-- Returns the number of other live workers (0 = flushed).
local workers, worker, timeout = KEYS[1], ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local live = redis.call('ZRANGEBYSCORE', workers, now - timeout, '+inf')
local others = 0
for _, w in ipairs(live) do
  if w ~= worker then others = others + 1 end
end
if others == 0 then
  for _, score in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    redis.call('DEL', KEYS[2] .. ':' .. score)
  end
  for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
end
redis.call('ZADD', workers, now, worker)
return others
