-- One shard's part of a sharded crawl's finished-check (statecrawl.frontier.shards):
-- whether it holds no work (frontier, per-host queues and leases all empty), and how
-- many requests it ever enqueued (a version: any new work changes it).
--
-- KEYS: queue fifo leases hostq stats
-- Returns {idle(0|1), enqueued}
local idle = redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0
  and redis.call('HLEN', KEYS[3]) == 0 and redis.call('ZCARD', KEYS[4]) == 0
return {idle and 1 or 0, tonumber(redis.call('HGET', KEYS[5], 'enqueued') or '0')}
