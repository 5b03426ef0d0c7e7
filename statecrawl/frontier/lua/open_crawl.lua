-- Create a crawl's metadata if it is new, or join it; one atomic step.
--
-- With an expected epoch (a worker told which crawl to join, e.g. by the
-- CLI that created it), a crawl that is missing or has another epoch is not
-- created again: the script fails with "SCLOST" and writes nothing. Checking
-- and creating in one script matters: a check, then a reconnect to a Redis
-- that restarted empty, then a create, would make the lost crawl anew.
--
-- A crawl created with shards > 1 records `shards` (statecrawl.frontier.shards); the
-- count of an existing crawl never changes. A sharded crawl's page limit may change,
-- but not appear or go (with one, every commit asks shard 0 for admissions:
-- quota.lua): that fails with "SCSHARDS" and writes nothing.
--
-- A new sharded crawl also records how its requests go to shards: `shard_by` = host
-- (a polite crawl), else by fingerprint (no field).
--
-- KEYS: meta
-- ARGV: expect_epoch ('' = none) new_epoch created_at spider start_url ('' = none)
--       args_json ('' = none) limit ('' = leave as is) shards ('' = 1)
--       shard_by ('host' or '')
-- Returns {state, epoch, shards, shards_ready, shard_by, limit}.
local meta = KEYS[1]
local expect, new_epoch, created_at, spider, start_url, args, limit =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if expect ~= '' and redis.call('HGET', meta, 'epoch') ~= expect then
  return redis.error_reply('SCLOST the crawl is gone from Redis or was created again')
end
local is_new = redis.call('HEXISTS', meta, 'epoch') == 0
local shards = tonumber(redis.call('HGET', meta, 'shards') or (is_new and ARGV[8]) or '1') or 1
local had = tonumber(redis.call('HGET', meta, 'limit') or '0') or 0
if shards > 1 and not is_new and limit ~= '' and ((tonumber(limit) or 0) > 0) ~= (had > 0) then
  return redis.error_reply('SCSHARDS a crawl spread over shards keeps the page limit it was '
    .. 'created ' .. (had > 0 and 'with (a limit is needed)' or 'without (none can be set)'))
end
if is_new and shards > 1 then
  redis.call('HSET', meta, 'shards', shards)
  if ARGV[9] == 'host' then redis.call('HSET', meta, 'shard_by', 'host') end
end
redis.call('HSETNX', meta, 'epoch', new_epoch)
redis.call('HSETNX', meta, 'state', 'running')
redis.call('HSETNX', meta, 'created_at', created_at)
redis.call('HSETNX', meta, 'spider', spider)
if start_url ~= '' then redis.call('HSETNX', meta, 'start_url', start_url) end
if args ~= '' then redis.call('HSETNX', meta, 'args', args) end
if limit ~= '' then redis.call('HSET', meta, 'limit', limit) end
return redis.call('HMGET', meta, 'state', 'epoch', 'shards', 'shards_ready', 'shard_by', 'limit')
