-- The requests queued in a crawl's frontier: both its parts (take_leases.lua,
-- prepended) and a polite crawl's host queues.
--
-- KEYS: queue fifo hostq
-- Returns the count.
return frontier_size(KEYS[1], KEYS[2]) + redis.call('ZCARD', KEYS[3])
