-- Mark a sharded crawl finished once its shards were all seen idle twice with no
-- request enqueued in between (statecrawl.frontier.shards). A cancelled crawl stays so.
--
-- KEYS: meta
-- ARGV: epoch
-- Returns the state after.
local meta = KEYS[1]
if redis.call('HGET', meta, 'epoch') ~= ARGV[1] then
  return redis.error_reply('SCLOST the crawl is gone from Redis or was created again')
end
local state = redis.call('HGET', meta, 'state')
if state == 'running' then
  redis.call('HSET', meta, 'state', 'finished', 'finished_at', redis.call('TIME')[1])
  return 'finished'
end
return state
