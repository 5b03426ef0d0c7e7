-- What `statecrawl status` reads of a crawl (or of one shard), in one atomic step, so
-- its figures agree with each other (a lease moving a request from the frontier to
-- the in-flight set between two reads would show it nowhere, or twice).
--
-- KEYS: meta leases items failed seen workers stats queue fifo hostq
-- ARGV: live_window_ms (workers heard from within it count as live)
-- Returns {meta (flat), in_flight, items, failed, seen, live_workers, stats (flat),
-- queued}. (take_leases.lua is prepended: frontier_size.)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return {
  redis.call('HGETALL', KEYS[1]),
  redis.call('HLEN', KEYS[2]),
  redis.call('HLEN', KEYS[3]),
  redis.call('SCARD', KEYS[4]),
  redis.call('SCARD', KEYS[5]),
  redis.call('ZCOUNT', KEYS[6], now - tonumber(ARGV[1]), '+inf'),
  redis.call('HGETALL', KEYS[7]),
  frontier_size(KEYS[8], KEYS[9]) + redis.call('ZCARD', KEYS[10]),
}
