-- SCHEDULER_PERSIST=False: forget a finished crawl's frontier and dupefilter.
--
-- Only when the crawl is marked finished, its queue and in-flight set are
-- empty, and no worker but the caller is live (heartbeat younger than the
-- timeout): the last worker of a finished crawl does it. Deletes the
-- sequence, request bodies, tokens and dupefilter (KEYS[7..]), drops the
-- dupefilter's fields from meta and its counters from stats (the next first
-- worker chooses it anew), and marks meta with `forgotten_at`. Meta keeps
-- its epoch, so a worker joining meanwhile goes on; items and stats stay.
--
-- KEYS: meta queue leases workers stats fifo key_to_delete...
-- ARGV: worker timeout_ms
-- Returns 'forgotten', 'running' (not finished) or 'others' (workers live).
local meta, queue, leases, workers, stats, fifo = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local worker, timeout = ARGV[1], tonumber(ARGV[2])
if redis.call('HGET', meta, 'state') ~= 'finished' or redis.call('ZCARD', queue) > 0
    or redis.call('ZCARD', fifo) > 0 or redis.call('HLEN', leases) > 0 then
  return 'running'
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for _, w in ipairs(redis.call('ZRANGEBYSCORE', workers, now - timeout, '+inf')) do
  if w ~= worker then return 'others' end
end
for i = 7, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HDEL', meta, 'dupefilter', 'bloom_capacity', 'bloom_error_rate', 'bloom_m', 'bloom_k')
redis.call('HDEL', stats, 'seen', 'bloom_estimated_false_skips')
redis.call('HSET', meta, 'forgotten_at', t[1])
return 'forgotten'
