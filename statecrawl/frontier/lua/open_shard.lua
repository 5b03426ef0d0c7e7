-- Open one shard of a sharded crawl (statecrawl.frontier.shards): its `shard` hash
-- (sc:{<id>~<n>}:shard) holds the crawl's epoch and state, as `meta` does for shard 0,
-- so the shard's scripts check the epoch and see a cancel without touching another slot.
--
-- The crawl's start_url is copied too: a polite crawl's scripts read its home host
-- there (polite.lua).
--
-- KEYS: shard
-- ARGV: epoch create(0|1) start_url ('' = none)
-- A shard that exists with another epoch, or is missing when it may not be created
-- (the crawl's shards were all made once: meta `shards_ready`), fails with "SCLOST":
-- its master lost it. Returns 1 if it was created, 0 if it existed.
local shard, epoch, create, start_url = KEYS[1], ARGV[1], ARGV[2], ARGV[3] or ''
local known = redis.call('HGET', shard, 'epoch')
if known then
  if known ~= epoch then
    return redis.error_reply('SCLOST a shard of the crawl is gone from Redis or was created again')
  end
  if start_url ~= '' then redis.call('HSETNX', shard, 'start_url', start_url) end
  return 0
end
if create ~= '1' then
  return redis.error_reply('SCLOST a shard of the crawl is gone from Redis')
end
redis.call('HSET', shard, 'epoch', epoch, 'state', 'running')
if start_url ~= '' then redis.call('HSET', shard, 'start_url', start_url) end
return 1
