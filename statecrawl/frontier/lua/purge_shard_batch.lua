-- One batch of a purge in a shard (> 0) of a sharded crawl (statecrawl.frontier.lifecycle,
-- statecrawl.frontier.shards): unlink keys of that shard, unless its `shard` hash holds
-- another epoch than the purged crawl's (a crawl of the same id made anew meanwhile:
-- the keys are the new crawl's, and nothing is deleted).
--
-- KEYS: shard key...   (all of one shard: one hash tag)
-- ARGV: epoch (the purged crawl's; '': its meta was gone already, the shard goes)
-- Returns the number of keys unlinked, or -1 (the shard belongs to a new crawl).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch and ARGV[1] ~= '' and epoch ~= ARGV[1] then return -1 end
local n = 0
for i = 2, #KEYS do n = n + redis.call('UNLINK', KEYS[i]) end
return n
